"""What a handler learns about its task (`ctx`), and how a cancel request reaches it."""

from __future__ import annotations

import asyncio
import threading
from datetime import datetime

from conveyor import Task
from conveyor_worker._errors import Cancelled

__all__ = ["Context"]

_MAKE_LOCK = threading.Lock()


class Context:
    """Passed to handlers as `ctx`: task id, attempt, headers, and the cancel flag.

    The cancel flag is set when a producer cancels the task while it runs (the lease
    keeper learns it from ExtendLease), when the handler's timeout passes, or when the
    worker's shutdown grace period ends. Sync handlers poll `ctx.is_cancelled` or block
    in `ctx.wait_for_cancel(timeout)`; async handlers `await ctx.wait_cancelled()`.
    """

    __slots__ = (
        "_cancelled",
        "_event",
        "_flag",
        "_loop",
        "is_cancel_requested",
        "is_lease_lost",
        "is_shutting_down",
        "task",
    )

    def __init__(self, task: Task, loop: asyncio.AbstractEventLoop) -> None:
        self.task = task
        self._loop = loop
        # The events are made on first use: most handlers never wait for a cancel.
        self._cancelled = False
        self._flag: threading.Event | None = None
        self._event: asyncio.Event | None = None
        self.is_cancel_requested = False
        self.is_lease_lost = False
        self.is_shutting_down = False

    @property
    def task_id(self) -> str:
        return self.task.id

    @property
    def kind(self) -> str:
        return self.task.kind

    @property
    def queue(self) -> str:
        return self.task.queue

    @property
    def attempt(self) -> int:
        """1 for the first attempt."""
        return self.task.attempt

    @property
    def max_attempts(self) -> int:
        return self.task.max_attempts

    @property
    def is_last_attempt(self) -> bool:
        return self.task.attempt >= self.task.max_attempts

    @property
    def headers(self) -> dict[str, str]:
        return self.task.headers

    @property
    def lease_expires_at(self) -> datetime | None:
        return self.task.lease_expires_at

    @property
    def is_cancelled(self) -> bool:
        """True once the handler should stop (cancel request, timeout, lost lease, shutdown)."""
        return self._cancelled

    #: Alias of is_cancelled, for `if ctx.cancelled:`.
    cancelled = is_cancelled

    def wait_for_cancel(self, timeout: float | None = None) -> bool:
        """Block (in a sync handler) until cancelled or timeout; True if cancelled."""
        flag = self._flag
        if flag is None:
            with _MAKE_LOCK:
                flag = self._flag
                if flag is None:
                    flag = self._flag = threading.Event()
            # _set() stores the bool before it looks for the event, so one of us sets it.
            if self._cancelled:
                flag.set()
        return flag.wait(timeout)

    async def wait_cancelled(self) -> None:
        """Return (in an async handler) once the task is cancelled."""
        if self._cancelled:
            return
        if self._event is None:
            self._event = asyncio.Event()
        await self._event.wait()

    def raise_if_cancelled(self) -> None:
        """Raise Cancelled if the handler should stop; the task then ends CANCELLED.

        Raises:
            Cancelled: the task was cancelled.
        """
        if self._cancelled:
            raise Cancelled(f"task {self.task_id!r} was cancelled")

    def _set(self) -> None:
        """Raise the flag; called on the worker's event loop."""
        self._cancelled = True
        flag = self._flag
        if flag is not None:
            flag.set()
        if self._event is not None:
            self._event.set()
