"""BackgroundLoop: the one shape of the broker's background work (timer, cron, schedules file).

A task runs `step()` again and again until stopped. `step` returns how long to
wait before the next step (None: until woken, 0: just yield to other work);
`wake()` ends the wait early. An error in a step is logged once with its
traceback and the loop goes on after a pause: a background loop that died
would silently stop delayed tasks, lease expiry or cron.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

#: Wait after a failed step before trying again.
RETRY_SECONDS = 1.0


class BackgroundLoop:
    def __init__(
        self, name: str, step: Callable[[], Awaitable[float | None]], log: logging.Logger
    ) -> None:
        self._name = name
        self._step = step
        self._log = log
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=self._name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def wake(self) -> None:
        """End the current wait now (a change the step should look at)."""
        self._wake.set()

    async def _run(self) -> None:
        while True:
            self._wake.clear()  # before the step: a wake() during it is not lost
            try:
                delay = await self._step()
            except asyncio.CancelledError:
                raise
            except Exception:  # the boundary: log once, keep the loop alive
                self._log.exception("%s pass failed; retrying in %g s", self._name, RETRY_SECONDS)
                delay = RETRY_SECONDS
            if delay == 0:
                await asyncio.sleep(0)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)
