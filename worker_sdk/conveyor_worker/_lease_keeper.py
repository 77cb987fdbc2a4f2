"""Keeps the leases of running tasks alive with batched ExtendLease calls.

Each lease is extended every min(heartbeat, lease length / 3), so two heartbeats
can be lost before it expires. The answer also carries cancel requests, so the
heartbeat is how a producer's cancel reaches a running handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from conveyor import AsyncClient, ConveyorError, LeaseLost, Task
from conveyor.errors import NotFound

log = logging.getLogger("conveyor.worker")

__all__ = ["LeaseKeeper"]

_FALLBACK_LEASE_SECONDS = 30.0
_MAX_BATCH = 1000


@dataclass(slots=True)
class _Held:
    task: Task
    interval: float
    next_at: float


class LeaseKeeper:
    """Extends held leases in the background; reports cancels and lost leases."""

    def __init__(
        self,
        client: AsyncClient,
        heartbeat: float,
        lease_duration: float | None,
        on_cancel: Callable[[str], None],
        on_lost: Callable[[str], None],
    ) -> None:
        self._client = client
        self._heartbeat = heartbeat
        self._lease_duration = lease_duration
        self._on_cancel = on_cancel
        self._on_lost = on_lost
        self._held: dict[str, _Held] = {}
        self._wake = asyncio.Event()

    def add(self, task: Task) -> None:
        length = _FALLBACK_LEASE_SECONDS
        if task.lease_expires_at is not None and task.leased_at is not None:
            length = (task.lease_expires_at - task.leased_at).total_seconds() or length
        interval = min(self._heartbeat, length / 3)
        self._held[task.id] = _Held(task, interval, time.monotonic() + interval)
        self._wake.set()

    def remove(self, task_id: str) -> None:
        self._held.pop(task_id, None)

    async def run(self) -> None:
        """Loop until cancelled."""
        while True:
            now = time.monotonic()
            due = [h for h in self._held.values() if h.next_at <= now]
            if due:
                for start in range(0, len(due), _MAX_BATCH):
                    await self._extend(due[start : start + _MAX_BATCH])
                continue
            sleep = min((h.next_at for h in self._held.values()), default=now + 1.0) - now
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(sleep, 0.001))

    async def _extend(self, held: list[_Held]) -> None:
        try:
            outcomes = await self._client.extend_many(
                [h.task for h in held], lease_duration=self._lease_duration
            )
        except ConveyorError as exc:
            log.warning("extending %d lease(s) failed: %s", len(held), exc)
            retry_at = time.monotonic() + 0.5
            for h in held:
                h.next_at = min(retry_at, h.next_at + h.interval)
            return
        now = time.monotonic()
        for h, outcome in zip(held, outcomes, strict=False):
            task_id = h.task.id
            if task_id not in self._held:
                continue
            if isinstance(outcome.error, LeaseLost | NotFound):
                log.warning("task %s: lease lost while running: %s", task_id, outcome.error)
                self.remove(task_id)
                self._on_lost(task_id)
                continue
            h.next_at = now + h.interval
            if outcome.cancel_requested:
                self._on_cancel(task_id)
