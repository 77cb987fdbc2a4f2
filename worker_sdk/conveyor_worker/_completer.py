"""Reports outcomes in batches: completions that arrive together share one Ack/Fail/Release.

One call per kind is in flight at a time; whatever finishes meanwhile waits and
goes in the next call, so batches grow with load and a lone task is not delayed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from conveyor import AsyncClient, ConveyorError, Failure, ItemOutcome, Task
from conveyor_worker._outcome import Outcome, result_refused

log = logging.getLogger("conveyor.worker")

__all__ = ["Completer"]

_MAX_BATCH = 1000
_ATTEMPTS = 5


class _Lane:
    """Pending items of one call kind and the task sending them."""

    def __init__(
        self,
        name: str,
        send: Callable[[list[Any]], Awaitable[list[ItemOutcome]]],
        on_rejected: Callable[[Any, ConveyorError], bool] = lambda item, error: False,
    ):
        self.name = name
        self.send = send
        self.on_rejected = on_rejected  # True: handled, not logged
        self.pending: list[Any] = []
        self.sender: asyncio.Task[None] | None = None

    def submit(self, item: Any) -> None:
        self.pending.append(item)
        if self.sender is None or self.sender.done():
            self.sender = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        while self.pending:
            batch, self.pending = self.pending[:_MAX_BATCH], self.pending[_MAX_BATCH:]
            await self._send(batch)

    async def _send(self, batch: list[Any]) -> None:
        delay = 0.2
        for attempt in range(_ATTEMPTS):
            try:
                outcomes = await self.send(batch)
            except ConveyorError as exc:
                if attempt == _ATTEMPTS - 1:
                    log.error("%s of %d task(s) failed, giving up: %s", self.name, len(batch), exc)
                    return
                log.warning("%s of %d task(s) failed, retrying: %s", self.name, len(batch), exc)
                await asyncio.sleep(delay)
                delay *= 2
                continue
            for item, outcome in zip(batch, outcomes, strict=False):
                if outcome.error is not None and not self.on_rejected(item, outcome.error):
                    log.warning(
                        "task %s: %s rejected: %s", outcome.task_id, self.name, outcome.error
                    )
            return

    async def flush(self) -> None:
        while self.sender is not None and not self.sender.done():
            await asyncio.shield(self.sender)


class Completer:
    """Batches Ack, Fail and Release calls."""

    def __init__(self, client: AsyncClient) -> None:
        self._acks = _Lane("ack", lambda items: client.ack_many(items), self._ack_refused)
        self._fails = _Lane("fail", lambda items: client.fail_many(items))
        self._releases = _Lane("release", lambda items: client.release_many(items))

    def report(self, task: Task, outcome: Outcome) -> None:
        if outcome.action == "ack":
            self._acks.submit((task, outcome.result))
        elif outcome.action == "fail":
            self._fails.submit(
                Failure(
                    task,
                    outcome.error_type,
                    outcome.message,
                    outcome.details,
                    outcome.retryable,
                    outcome.retry_delay,
                )
            )
        elif outcome.action == "release":
            self._releases.submit(task)

    def _ack_refused(self, item: tuple[Task, Any], error: ConveyorError) -> bool:
        failure = result_refused(error)
        if failure is None:
            return False
        task = item[0]
        log.warning("task %s: ack refused, failing it: %s", task.id, failure.message)
        self.report(task, failure)
        return True

    def release(self, tasks: Sequence[Task]) -> None:
        for task in tasks:
            self._releases.submit(task)

    async def flush(self) -> None:
        """Wait until everything reported so far was sent."""
        for lane in (self._acks, self._fails, self._releases):
            await lane.flush()
