"""The one timer task: sleeps until the next due time, then applies Broker.tick().

Due times are delayed tasks becoming READY, leases running out, deadlines and
retention. Writes that may create an earlier due time call `poke(when)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from conveyor_server.core.broker import Broker
from conveyor_server.core.model import TickOutcome
from conveyor_server.service.settle import settle

log = logging.getLogger(__name__)


class TaskTimer:
    def __init__(self, broker: Broker, on_tick: Callable[[TickOutcome], None]) -> None:
        self._broker = broker
        self._on_tick = on_tick
        self._target: float | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="task-timer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def poke(self, when: float | None) -> None:
        """Something is due at `when`: wake early if that is before the current target."""
        if when is not None and (self._target is None or when < self._target):
            self._target = when
            self._wake.set()

    async def _run(self) -> None:
        while True:
            try:
                await self._step()
            except asyncio.CancelledError:
                raise
            except Exception:  # the boundary: log once, keep the timer alive
                log.exception("timer pass failed; retrying in 1 s")
                await asyncio.sleep(1.0)

    async def _step(self) -> None:
        due = self._broker.next_due_time()
        now = self._broker.clock.now()
        if due is not None and due <= now:
            outcome = await settle(self._broker.tick())
            self._on_tick(outcome)
            if outcome.is_more_due:
                await asyncio.sleep(0)  # let RPCs in between large catch-ups
            elif not (outcome.ready_queues or outcome.finished or outcome.removed):
                await asyncio.sleep(0.001)  # nothing changed: never spin
            return
        self._target = due
        self._wake.clear()
        timeout = None if due is None else max(due - now, 0.001)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)
