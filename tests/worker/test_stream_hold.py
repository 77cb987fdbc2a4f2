"""While tasks wait in the buffer, a streaming worker gathers outcomes and credits into
larger messages (HOLD_ITEMS or HOLD_SECONDS); with an empty buffer they go at once."""

from __future__ import annotations

import asyncio

from conveyor import Task, TaskState
from conveyor_worker import Worker
from conveyor_worker._outcome import Outcome
from conveyor_worker._streaming import HOLD_ITEMS, HOLD_SECONDS, StreamSession


class RecordingStream:
    """Stands in for the client's WorkStream: records what the session puts on it."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def ack(self, task: Task, result: object) -> None:
        self.sent.append(("ack", task.id))

    def grant(self, credits: int) -> None:
        self.sent.append(("grant", str(credits)))


def _task(n: int) -> Task:
    return Task(
        id=f"t{n}",
        queue="q",
        kind="k",
        state=TaskState.LEASED,
        attempt=1,
        max_attempts=3,
        priority=0,
        headers={},
        payload_bytes=b"null",
        content_type="application/json",
    )


async def _session() -> tuple[StreamSession, RecordingStream]:
    session = StreamSession(Worker(queues=["q"], concurrency=8), None, None)  # type: ignore[arg-type]
    stream = RecordingStream()
    session.stream = stream  # type: ignore[assignment]
    return session, stream


def test_outcomes_wait_while_the_buffer_holds_tasks_and_go_with_their_credits() -> None:
    async def scenario() -> None:
        session, stream = await _session()
        session.buffer.append(_task(999))  # busy: a task is waiting
        for n in range(HOLD_ITEMS - 1):
            session.report(_task(n), Outcome("ack"))
            session.slot_freed()
        assert stream.sent == []  # held
        session.report(_task(HOLD_ITEMS), Outcome("ack"))  # the batch is full: all go
        acks = [item for item in stream.sent if item[0] == "ack"]
        assert len(acks) == HOLD_ITEMS
        assert stream.sent[-1][0] == "grant"  # credits ride in the same turn

    asyncio.run(scenario())


def test_held_outcomes_go_after_hold_seconds() -> None:
    async def scenario() -> None:
        session, stream = await _session()
        session.buffer.append(_task(999))
        session.report(_task(1), Outcome("ack"))
        assert stream.sent == []
        await asyncio.sleep(HOLD_SECONDS * 5)
        assert ("ack", "t1") in stream.sent

    asyncio.run(scenario())


def test_with_an_empty_buffer_an_outcome_goes_at_once_after_the_held_ones() -> None:
    async def scenario() -> None:
        session, stream = await _session()
        session.buffer.append(_task(999))
        session.report(_task(1), Outcome("ack"))
        session.buffer.clear()  # idle now: latency matters, not message count
        session.report(_task(2), Outcome("ack"))
        assert [item for item in stream.sent if item[0] == "ack"] == [("ack", "t1"), ("ack", "t2")]

    asyncio.run(scenario())
