"""The worker's bound on pushes in flight (notifications.push.BoundedSender), with FCM's place taken by a recorder."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from notifications.push import BoundedSender, PushMessage, PushOutcome


class Recorder:
    """Answers every push after a pause and remembers how many were in flight at once."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.peak = 0
        self.alone: list[bool] = []

    async def send(self, messages: Sequence[PushMessage]) -> list[PushOutcome]:
        self.alone.append(self.in_flight == 0)
        self.in_flight += len(messages)
        self.peak = max(self.peak, self.in_flight)
        await asyncio.sleep(0.01)
        self.in_flight -= len(messages)
        return [PushOutcome(m.notification_id, "sent", f"m{m.notification_id}") for m in messages]


def batch(start: int, size: int) -> list[PushMessage]:
    return [PushMessage(i, f"t{i}", "title", "body") for i in range(start, start + size)]


async def test_pushes_in_flight_never_exceed_the_bound_and_every_push_is_answered() -> None:
    recorder = Recorder()
    sender = BoundedSender(recorder, in_flight=100)
    answers = await asyncio.gather(*(sender.send(batch(i * 30, 30)) for i in range(20)))
    assert recorder.peak == 90  # three batches of 30 fit under 100, a fourth waits
    assert sorted(o.notification_id for a in answers for o in a) == list(range(600))


async def test_a_batch_larger_than_the_bound_goes_alone_and_in_its_turn() -> None:
    recorder = Recorder()
    sender = BoundedSender(recorder, in_flight=100)
    await asyncio.gather(sender.send(batch(0, 40)), sender.send(batch(40, 150)), sender.send(batch(190, 40)))
    assert recorder.peak == 150
    assert recorder.alone == [True, True, True]  # the 150 waited for the first 40; the last 40 did not overtake it


async def test_a_cancelled_waiter_does_not_block_the_ones_behind_it() -> None:
    recorder = Recorder()
    sender = BoundedSender(recorder, in_flight=100)
    first = asyncio.create_task(sender.send(batch(0, 90)))
    await asyncio.sleep(0)
    stuck = asyncio.create_task(sender.send(batch(90, 50)))  # waits for room
    behind = asyncio.create_task(sender.send(batch(140, 5)))  # waits for its turn
    await asyncio.sleep(0)
    stuck.cancel()
    assert len(await asyncio.wait_for(behind, timeout=1)) == 5
    await first
