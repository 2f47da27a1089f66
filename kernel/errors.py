"""Domain errors. The HTTP layer maps each to one status code in one exception handler."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with the input: where (a dotted field path), why, and a machine code."""

    field: str
    reason: str
    code: str = "invalid"
    point: tuple[float, float] | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"field": self.field, "reason": self.reason, "code": self.code}
        if self.point is not None:
            out["point"] = list(self.point)
        return out


class DomainError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str, problems: list[Problem] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.problems = problems or []


class ValidationFailed(DomainError):
    status = 422
    code = "validation_failed"


class NotFound(DomainError):
    status = 404
    code = "not_found"


class Conflict(DomainError):
    status = 409
    code = "conflict"


class Unauthorized(DomainError):
    status = 401
    code = "unauthorized"


class Forbidden(DomainError):
    status = 403
    code = "forbidden"


class TooLarge(DomainError):
    status = 413
    code = "too_large"


class RateLimited(DomainError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Unavailable(DomainError):
    status = 503
    code = "unavailable"


class ConnectionLost(Unavailable):
    """The database connection this request held is gone (PostgreSQL restarted): the HTTP layer replaces the pool."""
