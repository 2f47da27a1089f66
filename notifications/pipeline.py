"""From outbox events to notifications: rules for content, arrival for staff tasks.

Runs inside a job's transaction. The outbox rows are locked (`SKIP LOCKED`) and marked processed in
the same transaction that writes the notifications, and notifications are unique per event and
content/task: a retried job, a duplicate event id or a worker killed mid-batch never yields two.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from kernel.audit import record_audit
from kernel.uow import UnitOfWork
from notifications import repository as repo
from notifications.rules import EventFacts, History, evaluate, local_day_start


@dataclass
class PipelineResult:
    events: int = 0
    notifications: list[int] = field(default_factory=list)  # new ones that want a push
    inbox_only: list[int] = field(default_factory=list)
    decisions: dict[str, int] = field(default_factory=dict)
    devices: set[int] = field(default_factory=set)
    events_by_organisation: dict[int, list[int]] = field(default_factory=dict)


async def process_events(
    uow: UnitOfWork, event_ids: Sequence[int] | None, now: datetime, limit: int = 500
) -> PipelineResult:
    session = uow.session
    claimed = await repo.claim_outbox(session, event_ids, limit)
    result = PipelineResult(events=len(claimed))
    if not claimed:
        return result
    facts = await repo.event_facts(session, claimed)
    device_ids = sorted({device_id for _, device_id, _ in facts})
    # Held until this transaction commits: another job deciding for the same devices waits, then sees these pushes.
    await repo.lock_push_decisions(session, device_ids)
    devices = await repo.device_facts(session, device_ids)
    # One query each for the whole batch, then kept current in memory as this job decides.
    day_starts = {d: local_day_start(now, facts_.timezone) for d, (facts_, _) in devices.items()}
    last_sent, sent_today = await repo.batch_history(session, day_starts)
    rules_cache: dict[tuple[int, int], tuple[list[Any], dict[int, Any]]] = {}
    pending: list[tuple[dict[str, Any], bool]] = []
    for event, device_id, organisation_id in facts:
        result.events_by_organisation.setdefault(organisation_id, []).append(event.event_id)
        if device_id not in devices:
            continue  # erased since
        if event.late:
            continue  # a visit reported hours later: recorded and sent to webhooks, but pushing it now misleads
        device, row = devices[device_id]
        if device.role == "staff" and event.kind in ("enter", "checkin") and event.zone == "building":
            await _push_tasks(uow, result, event, organisation_id, device_id, row, device.consents, now)
        key = (organisation_id, event.place_id)
        if key not in rules_cache:
            rules_cache[key] = await repo.content_rules(session, organisation_id, event.place_id, event.place_kind)
        rules, items = rules_cache[key]
        if not rules:
            continue
        history = History(last_sent.get((device_id, event.place_id), {}), sent_today.get(device_id, 0))
        for decision in evaluate(event, device, rules, history, now):
            result.decisions[decision.reason] = result.decisions.get(decision.reason, 0) + 1
            # "no_push" passed every rule but the device has no working token: still its inbox.
            if not decision.send and decision.reason != "no_push":
                continue
            item = items[decision.content_id]
            pending.append((_content_notification(organisation_id, device_id, event, item, now), decision.send))
            last_sent.setdefault((device_id, event.place_id), {})[item["id"]] = now
            if decision.send:  # an inbox-only notification uses no slot of the daily cap
                sent_today[device_id] = sent_today.get(device_id, 0) + 1
    if pending:
        created = await repo.insert_notifications(session, [values for values, _ in pending])
        wants_push = {(v["event_id"], v["content_id"]) for v, push in pending if push}
        await repo.add_deliveries(session, [n for n, _, _ in created], "inbox", status="sent")
        pushed = [n for n, event_id, content_id in created if (event_id, content_id) in wants_push]
        await repo.add_deliveries(session, pushed, "fcm")
        result.notifications += pushed
        result.inbox_only += [n for n, e, c in created if (e, c) not in wants_push]
        result.devices |= {v["device_id"] for v, _ in pending}
    await repo.mark_processed(session, claimed)
    return result


def _content_notification(
    organisation_id: int, device_id: int, event: EventFacts, item: Any, now: datetime
) -> dict[str, Any]:
    data = {str(k): str(v) for k, v in (item["data"] or {}).items()}
    data.update({"place_id": str(event.place_id), "content_id": str(item["id"]), "event": event.kind})
    if item["deep_link"]:
        data["deep_link"] = item["deep_link"]
    return {
        "organisation_id": organisation_id,
        "device_id": device_id,
        "event_id": event.event_id,
        "content_id": item["id"],
        "place_id": event.place_id,
        "title": item["title"],
        "body": item["body"],
        "data": orjson.dumps(data).decode(),
        "created_at": now,
    }


async def _push_tasks(
    uow: UnitOfWork,
    result: PipelineResult,
    event: EventFacts,
    organisation_id: int,
    device_id: int,
    row: object,
    consents: Mapping[str, bool],
    now: datetime,
) -> None:
    session = uow.session
    team = getattr(row, "team", None)
    for task in await repo.open_tasks_for(session, organisation_id, event.place_id, event.place_kind, team):
        data = {
            "task_id": str(task["id"]),
            "place_id": str(event.place_id),
            "event": event.kind,
            "type": "task",
        }
        notification_id = await repo.insert_notification(
            session,
            {
                "organisation_id": organisation_id,
                "device_id": device_id,
                "event_id": event.event_id,
                "content_id": None,
                "task_id": task["id"],
                "place_id": event.place_id,
                "title": f"Task: {task['title']}",
                "body": task["body"] or task["title"],
                "data": orjson.dumps(data).decode(),
                "created_at": now,
            },
        )
        if notification_id is None:
            continue
        await repo.mark_task_notified(session, task["id"], device_id, now)
        await record_audit(
            session,
            organisation_id=organisation_id,
            actor=f"device:{device_id}",
            action="notified",
            entity="staff_task",
            entity_id=task["id"],
            details={"event_id": event.event_id},
        )
        result.devices.add(device_id)
        await repo.add_deliveries(session, [notification_id], "inbox", status="sent")
        push_ok = bool(getattr(row, "push_ready", False))
        if push_ok and consents.get("tasks") is True:
            await repo.add_deliveries(session, [notification_id], "fcm")
            result.notifications.append(notification_id)
        else:
            result.inbox_only.append(notification_id)
