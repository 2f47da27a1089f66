"""Escalation: a task notified but not acknowledged within its deadline goes to the team's supervisors."""

from __future__ import annotations

from datetime import datetime

import orjson

from kernel.audit import record_audit
from kernel.uow import UnitOfWork
from notifications import repository as repo


async def escalate_overdue(uow: UnitOfWork, now: datetime) -> list[int]:
    """Returns the new notification ids to push (one per supervisor device per overdue task)."""
    session = uow.session
    pushed: list[int] = []
    for task in await repo.overdue_tasks(session, now):
        for supervisor in await repo.supervisors(session, task["organisation_id"], task["team"]):
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
            if supervisor.push_ready:
                await repo.add_deliveries(session, [notification_id], "fcm")
                pushed.append(notification_id)
        await repo.mark_escalated(session, task["id"], now)
        await record_audit(
            session,
            organisation_id=task["organisation_id"],
            actor="system",
            action="escalated",
            entity="staff_task",
            entity_id=task["id"],
        )
    return pushed
