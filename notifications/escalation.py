"""Escalation: a task notified but not acknowledged within its deadline goes to the team's supervisors."""

from __future__ import annotations

from datetime import datetime

import orjson
from sqlalchemy import text

from kernel.audit import record_audit
from kernel.uow import UnitOfWork
from notifications import repository as repo


async def escalate_overdue(uow: UnitOfWork, now: datetime) -> list[int]:
    """Returns the new notification ids to push (one per supervisor device per overdue task)."""
    session = uow.session
    overdue = await session.execute(
        text(
            "SELECT * FROM staff_tasks WHERE status = 'notified' AND escalated_at IS NULL"
            " AND notified_at + make_interval(secs => ack_within_s) <= :now ORDER BY id FOR UPDATE SKIP LOCKED"
        ),
        {"now": now},
    )
    pushed: list[int] = []
    for task in overdue.mappings():
        supervisors = await session.execute(
            text(
                "SELECT id, fcm_token, fcm_token_active FROM devices WHERE organisation_id = :o AND is_supervisor"
                " AND (CAST(:t AS text) IS NULL OR team = :t) AND revoked_at IS NULL"
            ),
            {"o": task["organisation_id"], "t": task["team"]},
        )
        for supervisor in supervisors:
            data = {"task_id": str(task["id"]), "type": "task_escalation"}
            notification_id = await repo.insert_notification(
                session,
                {
                    "organisation_id": task["organisation_id"],
                    "device_id": supervisor.id,
                    "event_id": None,
                    "content_id": None,
                    "task_id": task["id"],
                    "place_id": task["place_id"],
                    "title": f"Not acknowledged: {task['title']}",
                    "body": f"Task {task['id']} was notified at {task['notified_at']:%H:%M} UTC, not acknowledged.",
                    "data": orjson.dumps(data).decode(),
                    "created_at": now,
                },
            )
            if notification_id is None:
                continue
            await repo.add_deliveries(session, [notification_id], "inbox", status="sent")
            if supervisor.fcm_token and supervisor.fcm_token_active:
                await repo.add_deliveries(session, [notification_id], "fcm")
                pushed.append(notification_id)
        await session.execute(
            text("UPDATE staff_tasks SET escalated_at = :now WHERE id = :t"), {"now": now, "t": task["id"]}
        )
        await record_audit(
            session,
            organisation_id=task["organisation_id"],
            actor="system",
            action="escalated",
            entity="staff_task",
            entity_id=task["id"],
        )
    return pushed
