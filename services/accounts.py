"""Administrator accounts: users with argon2 password hashes, browser sessions and login throttling in Redis."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any

from pwdlib import PasswordHash
from pwdlib.exceptions import UnknownHashError
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession

from kernel.errors import Conflict, Forbidden, Problem, RateLimited, Unauthorized, Unavailable, ValidationFailed
from services import account_repository as repository
from services.models import Role
from services.orgs import Principal

SESSION_COOKIE = "placecast_session"
REVOCATIONS_CHANNEL = "placecast:revocations"  # "a session ended or access changed": admin streams re-check
SESSION_IDLE_S = 12 * 3600  # sliding: every authenticated request pushes it back
SESSION_MAX_S = 7 * 86400  # absolute: a stolen cookie kept busy still dies
LOGIN_ATTEMPTS = 10  # per address and account
ACCOUNT_FAILURES = 30  # per account from any addresses: guessing spread over many addresses stops here too
LOGIN_WINDOW_S = 15 * 60
MIN_PASSWORD = 10
MAX_PASSWORD = 1024  # argon2 takes any length; this only bounds the work one request can ask for

_hasher = PasswordHash.recommended()

# INCR and start the window on the first attempt, atomically; returns the count and the seconds left.
_COUNT_ATTEMPT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return {count, redis.call('TTL', KEYS[1])}
"""


@dataclass(frozen=True, slots=True)
class AdminSession:
    token: str
    user_id: int
    csrf_token: str

    def csrf_matches(self, sent: str | None) -> bool:
        return sent is not None and hmac.compare_digest(sent.encode(), self.csrf_token.encode())


def normalise_email(email: str) -> str:
    return email.strip().lower()


def generate_password() -> str:
    return secrets.token_urlsafe(18)


@functools.cache
def _dummy_hash() -> str:
    # Checked when the email is unknown, so an unknown address takes as long as a wrong password.
    return _hasher.hash(secrets.token_urlsafe(16))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _check_new_credentials(email: str, password: str) -> None:
    problems = []
    if "@" not in email or len(email) > 320 or any(c.isspace() for c in email):
        problems.append(Problem("email", "expected an email address"))
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        problems.append(Problem("password", f"between {MIN_PASSWORD} and {MAX_PASSWORD} characters"))
    if problems:
        raise ValidationFailed("bad account details", problems)


async def find_user_id(session: AsyncSession, email: str) -> int | None:
    return await repository.user_id_by_email(session, normalise_email(email))


async def add_membership(session: AsyncSession, *, user_id: int, organisation_id: int, role: Role) -> None:
    """Make the user a member of the organisation, or change the role they have there."""
    await repository.upsert_membership(session, user_id=user_id, organisation_id=organisation_id, role=role)


async def create_user(session: AsyncSession, *, email: str, password: str, organisation_id: int, role: Role) -> int:
    email = normalise_email(email)
    _check_new_credentials(email, password)
    if await find_user_id(session, email) is not None:
        raise Conflict(f"a user {email!r} exists")
    password_hash = await asyncio.to_thread(_hasher.hash, password)  # ~50 ms of CPU: keep the loop free
    user_id = await repository.insert_user(session, email, password_hash)
    await add_membership(session, user_id=user_id, organisation_id=organisation_id, role=role)
    return user_id


async def set_password(session: AsyncSession, *, user_id: int, password: str) -> None:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise ValidationFailed("bad password", [Problem("password", f"between {MIN_PASSWORD} and {MAX_PASSWORD}")])
    password_hash = await asyncio.to_thread(_hasher.hash, password)
    await repository.set_password_hash(session, user_id, password_hash)


def _is_text(value: str) -> bool:
    return "\x00" not in value and not any("\ud800" <= char <= "\udfff" for char in value)


async def authenticate(session: AsyncSession, email: str, password: str) -> int | None:
    """The user id when the password is right and the account active; None otherwise (never says which).

    An email or password that is not valid Unicode text (NUL, a lone surrogate from a JSON escape) belongs to no
    account: wrong credentials like any other, not a database error."""
    readable = _is_text(email) and _is_text(password)
    row = await repository.credentials(session, normalise_email(email)) if readable else None
    if row is None:
        await asyncio.to_thread(_hasher.verify, password if readable else "", _dummy_hash())
        return None
    try:
        valid, new_hash = await asyncio.to_thread(_hasher.verify_and_update, password, row.password_hash)
    except UnknownHashError:
        return None
    if not valid or not row.is_active:
        return None
    if new_hash is not None:  # the recommended parameters changed since this hash was made
        await repository.set_password_hash(session, row.user_id, new_hash)
    return row.user_id


async def count_login_attempt(redis: Redis, ip: str, email: str) -> None:
    """Every attempt counts, right or wrong, so guessing stops at the limit whatever the answers were."""
    # Hashed so Redis key names never carry email addresses.
    subject = hashlib.sha256(f"{ip}\n{normalise_email(email)}".encode()).hexdigest()
    try:
        count, ttl = await redis.eval(_COUNT_ATTEMPT, 1, f"placecast:login:{subject}", str(LOGIN_WINDOW_S))  # type: ignore[misc]
    except RedisError as error:
        raise Unavailable("the session store (Redis) is unavailable; retry shortly") from error
    if int(count) > LOGIN_ATTEMPTS:
        raise RateLimited("too many login attempts; wait and try again", retry_after_s=max(int(ttl), 1))


def _account_key(email: str) -> str:
    return "placecast:login-failures:" + hashlib.sha256(normalise_email(email).encode()).hexdigest()


def _address_key(ip: str) -> str:
    return "placecast:login-failures-from:" + hashlib.sha256(ip.encode()).hexdigest()


async def check_not_locked(redis: Redis, ip: str, email: str, *, address_limit: int) -> None:
    """An account with ACCOUNT_FAILURES failed logins in the window takes none, from any address, until the window
    ends: the price of stopping distributed guessing is that someone can lock an account out for 15 minutes. An
    address with `address_limit` failed logins over all accounts is refused likewise (a single address trying one
    password on each of many accounts is never stopped by the per-account counts)."""
    try:
        async with redis.pipeline(transaction=False) as pipe:
            for key in (_account_key(email), _address_key(ip)):
                pipe.get(key)
                pipe.ttl(key)
            account_failures, account_ttl, address_failures, address_ttl = await pipe.execute()
    except RedisError as error:
        raise Unavailable("the session store (Redis) is unavailable; retry shortly") from error
    if int(address_failures or 0) >= address_limit:
        wait = max(int(address_ttl), 1)
        raise RateLimited("too many failed logins from this address; wait and try again", retry_after_s=wait)
    if int(account_failures or 0) >= ACCOUNT_FAILURES:
        wait = max(int(account_ttl), 1)
        raise RateLimited("too many failed logins for this account; wait and try again", retry_after_s=wait)


async def record_login_failure(redis: Redis, ip: str, email: str) -> None:
    try:
        async with redis.pipeline(transaction=False) as pipe:
            for key in (_account_key(email), _address_key(ip)):
                pipe.eval(_COUNT_ATTEMPT, 1, key, str(LOGIN_WINDOW_S))
            await pipe.execute()
    except RedisError as error:
        raise Unavailable("the session store (Redis) is unavailable; retry shortly") from error


def _session_key(token: str) -> str:
    # Keyed by the token's hash: a Redis dump or MONITOR does not hand out live sessions.
    return "placecast:session:" + hashlib.sha256(token.encode()).hexdigest()


async def start_session(redis: Redis, user_id: int) -> AdminSession:
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)  # 256 bits each
    mapping = {"user_id": str(user_id), "csrf": csrf, "created": str(int(time.time()))}
    try:
        async with redis.pipeline(transaction=True) as pipe:
            pipe.hset(_session_key(token), mapping=mapping)
            pipe.expire(_session_key(token), SESSION_IDLE_S)
            await pipe.execute()
    except RedisError as error:
        raise Unavailable("the session store (Redis) is unavailable; retry shortly") from error
    return AdminSession(token, user_id, csrf)


async def load_session(redis: Redis, token: str, *, slide: bool = True) -> AdminSession | None:
    """The live session behind this token, or None. `slide` pushes its idle expiry back (a request); an open
    stream re-checking its session does not, so an idle tab left streaming still logs out."""
    if not token or len(token) > 200:
        return None
    key = _session_key(token)
    try:
        async with redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(key)
            if slide:
                pipe.expire(key, SESSION_IDLE_S)
            raw = (await pipe.execute())[0]
    except RedisError as error:
        raise Unavailable("the session store (Redis) is unavailable; retry shortly") from error
    data = {_text(k): _text(v) for k, v in raw.items()}
    if not {"user_id", "csrf", "created"} <= data.keys():
        return None
    if int(data["created"]) + SESSION_MAX_S < time.time():
        await end_session(redis, token)
        return None
    return AdminSession(token, int(data["user_id"]), data["csrf"])


async def end_session(redis: Redis, token: str) -> None:
    """Deleted, and announced: open live streams of any API process re-check their session at once (and within a
    second without the message)."""
    try:
        async with redis.pipeline(transaction=False) as pipe:
            pipe.delete(_session_key(token))
            pipe.publish(REVOCATIONS_CHANNEL, "session")
            await pipe.execute()
    except RedisError as error:
        raise Unavailable("the session store (Redis) is unavailable; retry shortly") from error


async def profile(session: AsyncSession, user_id: int) -> dict[str, Any]:
    """The user and their organisations (the first is the default when no organisation is named)."""
    found = await repository.memberships(session, user_id)
    if found is None:
        raise Unauthorized("this account is disabled or gone; log in again")
    email, memberships = found
    return {
        "user": {"id": user_id, "email": email},
        "organisations": [
            {"id": m.organisation_id, "name": m.name, "slug": m.slug, "role": m.role} for m in memberships
        ],
    }


async def principal_for_user(session: AsyncSession, user_id: int, organisation_id: int | None) -> Principal:
    found = await repository.memberships(session, user_id)
    if found is None:
        raise Unauthorized("this account is disabled or gone; log in again")
    email, memberships = found
    if not memberships:
        raise Forbidden("you are not a member of any organisation")
    chosen = (
        memberships[0]
        if organisation_id is None
        else next((m for m in memberships if m.organisation_id == organisation_id), None)
    )
    if chosen is None:
        raise Forbidden(f"you are not a member of organisation {organisation_id}")
    return Principal(organisation_id=chosen.organisation_id, role=Role(chosen.role), actor=f"user:{user_id}:{email}")
