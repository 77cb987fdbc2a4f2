"""The one timer task: sleeps until the next due time, then applies Broker.tick().

Due times are delayed tasks becoming READY, leases running out, deadlines and
retention. Writes that may create an earlier due time call `poke(when)`. Over a shared
store it also re-reads which queues have limits or keyed tasks (Broker.refresh_flows).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from conveyor_server.core.broker import Broker
from conveyor_server.core.model import TickOutcome
from conveyor_server.service.background import BackgroundLoop
from conveyor_server.service.settle import settle

log = logging.getLogger(__name__)


#: Longest sleep of the timer over a store other brokers write too (Store.is_shared).
SHARED_STORE_POLL = 0.5


class TaskTimer:
    def __init__(self, broker: Broker, on_tick: Callable[[TickOutcome], None]) -> None:
        self._broker = broker
        self._on_tick = on_tick
        self._target: float | None = None
        self._flows_read_at = time.monotonic()  # the broker read them when it was made
        self._loop = BackgroundLoop("task-timer", self._step, log)

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    def poke(self, when: float | None) -> None:
        """Something is due at `when`: wake early if that is before the current target."""
        if when is not None and (self._target is None or when < self._target):
            self._target = when
            self._loop.wake()

    async def _step(self) -> float | None:
        if self._broker.store.is_shared and time.monotonic() - self._flows_read_at >= (
            SHARED_STORE_POLL
        ):
            # Limits set and keyed tasks enqueued through other brokers (the lease write
            # reads a queue's stored limits itself; this says which queues to look at).
            self._flows_read_at = time.monotonic()
            self._broker.refresh_flows()
        due = self._broker.next_due_time()
        now = self._broker.clock.now()
        if due is not None and due <= now:
            outcome = await settle(self._broker.tick())
            self._on_tick(outcome)
            if outcome.is_more_due:
                return 0  # let RPCs in between large catch-ups
            if not (outcome.ready_queues or outcome.finished or outcome.removed):
                return 0.001  # nothing changed: never spin
            return 0
        self._target = due
        wait = None if due is None else max(due - now, 0.001)
        if self._broker.store.is_shared:
            # Other brokers add due times this timer never hears of: look again at least
            # every SHARED_STORE_POLL seconds. A store only this process writes: unchanged.
            wait = SHARED_STORE_POLL if wait is None else min(wait, SHARED_STORE_POLL)
        return wait
