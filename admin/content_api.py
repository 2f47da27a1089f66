"""Admin API for content items, staff tasks and staff devices. Rules are checked by the same parser the
pipeline uses, so what is saved is what will be evaluated."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, status
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator

from geofences.repository import PlaceRepository
from infra.deps import MAX_ID, IdPath, PrincipalDep, UowDep
from kernel.audit import record_audit
from kernel.errors import NotFound, Problem, ValidationFailed
from kernel.uow import UnitOfWork
from notifications import content_repository
from notifications.models import ContentItem, StaffTask
from notifications.rules import ContentRule
from services.device_queries import set_staff_fields
from services.models import Role
from services.orgs import Principal

router = APIRouter(prefix="/admin/v1", tags=["admin: content and tasks"])


class Target(BaseModel):
    model_config = ConfigDict(extra="forbid")
    place_id: int | None = Field(default=None, ge=1, le=MAX_ID)
    place_kind: str | None = Field(default=None, min_length=1, max_length=80)

    @model_validator(mode="after")
    def _one_target(self) -> Target:
        if (self.place_id is None) == (self.place_kind is None):
            raise ValueError("give exactly one of place_id (one building) or place_kind (every place of a kind)")
        return self


class ContentIn(Target):
    title: str = Field(min_length=1, max_length=200)
    body: str = Field(min_length=1, max_length=4000)
    deep_link: str | None = Field(default=None, max_length=2000)
    data: dict[str, str] = Field(default_factory=dict)
    image_url: str | None = Field(default=None, max_length=2000, pattern=r"^https?://")
    trigger: Literal["enter", "dwell", "checkin", "exit"] = "enter"
    zone: Literal["building", "approach"] = "building"
    audience_role: Literal["visitor", "staff"] | None = None
    audience_tags: list[str] = Field(default_factory=list, max_length=50)
    schedule: dict[str, Any] = Field(
        default_factory=dict,
        description='{"valid_from", "valid_to", "days": [0-6], "hours": ["09:00", "17:00"], "only_when_open": bool}',
    )
    cooldown_s: int = Field(default=86400, ge=0, le=365 * 86400)
    daily_cap: int | None = Field(default=None, ge=1, le=1000)
    quiet_hours: list[str] | None = Field(default=None, min_length=2, max_length=2, description='["22:00", "07:00"]')
    consent_purpose: Literal["offers", "tasks", "analytics"] = "offers"
    active: bool = True
    silent: bool = Field(
        default=False,
        description="Push as data only: nothing is shown, the app is woken in the background with `data`"
        " (iOS: content-available); title and body still make the inbox entry",
    )


class TaskIn(Target):
    title: str = Field(min_length=1, max_length=200)
    body: str = Field(default="", max_length=4000)
    team: str | None = Field(default=None, max_length=100)
    ack_within_s: int = Field(default=1800, ge=60, le=30 * 86400)


def _check_rule(values: dict[str, Any]) -> None:
    try:
        ContentRule.from_model_values(id=0, **values)
    except (ValueError, TypeError) as error:
        raise ValidationFailed("invalid rule", [Problem("schedule", str(error))]) from error


async def _check_place(uow: UnitOfWork, organisation_id: int, place_id: int | None) -> None:
    if place_id is not None and not await PlaceRepository(uow.session).exists(organisation_id, place_id):
        raise NotFound(f"place {place_id} not found")


def _as_dict(row: Any) -> dict[str, Any]:
    """An ORM row as JSON-ready columns."""
    values = {c.key: getattr(row, c.key) for c in row.__table__.columns}
    return {c: (v.isoformat() if isinstance(v, datetime) else v) for c, v in values.items()}


async def _created(uow: UnitOfWork, principal: Principal, entity: str, row: ContentItem | StaffTask) -> dict[str, Any]:
    """Audit a row just inserted in the request's transaction; the row as JSON."""
    await record_audit(
        uow.session,
        organisation_id=principal.organisation_id,
        actor=principal.actor,
        action="create",
        entity=entity,
        entity_id=int(row.id),
        details={"title": row.title},
    )
    return _as_dict(row)


@router.post("/content", status_code=status.HTTP_201_CREATED)
async def create_content(body: ContentIn, principal: PrincipalDep, uow: UowDep) -> dict[str, Any]:
    principal.require(Role.editor)
    values = body.model_dump()
    _check_rule(values)
    await _check_place(uow, principal.organisation_id, body.place_id)
    row = await content_repository.add_content(uow.session, principal.organisation_id, values)
    return await _created(uow, principal, "content", row)


@router.get("/content")
async def list_content(
    principal: PrincipalDep, uow: UowDep, place_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None
) -> list[dict[str, Any]]:
    rows = await content_repository.list_content(uow.session, principal.organisation_id, place_id)
    return [_as_dict(r) for r in rows]


@router.delete("/content/{content_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_content(content_id: IdPath, principal: PrincipalDep, uow: UowDep) -> Response:
    principal.require(Role.editor)
    if not await content_repository.delete_content(uow.session, principal.organisation_id, content_id):
        raise NotFound(f"content {content_id} not found")
    await record_audit(
        uow.session,
        organisation_id=principal.organisation_id,
        actor=principal.actor,
        action="delete",
        entity="content",
        entity_id=content_id,
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/tasks", status_code=status.HTTP_201_CREATED)
async def create_task(body: TaskIn, principal: PrincipalDep, uow: UowDep) -> dict[str, Any]:
    principal.require(Role.editor)
    await _check_place(uow, principal.organisation_id, body.place_id)
    row = await content_repository.add_task(uow.session, principal.organisation_id, body.model_dump())
    return await _created(uow, principal, "staff_task", row)


@router.get("/tasks")
async def list_tasks(
    principal: PrincipalDep, uow: UowDep, status_: Annotated[str | None, Query(alias="status")] = None
) -> list[dict[str, Any]]:
    """The task board: open / notified / acknowledged / done, who and when."""
    rows = await content_repository.list_tasks(uow.session, principal.organisation_id, status_)
    return [_as_dict(r) for r in rows]


class StaffDevicePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    team: str | None = Field(default=None, max_length=100)
    is_supervisor: StrictBool | None = None  # 0 or "yes" is a client bug, not a yes


@router.patch("/devices/{device_id}")
async def update_staff_device(
    device_id: IdPath, body: StaffDevicePatch, principal: PrincipalDep, uow: UowDep
) -> dict[str, Any]:
    """Put a staff device in a team, or make it the team's supervisor (escalations go there)."""
    principal.require(Role.editor)
    values = body.model_dump(exclude_unset=True)
    if not values:
        raise ValidationFailed("nothing to change", [Problem("body", "give team and/or is_supervisor")])
    row = await set_staff_fields(uow.session, principal.organisation_id, device_id, values)
    if row is None:
        raise NotFound(f"device {device_id} not found")
    await record_audit(
        uow.session,
        organisation_id=principal.organisation_id,
        actor=principal.actor,
        action="update",
        entity="device",
        entity_id=device_id,
        details=values,
    )
    return {"id": row.device_id, "team": row.team, "is_supervisor": row.is_supervisor}
