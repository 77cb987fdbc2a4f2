"""CronScheduler: the async loop that fires schedules on time, and the async face of ScheduleBook.

The loop sleeps until the earliest next fire time in the store (no polling) and is
woken early by any change to a schedule. Each pass is one store write
(`ScheduleBook.fire_due`); the tasks it created are handed to the engine so that
parked Lease calls wake and the task timer learns about delayed (jittered) tasks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from conveyor_server.core.model import Task
from conveyor_server.core.schedules.book import (
    FireOutcome,
    ReconcileOutcome,
    ScheduleBook,
    TriggerOutcome,
)
from conveyor_server.core.schedules.model import Schedule, ScheduleSource
from conveyor_server.service.background import BackgroundLoop
from conveyor_server.service.metrics.schedules import ScheduleMetrics
from conveyor_server.service.settle import settle

log = logging.getLogger("conveyor.schedules")


class CronScheduler:
    """Runs the fire loop; every schedule change goes through here so the loop hears of it."""

    def __init__(
        self,
        book: ScheduleBook,
        on_tasks: Callable[[Sequence[Task]], None],
        metrics: ScheduleMetrics | None = None,
    ) -> None:
        self.book = book
        self._on_tasks = on_tasks
        self._metrics = metrics
        self._loop = BackgroundLoop("cron-scheduler", self._step, log)
        self.online_since: float | None = None

    def start(self) -> None:
        """Start firing. Ticks up to now fell while the broker was down: misfires."""
        self.online_since = self.book.clock.now()
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    def poke(self) -> None:
        """A schedule changed: look at the next due time again."""
        self._loop.wake()

    # -- the loop ------------------------------------------------------------

    async def _step(self) -> float | None:
        due = self.book.next_due_time()
        now = self.book.clock.now()
        if due is not None and due <= now:
            assert self.online_since is not None
            outcome = await settle(self.book.fire_due(self.online_since))
            self._after_fire(outcome)
            return 0  # let RPCs in between catch-up passes
        return None if due is None else due - now

    def _after_fire(self, outcome: FireOutcome) -> None:
        if self._metrics is not None:
            self._metrics.fired(outcome)
        if outcome.tasks:
            self._on_tasks(outcome.tasks)
        if outcome.misfires_skipped:
            log.info("dropped %d tick(s) missed while down", outcome.misfires_skipped)

    # -- operations (each one store write, then a poke) ------------------------
    # The poke rides on the write (settle's `then`): it must happen even if the RPC that
    # asked for the change is cancelled after the commit, or the loop sleeps on until
    # something else wakes it.

    def _poke_after(self, _: object) -> None:
        self.poke()

    async def create(self, schedule: Schedule, upsert: bool) -> tuple[Schedule, bool]:
        return await settle(self.book.create(schedule, upsert=upsert), self._poke_after)

    def get(self, name: str) -> Schedule:
        return self.book.get(name)

    def list(self, source: ScheduleSource | None) -> list[Schedule]:
        return self.book.list(source)

    async def update(self, schedule: Schedule, fields: Sequence[str] | None) -> Schedule:
        return await settle(self.book.update(schedule, fields), self._poke_after)

    async def delete(self, name: str) -> None:
        await settle(self.book.delete(name), self._poke_after)

    async def pause(self, name: str) -> Schedule:
        return await settle(self.book.pause(name), self._poke_after)

    async def resume(self, name: str) -> Schedule:
        return await settle(self.book.resume(name), self._poke_after)

    async def trigger(self, name: str) -> TriggerOutcome:
        return await settle(self.book.trigger(name), lambda fired: self._on_tasks([fired.task]))

    async def reconcile(self, declared: Sequence[Schedule]) -> ReconcileOutcome:
        return await settle(self.book.reconcile(declared), self._poke_after)
