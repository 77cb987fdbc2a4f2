"""The Worker: lease as many tasks as there are idle slots, run handlers, report outcomes."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any, TypeVar

from conveyor import AsyncClient, Client, ConveyorError, Task, TaskFunction
from conveyor.serializer import Encoded, JsonSerializer, Serializer, encode
from conveyor_worker._completer import Completer
from conveyor_worker._context import Context
from conveyor_worker._lease_keeper import LeaseKeeper
from conveyor_worker._outcome import Outcome
from conveyor_worker._registry import Handler
from conveyor_worker._runner import HandlerRun

__all__ = ["Worker"]

log = logging.getLogger("conveyor.worker")
task_log = logging.getLogger("conveyor.worker.task")

F = TypeVar("F", bound=Callable[..., Any])
Seconds = timedelta | float


def _seconds(value: Seconds | None) -> float | None:
    if value is None:
        return None
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


class Worker:
    """Runs handlers for tasks leased from some queues.

    Args:
        target: broker address "host:port".
        queues: queue names, leased from in this order (a "a,b" string works too).
        concurrency: handlers running at once; also how many tasks it leases at most.
        lease_duration: lease asked for; None uses each task's own (30 s default).
        heartbeat: longest gap between lease extensions (cancel requests arrive with them).
        poll_wait: how long one Lease call long-polls when the queues are empty.
        grace_period: on shutdown, how long running handlers may take to finish.
        prefetch: tasks leased beyond the idle slots (0: none wait in a local buffer).
        client_options: Client/AsyncClient keywords (tls, token, ...).
    """

    def __init__(
        self,
        target: str = "127.0.0.1:7470",
        *,
        queues: Sequence[str] | str = ("default",),
        concurrency: int = 8,
        lease_duration: Seconds | None = None,
        heartbeat: Seconds = timedelta(seconds=2),
        poll_wait: Seconds = timedelta(seconds=20),
        grace_period: Seconds = timedelta(seconds=30),
        prefetch: int = 0,
        round_robin: bool = False,
        worker_id: str | None = None,
        serializer: Serializer | None = None,
        client_options: dict[str, Any] | None = None,
    ) -> None:
        self.target = target
        self.queues = (
            [q for q in queues.split(",") if q] if isinstance(queues, str) else list(queues)
        )
        self.concurrency = concurrency
        self.lease_duration = _seconds(lease_duration)
        self.heartbeat = _seconds(heartbeat) or 2.0
        self.poll_wait = _seconds(poll_wait) or 0.0
        self.grace_period = _seconds(grace_period) or 0.0
        self.prefetch = prefetch
        self.round_robin = round_robin
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self.serializer = serializer or JsonSerializer()
        self.client_options = dict(client_options or {})
        self.handlers: dict[str, Handler] = {}
        self._producer: Client | None = None
        self._producer_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._is_stop_requested = False
        self._signals = 0

    # -- registration ----------------------------------------------------------

    def handler(
        self,
        kind: str | None = None,
        *,
        timeout: Seconds | None = None,
        non_retryable: Sequence[type[BaseException]] = (),
        cancel_on_request: bool = True,
        **options: Any,
    ) -> Callable[[Callable[..., Any]], Handler]:
        """Decorator registering `fn(payload, ctx)` (sync or async) for a task kind.

        The returned Handler is still callable and has `.enqueue(payload, **options)`.
        `options` (queue, priority, ...) are defaults for that enqueue.
        """

        def register(fn: Callable[..., Any]) -> Handler:
            return self.register(
                fn,
                kind,
                timeout=timeout,
                non_retryable=non_retryable,
                cancel_on_request=cancel_on_request,
                **options,
            )

        return register

    def register(self, fn: Callable[..., Any], kind: str | None = None, **settings: Any) -> Handler:
        """Register a function or a `conveyor.task` TaskFunction; returns the Handler."""
        options: dict[str, Any] = {}
        if isinstance(fn, TaskFunction):
            kind = kind or fn.kind
            options = dict(fn.options)
            fn = fn.fn
        if kind is None:
            kind = f"{fn.__module__}.{fn.__qualname__}"
        non_retryable = tuple(settings.pop("non_retryable", ()) or ())
        handler = Handler(self, fn, kind, non_retryable=non_retryable, **{**options, **settings})
        self.handlers[kind] = handler
        return handler

    def producer_client(self) -> Client:
        """A blocking client to the same broker, for `handler.enqueue`."""
        with self._producer_lock:
            if self._producer is None:
                self._producer = Client(
                    self.target, serializer=self.serializer, **self.client_options
                )
            return self._producer

    # -- running -----------------------------------------------------------------

    def run(self) -> None:
        """Run until SIGTERM/SIGINT (or `stop()`), then shut down gracefully.

        A second signal exits the process at once (exit code 1).
        """
        asyncio.run(self.run_async(install_signal_handlers=True))

    def stop(self) -> None:
        """Ask a running worker to shut down gracefully; safe from any thread."""
        self._is_stop_requested = True
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            loop.call_soon_threadsafe(stop.set)

    async def run_async(self, *, install_signal_handlers: bool = False) -> None:
        """Run on the current event loop until `stop()`; async handlers share this loop."""
        if not self.queues:
            raise ValueError("a worker needs at least one queue")
        self._stop = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        if self._is_stop_requested:  # stop() came before the loop existed
            self._stop.set()
        if install_signal_handlers and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._loop.add_signal_handler(sig, self._on_signal, sig)
        session = _Session(self)
        try:
            await session.run(self._stop)
        finally:
            if install_signal_handlers and threading.current_thread() is threading.main_thread():
                for sig in (signal.SIGTERM, signal.SIGINT):
                    self._loop.remove_signal_handler(sig)
            self._loop = None
            self._is_stop_requested = False

    def _on_signal(self, sig: signal.Signals) -> None:
        self._signals += 1
        if self._signals > 1:
            log.warning("second %s: exiting at once", sig.name)
            logging.shutdown()
            os._exit(1)
        log.info("%s: shutting down gracefully (grace period %g s)", sig.name, self.grace_period)
        if self._stop is not None:
            self._stop.set()


class _Session:
    """The state of one `run`: client, slots, running handlers, background tasks."""

    def __init__(self, worker: Worker) -> None:
        self.w = worker
        self.client = AsyncClient(
            worker.target, serializer=worker.serializer, **worker.client_options
        )
        self.pool = ThreadPoolExecutor(worker.concurrency, thread_name_prefix="conveyor-handler")
        self.completer = Completer(self.client)
        self.keeper = LeaseKeeper(
            self.client, worker.heartbeat, worker.lease_duration, self._on_cancel, self._on_lost
        )
        self.buffer: deque[Task] = deque()
        self.runs: dict[str, HandlerRun] = {}
        self.jobs: set[asyncio.Task[None]] = set()
        self.busy = 0  # slots taken, including threads still running after a timeout
        self.capacity_changed = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        w = self.w
        log.info(
            "worker %s: queues %s, concurrency %d, kinds %s",
            w.worker_id,
            ",".join(w.queues),
            w.concurrency,
            ",".join(sorted(w.handlers)) or "(none)",
        )
        keeper = asyncio.ensure_future(self.keeper.run())
        leaser = asyncio.ensure_future(self._lease_loop())
        try:
            await stop.wait()
        finally:
            await self._shutdown(leaser, keeper)

    async def _shutdown(self, leaser: asyncio.Task[None], keeper: asyncio.Task[None]) -> None:
        leaser.cancel()
        await asyncio.gather(leaser, return_exceptions=True)
        unstarted = list(self.buffer)
        self.buffer.clear()
        for task in unstarted:
            self.keeper.remove(task.id)
        self.completer.release(unstarted)
        if self.jobs:
            log.info(
                "waiting up to %g s for %d running task(s)", self.w.grace_period, len(self.jobs)
            )
            await asyncio.wait(set(self.jobs), timeout=self.w.grace_period)
        for run in list(self.runs.values()):
            run.abandon()
        if self.jobs:
            await asyncio.wait(set(self.jobs), timeout=5.0)
        await self.completer.flush()
        keeper.cancel()
        await asyncio.gather(keeper, return_exceptions=True)
        await self.client.close()
        self.pool.shutdown(wait=False, cancel_futures=True)
        log.info("worker %s stopped (%d released unstarted)", self.w.worker_id, len(unstarted))

    # -- leasing -------------------------------------------------------------------

    def _free(self) -> int:
        return self.w.concurrency + self.w.prefetch - self.busy - len(self.buffer)

    async def _lease_loop(self) -> None:
        w = self.w
        backoff = 0.2
        while True:
            if self._free() <= 0:
                self.capacity_changed.clear()
                await self.capacity_changed.wait()
                continue
            if self.busy and self._free() < w.concurrency / 2:
                await asyncio.sleep(0.001)  # let completions that arrive together batch up
            try:
                tasks = await self.client.lease(
                    w.queues,
                    min(self._free(), 1000),
                    lease_duration=w.lease_duration,
                    wait=w.poll_wait,
                    worker_id=w.worker_id,
                    round_robin=w.round_robin,
                )
            except ConveyorError as exc:
                log.warning("lease failed (retrying in %.1f s): %s", backoff, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.2
            for task in tasks:
                self.keeper.add(task)
                self.buffer.append(task)
            self._dispatch()

    def _dispatch(self) -> None:
        while self.buffer and self.busy < self.w.concurrency:
            task = self.buffer.popleft()
            self.busy += 1
            job = asyncio.ensure_future(self._execute(task))
            self.jobs.add(job)
            job.add_done_callback(self.jobs.discard)

    # -- one task ------------------------------------------------------------------

    async def _execute(self, task: Task) -> None:
        started = time.monotonic()
        run: HandlerRun | None = None
        try:
            handler = self.w.handlers.get(task.kind)
            if handler is None:
                outcome = self._unknown_kind(task)
            else:
                run, outcome = await self._run_handler(handler, task)
            self.keeper.remove(task.id)
            self.completer.report(task, outcome)
            _log_task(task, outcome, time.monotonic() - started)
            if run is not None and not run.work.done():
                await asyncio.wait({run.work})  # the thread still holds its slot
        except Exception:  # boundary: one task's bug must not stop the worker
            log.exception("task %s: internal error in the worker", task.id)
            self.keeper.remove(task.id)
        finally:
            self.runs.pop(task.id, None)
            self.busy -= 1
            self._dispatch()
            self.capacity_changed.set()

    async def _run_handler(self, handler: Handler, task: Task) -> tuple[HandlerRun | None, Outcome]:
        ctx = Context(task, asyncio.get_running_loop())
        try:
            payload = task.payload
        except Exception as exc:  # undecodable payload: retrying cannot help
            outcome = Outcome.from_exception(exc, ())
            outcome.retryable = False
            return None, outcome
        run = HandlerRun(handler, payload, ctx, self.pool)
        self.runs[task.id] = run
        outcome = await run.outcome()
        if outcome.action == "ack":
            try:
                data, content_type = encode(self.w.serializer, outcome.result)
            except Exception as exc:  # a result the serializer cannot hold
                outcome = Outcome.from_exception(exc, ())
                outcome.retryable = False
            else:
                outcome.result = Encoded(data, content_type)
        return run, outcome

    def _unknown_kind(self, task: Task) -> Outcome:
        known = ", ".join(sorted(self.w.handlers)) or "none"
        return Outcome(
            "fail",
            error_type="UnknownKind",
            message=f"no handler for kind {task.kind!r} on worker {self.w.worker_id} "
            f"(it handles: {known})",
            retryable=False,
        )

    def _on_cancel(self, task_id: str) -> None:
        run = self.runs.get(task_id)
        if run is not None and not run.ctx.is_cancel_requested:
            log.info("task %s: cancel requested", task_id)
            run.request_cancel()

    def _on_lost(self, task_id: str) -> None:
        run = self.runs.get(task_id)
        if run is not None:
            run.abandon(is_lease_lost=True)


def _log_task(task: Task, outcome: Outcome, duration: float) -> None:
    level = logging.INFO if outcome.action == "ack" else logging.WARNING
    if not task_log.isEnabledFor(level):
        return
    error = f" error={outcome.error_type}: {outcome.message}" if outcome.action == "fail" else ""
    task_log.log(
        level,
        "task %s kind=%s attempt=%d duration=%.3fs outcome=%s%s",
        task.id,
        task.kind,
        task.attempt,
        duration,
        outcome.label,
        error,
        extra={
            "task_id": task.id,
            "kind": task.kind,
            "queue": task.queue,
            "attempt": task.attempt,
            "duration": duration,
            "outcome": outcome.label,
        },
    )
