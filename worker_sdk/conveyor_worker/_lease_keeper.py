"""Keeps the leases of running tasks alive with batched extensions.

Each lease is extended every min(heartbeat, lease length / 3), so two heartbeats
can be lost before it expires. The answer also carries cancel requests, so the
heartbeat is how a producer's cancel reaches a running handler.

The keeper does not know the transport: `send(tasks)` either returns the
outcomes (one ExtendLease call) or returns None and the outcomes come back
later through `handle()` (extensions riding on the work stream).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from conveyor import ConveyorError, ExtendOutcome, LeaseLost, Task
from conveyor.errors import NotFound

log = logging.getLogger("conveyor.worker")

__all__ = ["LeaseKeeper", "SendExtensions"]

_FALLBACK_LEASE_SECONDS = 30.0
_MAX_BATCH = 1000

#: Extend these leases; return their outcomes, or None when they arrive later.
SendExtensions = Callable[[list[Task]], Awaitable[Sequence[ExtendOutcome] | None]]


@dataclass(slots=True)
class _Held:
    task: Task
    interval: float
    next_at: float


class LeaseKeeper:
    """Extends held leases in the background; reports cancels and lost leases."""

    def __init__(
        self,
        send: SendExtensions,
        heartbeat: float,
        lease_duration: float | None,
        on_cancel: Callable[[str], None],
        on_lost: Callable[[str], None],
    ) -> None:
        self._send = send
        self._heartbeat = heartbeat
        self._lease_duration = lease_duration
        self._on_cancel = on_cancel
        self._on_lost = on_lost
        self._held: dict[str, _Held] = {}
        self._is_failing = False  # the last extension failed (logged once per outage)
        self._wake = asyncio.Event()
        self._sleep_until = 0.0  # when run() wakes next on its own
        # With a fixed lease length every task gets the same interval: no datetimes to read.
        self._interval = None if lease_duration is None else min(heartbeat, lease_duration / 3)

    def add(self, task: Task) -> None:
        interval = self._interval
        if interval is None:
            length = task.lease_seconds or _FALLBACK_LEASE_SECONDS
            interval = min(self._heartbeat, length / 3)
        next_at = time.monotonic() + interval
        self._held[task.id] = _Held(task, interval, next_at)
        if next_at < self._sleep_until:  # only wake the loop if it would sleep past this one
            self._wake.set()

    def remove(self, task_id: str) -> None:
        self._held.pop(task_id, None)

    @property
    def lease_duration(self) -> float | None:
        return self._lease_duration

    async def run(self) -> None:
        """Loop until cancelled."""
        while True:
            now = time.monotonic()
            due = [h for h in self._held.values() if h.next_at <= now]
            if due:
                for start in range(0, len(due), _MAX_BATCH):
                    await self._extend(due[start : start + _MAX_BATCH])
                continue
            wake_at = min((h.next_at for h in self._held.values()), default=now + 1.0)
            self._sleep_until = wake_at
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(wake_at - now, 0.001))
            self._sleep_until = 0.0

    async def _extend(self, held: list[_Held]) -> None:
        try:
            outcomes = await self._send([h.task for h in held])
        except ConveyorError as exc:
            # Once per outage at WARNING; the retries every 0.5 s at DEBUG.
            level = logging.DEBUG if self._is_failing else logging.WARNING
            log.log(level, "extending %d lease(s) failed (retrying): %s", len(held), exc)
            self._is_failing = True
            retry_at = time.monotonic() + 0.5
            for h in held:
                h.next_at = min(retry_at, h.next_at + h.interval)
            return
        if self._is_failing:
            log.info("extending leases works again")
            self._is_failing = False
        now = time.monotonic()
        for h in held:
            h.next_at = now + h.interval
        for outcome in outcomes or ():
            self.handle(outcome)

    def handle(self, outcome: ExtendOutcome) -> None:
        """Act on one extension's outcome: a lost lease or a cancel request."""
        task_id = outcome.task_id
        if task_id not in self._held:
            return
        if isinstance(outcome.error, LeaseLost | NotFound):
            log.warning("task %s: lease lost while running: %s", task_id, outcome.error)
            self.remove(task_id)
            self._on_lost(task_id)
        elif outcome.cancel_requested:
            self._on_cancel(task_id)
