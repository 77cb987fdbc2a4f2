"""Runs one handler call, sync (thread pool) or async (the loop), within its timeout.

No coroutine or asyncio.Task is made per sync handler call: the call goes to a
`HandlerPool` thread and its completion comes back as a callback, and
completions that finish close together share one wake-up of the event loop.
That is most of a no-op task's cost on the worker (see docs/worker.md).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from collections import deque
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any

from conveyor_worker._context import Context
from conveyor_worker._outcome import Outcome
from conveyor_worker._registry import Handler

__all__ = ["HandlerPool", "HandlerRun"]

log = logging.getLogger("conveyor.worker")

#: Completions handled per loop turn. The outcomes (and the credits they free)
#: leave between turns, so the broker records and leases while the worker still
#: works through a big batch instead of both taking turns (measured on 2 cores).
_DELIVER_BATCH = 128

_Done = Callable[[Any, BaseException | None], None]
_Completion = tuple[_Done, Any, BaseException | None]


class HandlerPool:
    """`size` daemon threads running sync handlers; completions are batched to the loop.

    A thread appends its result to a shared deque and wakes the loop only if no
    wake-up is pending, so a burst of completions costs one wake-up, not one each.
    Threads are daemons: a handler still stuck after shutdown does not keep the
    process alive (its task was released).
    """

    def __init__(self, size: int, loop: asyncio.AbstractEventLoop, name: str) -> None:
        self._loop = loop
        self._jobs: SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...], _Done] | None] = (
            SimpleQueue()
        )
        self._done: deque[_Completion] = deque()
        self._is_wake_pending = False
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}_{i}", daemon=True)
            for i in range(max(size, 1))
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[..., Any], args: tuple[Any, ...], done: _Done) -> None:
        """Run fn(*args) (in a copy of the caller's contextvars); then done(result, exc)."""
        context = contextvars.copy_context()
        self._jobs.put((context.run, (fn, *args), done))

    def run_inline(self, fn: Callable[..., Any], args: tuple[Any, ...], done: _Done) -> None:
        """Run fn(*args) now, on the loop; done(result, exc) follows with the next delivery.

        Deferred rather than called at once, so that a burst of inline handlers does not
        recurse (a finished handler frees a slot, which starts the next one).
        """
        item: _Completion
        try:
            item = (done, fn(*args), None)
        except BaseException as exc:  # reported as the handler's outcome
            item = (done, None, exc)
        self._done.append(item)
        if not self._is_wake_pending:
            self._is_wake_pending = True
            self._loop.call_soon(self._deliver)

    def shutdown(self) -> None:
        """Let idle threads exit; busy ones exit after their call."""
        for _ in self._threads:
            self._jobs.put(None)

    def _work(self) -> None:
        jobs, done = self._jobs, self._done
        while (job := jobs.get()) is not None:
            call, args, callback = job
            item: _Completion
            try:
                item = (callback, call(*args), None)
            except BaseException as exc:  # reported as the handler's outcome
                item = (callback, None, exc)
            del job, call, args, callback
            done.append(item)
            del item
            if not self._is_wake_pending:
                self._is_wake_pending = True
                try:
                    self._loop.call_soon_threadsafe(self._deliver)
                except RuntimeError:  # the loop is closed: the worker is gone
                    return

    def _deliver(self) -> None:
        self._is_wake_pending = False  # before draining: a later append wakes us again
        done = self._done
        for _ in range(_DELIVER_BATCH):
            if not done:
                return
            callback, result, exc = done.popleft()
            try:
                callback(result, exc)
            except Exception:  # boundary: the next completions must still be delivered
                log.exception("internal error delivering a handler's outcome")
        if done and not self._is_wake_pending:  # let the outcomes so far leave first
            self._is_wake_pending = True
            self._loop.call_soon(self._deliver)


class HandlerRun:
    """One attempt of one task. `on_outcome(run, outcome)` is called once, when it is known.

    `on_idle(run)` follows when the handler has really stopped: a sync handler's
    thread may still run after a timeout or shutdown, and the worker keeps that
    slot busy until it ends, so no task waits for a thread behind a stuck one.
    """

    __slots__ = (
        "_loop",
        "_on_idle",
        "_on_outcome",
        "_timer",
        "ctx",
        "exception",
        "handler",
        "is_done",
        "is_reported",
        "result",
        "started",
        "task",
    )

    def __init__(
        self,
        handler: Handler,
        ctx: Context,
        loop: asyncio.AbstractEventLoop,
        on_outcome: Callable[[HandlerRun, Outcome], None],
        on_idle: Callable[[HandlerRun], None],
    ) -> None:
        self.handler = handler
        self.ctx = ctx
        self._loop = loop
        self._on_outcome = on_outcome
        self._on_idle = on_idle
        self.is_done = False  # the handler returned or raised (or was cancelled)
        self.is_reported = False
        self.result: Any = None
        self.exception: BaseException | None = None
        self.task: asyncio.Future[Any] | None = None  # async handlers only
        self._timer: asyncio.TimerHandle | None = None
        self.started = 0.0  # time.monotonic() when the worker took it up

    def start(self, payload: Any, pool: HandlerPool) -> None:
        handler = self.handler
        args = (payload, self.ctx) if handler.takes_context else (payload,)
        if handler.timeout_seconds is not None:
            self._timer = self._loop.call_later(handler.timeout_seconds, self._time_out)
        if handler.is_async:
            self.task = asyncio.ensure_future(handler.fn(*args))
            self.task.add_done_callback(self._async_done)
        elif handler.inline:
            pool.run_inline(handler.fn, args, self._sync_done)
        else:
            pool.submit(handler.fn, args, self._sync_done)

    def fail_to_start(self, exc: BaseException) -> None:
        """Calling the handler raised before it ran: report that as its outcome."""
        self.exception = exc
        self._done()

    # -- events ----------------------------------------------------------------------

    def _sync_done(self, result: Any, exc: BaseException | None) -> None:
        self.result, self.exception = result, exc
        self._done()

    def _async_done(self, task: asyncio.Future[Any]) -> None:
        if task.cancelled():
            self.exception = asyncio.CancelledError()
        else:
            self.exception = task.exception()
            if self.exception is None:
                self.result = task.result()
        self._done()

    def _done(self) -> None:
        self.is_done = True
        if self._timer is not None:
            self._timer.cancel()
        if not self.is_reported:
            self._report(self._finished())
        self._on_idle(self)

    def _time_out(self) -> None:
        if self.is_done or self.is_reported:
            return
        self.ctx._set()
        if self.task is not None:
            self.task.cancel()
        self._report(
            Outcome(
                "fail",
                error_type="HandlerTimeout",
                message=f"handler {self.handler.kind!r} ran past its timeout of "
                f"{self.handler.timeout_seconds:g} s",
            )
        )

    def _report(self, outcome: Outcome) -> None:
        self.is_reported = True
        self._on_outcome(self, outcome)

    # -- requests from the worker --------------------------------------------------------

    def request_cancel(self) -> None:
        """A producer cancelled the task: tell the handler; cancel an async one."""
        self.ctx.is_cancel_requested = True
        self.ctx._set()
        if self.task is not None and self.handler.cancel_on_request:
            self.task.cancel()

    def abandon(self, *, is_lease_lost: bool = False) -> None:
        """Stop waiting for the handler (lease lost, or shutdown grace over)."""
        if is_lease_lost:
            self.ctx.is_lease_lost = True
        else:
            self.ctx.is_shutting_down = True
        self.ctx._set()
        if self.task is not None:
            self.task.cancel()
        if not self.is_done and not self.is_reported:
            if self._timer is not None:
                self._timer.cancel()
            self._report(Outcome("drop" if is_lease_lost else "release"))

    def _finished(self) -> Outcome:
        ctx = self.ctx
        exc = self.exception
        if isinstance(exc, asyncio.CancelledError):
            if ctx.is_lease_lost:
                return Outcome("drop")
            if ctx.is_shutting_down:
                return Outcome("release")
            return Outcome.cancelled()
        if exc is not None:
            if ctx.is_lease_lost:
                return Outcome("drop")
            return Outcome.from_exception(exc, self.handler.non_retryable)
        if ctx.is_cancel_requested:
            return Outcome.cancelled("cancel requested while running; the result was dropped")
        if ctx.is_lease_lost:
            return Outcome("drop")
        return Outcome.succeeded(self.result)
