"""Staff task workflow for field workers: open → notified → acknowledged → done (with a note)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from kernel.audit import record_audit
from kernel.errors import Conflict, Forbidden, NotFound
from kernel.uow import UnitOfWork
from services import staff_task_repository as repository
from services.devices import DeviceAuth


def _out(row: Any) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in dict(row).items()}


async def tasks_for_device(uow: UnitOfWork, device: DeviceAuth) -> list[dict[str, Any]]:
    """Tasks assigned to this device, newest first."""
    if device.role != "staff":
        raise Forbidden("staff tasks are for staff devices")
    rows = await repository.tasks_assigned_to(uow.session, device.organisation_id, device.device_id)
    return [_out(r) for r in rows]


async def _task_for_update(uow: UnitOfWork, device: DeviceAuth, task_id: int) -> Any:
    if device.role != "staff":
        raise Forbidden("staff tasks are for staff devices")
    row = await repository.task_for_update(uow.session, device.organisation_id, task_id)
    if row is None or row["assigned_device_id"] != device.device_id:
        raise NotFound(f"task {task_id} is not yours")
    return row


async def acknowledge_task(uow: UnitOfWork, *, device: DeviceAuth, task_id: int) -> dict[str, Any]:
    task = await _task_for_update(uow, device, task_id)
    if task["status"] != "notified":
        raise Conflict(f"task {task_id} is {task['status']}; only a notified task can be acknowledged")
    now = datetime.now(UTC)
    await repository.mark_acknowledged(uow.session, task_id, now)
    await record_audit(
        uow.session,
        organisation_id=device.organisation_id,
        actor=f"device:{device.device_id}",
        action="acknowledged",
        entity="staff_task",
        entity_id=task_id,
    )
    return {**_out(task), "status": "acknowledged", "acknowledged_at": now.isoformat()}


async def complete_task(uow: UnitOfWork, *, device: DeviceAuth, task_id: int, note: str | None) -> dict[str, Any]:
    task = await _task_for_update(uow, device, task_id)
    if task["status"] not in ("notified", "acknowledged"):
        raise Conflict(f"task {task_id} is {task['status']}")
    now = datetime.now(UTC)
    acknowledged = task["acknowledged_at"] or now
    await repository.mark_done(uow.session, task_id, now, acknowledged, note)
    await record_audit(
        uow.session,
        organisation_id=device.organisation_id,
        actor=f"device:{device.device_id}",
        action="completed",
        entity="staff_task",
        entity_id=task_id,
        details={"note": note},
    )
    return {
        **_out(task),
        "status": "done",
        "done_at": now.isoformat(),
        "note": note,
        "acknowledged_at": acknowledged.isoformat() if isinstance(acknowledged, datetime) else acknowledged,
    }
