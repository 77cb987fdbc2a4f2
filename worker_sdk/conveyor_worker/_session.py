"""One `Worker.run`: slots, running handlers, the lease keeper; the unary transport.

`Session` runs tasks whatever brought them; its subclasses bring tasks and carry
outcomes: `UnarySession` with Lease/Ack/Fail/Release/ExtendLease calls, and
`StreamSession` (in `_streaming`) on one StreamWork stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

from conveyor import AsyncClient, ConveyorError, ExtendOutcome, Task
from conveyor.errors import InvalidArgument, PermissionDenied, Unauthenticated
from conveyor.serializer import Encoded, encode
from conveyor_worker._completer import Completer
from conveyor_worker._context import Context
from conveyor_worker._lease_keeper import LeaseKeeper
from conveyor_worker._outcome import Outcome, payload_undecodable
from conveyor_worker._runner import HandlerPool, HandlerRun

if TYPE_CHECKING:
    from conveyor_worker._worker import Worker

__all__ = ["PERMANENT_REFUSALS", "Session", "UnarySession"]

log = logging.getLogger("conveyor.worker")
task_log = logging.getLogger("conveyor.worker.task")

#: Answers to Lease or StreamWork that retrying cannot change (a bad queue name, a
#: max_tasks over the broker's --max-batch, a wrong token): the worker stops with them.
PERMANENT_REFUSALS = (InvalidArgument, Unauthenticated, PermissionDenied)


class Session:
    """Runs handlers for the tasks a transport brings, within `concurrency` slots."""

    transport = "?"

    def __init__(self, worker: Worker, client: AsyncClient, pool: HandlerPool) -> None:
        self.w = worker
        self.client = client
        self.pool = pool
        self.keeper = LeaseKeeper(
            self._send_extensions,
            worker.heartbeat,
            worker.lease_duration,
            self._on_cancel,
            self._on_lost,
        )
        self.buffer: deque[Task] = deque()
        #: Most tasks held at once: the slots plus the prefetch (fixed for the run).
        self.capacity = worker.concurrency + worker.prefetch
        self.runs: dict[str, HandlerRun] = {}
        self.busy = 0  # slots taken, including threads still running after a timeout
        self._is_dispatching = False
        self._idle = asyncio.Event()
        self.loop = asyncio.get_running_loop()
        self.is_stopping = False
        self.released_unstarted = 0
        #: Set when the broker refused to hand out tasks for good; Worker.run raises it.
        self.refusal: ConveyorError | None = None

    # -- what a transport provides ---------------------------------------------------

    async def run(self, stop: asyncio.Event) -> bool:
        """Work until `stop` is set, then shut down. True asks for the unary transport."""
        raise NotImplementedError

    def report(self, task: Task, outcome: Outcome) -> None:
        """Send an outcome (ack, fail, release); never blocks."""
        raise NotImplementedError

    def slot_freed(self) -> None:
        """A slot became idle: ask for another task."""

    async def _send_extensions(self, tasks: list[Task]) -> Sequence[ExtendOutcome] | None:
        raise NotImplementedError

    # -- shared ------------------------------------------------------------------------

    def free_slots(self) -> int:
        """Tasks to lease now: idle slots plus the prefetch, less what the buffer holds."""
        return self.capacity - self.busy - len(self.buffer)

    def log_start(self) -> None:
        w = self.w
        log.info(
            "worker %s: queues %s, concurrency %d, prefetch %d, kinds %s, transport %s",
            w.worker_id,
            ",".join(w.queues),
            w.concurrency,
            self.capacity - w.concurrency,
            ",".join(sorted(w.handlers)) or "(none)",
            self.transport,
        )

    def accept(self, tasks: Sequence[Task]) -> None:
        """Tasks just leased: hold their leases and start as many as there are idle slots."""
        keeper = self.keeper
        for task in tasks:
            keeper.add(task)
        self.buffer.extend(tasks)
        self.dispatch()

    def dispatch(self) -> None:
        """Start buffered tasks while slots are free. Not re-entered: a task that ends
        without running (unknown kind, bad payload) frees its slot inside `_start`, and
        the loop below takes the next one instead of a nested call per task."""
        if self._is_dispatching:
            return
        self._is_dispatching = True
        try:
            buffer = self.buffer
            concurrency = self.w.concurrency
            while buffer and self.busy < concurrency:
                self.busy += 1
                self._start(buffer.popleft())
        finally:
            self._is_dispatching = False

    def take_unstarted(self) -> list[Task]:
        """Empty the buffer (shutdown): its tasks never started, so they are released."""
        unstarted = list(self.buffer)
        self.buffer.clear()
        for task in unstarted:
            self.keeper.remove(task.id)
        self.released_unstarted += len(unstarted)
        return unstarted

    async def finish_running(self) -> None:
        """Let running handlers finish within the grace period; then abandon them."""
        if self.busy:
            log.info("waiting up to %g s for %d running task(s)", self.w.grace_period, self.busy)
            await self._wait_idle(self.w.grace_period)
        for run in list(self.runs.values()):
            run.abandon()
        await self._wait_idle(5.0)  # threads still running after the grace period

    async def _wait_idle(self, timeout: float) -> None:
        if self.busy <= 0:
            return
        self._idle.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)

    # -- one task (callbacks, no coroutine per task) ---------------------------------------

    def _start(self, task: Task) -> None:
        started = time.monotonic()
        handler = self.w.handlers.get(task.kind)
        if handler is None:
            self._outcome_without_run(task, self._unknown_kind(task), started)
            return
        try:
            payload = task.payload
        except Exception as exc:  # undecodable payload: retrying cannot help
            self._outcome_without_run(task, payload_undecodable(task, exc), started)
            return
        run = HandlerRun(
            handler, Context(task, self.loop), self.loop, self._on_outcome, self._idle_run
        )
        run.started = started
        self.runs[task.id] = run
        try:
            run.start(payload, self.pool)
        except Exception as exc:  # e.g. calling the handler failed before it ran
            run.fail_to_start(exc)

    def _outcome_without_run(self, task: Task, outcome: Outcome, started: float) -> None:
        try:
            self._finish(task, outcome, started)
        finally:
            self._slot_idle()

    def _on_outcome(self, run: HandlerRun, outcome: Outcome) -> None:
        task = run.ctx.task
        try:
            if outcome.action == "ack":
                try:
                    data, content_type = encode(self.w.serializer, outcome.result)
                except Exception as exc:  # a result the serializer cannot hold
                    outcome = Outcome.from_exception(exc, ())
                    outcome.retryable = False
                else:
                    outcome.result = Encoded(data, content_type)
            self._finish(task, outcome, run.started)
        except Exception:  # boundary: one task's bug must not stop the worker
            log.exception("task %s: internal error in the worker", task.id)
            self.keeper.remove(task.id)

    def _finish(self, task: Task, outcome: Outcome, started: float) -> None:
        self.keeper.remove(task.id)
        self.report(task, outcome)
        log_task(task, outcome, started)

    def _idle_run(self, run: HandlerRun) -> None:
        self.runs.pop(run.ctx.task.id, None)
        self._slot_idle()

    def _slot_idle(self) -> None:
        self.busy -= 1
        if self.busy <= 0:
            self._idle.set()
        self.dispatch()
        self.slot_freed()

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
            return
        # Still in the buffer: another attempt owns it now, so it must never start here.
        for task in self.buffer:
            if task.id == task_id:
                self.buffer.remove(task)
                self.slot_freed()
                return


class UnarySession(Session):
    """Lease calls (long-polling when idle) and batched Ack/Fail/Release/ExtendLease calls."""

    transport = "unary"

    def __init__(self, worker: Worker, client: AsyncClient, pool: HandlerPool) -> None:
        super().__init__(worker, client, pool)
        self.completer = Completer(client)
        self.capacity_changed = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> bool:
        self.log_start()
        keeper = asyncio.ensure_future(self.keeper.run())
        leaser = asyncio.ensure_future(self._lease_loop())
        stopped = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({leaser, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.is_stopping = True
            stopped.cancel()
            leaser.cancel()
            await asyncio.gather(leaser, return_exceptions=True)
            self.completer.release(self.take_unstarted())
            await self.finish_running()
            await self.completer.flush()
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
        return False

    def report(self, task: Task, outcome: Outcome) -> None:
        self.completer.report(task, outcome)

    def slot_freed(self) -> None:
        self.capacity_changed.set()

    async def _send_extensions(self, tasks: list[Task]) -> Sequence[ExtendOutcome] | None:
        return await self.client.extend_many(tasks, lease_duration=self.keeper.lease_duration)

    async def _lease_loop(self) -> None:
        w = self.w
        backoff = 0.2
        while True:
            if self.free_slots() <= 0:
                self.capacity_changed.clear()
                await self.capacity_changed.wait()
                continue
            if self.busy and self.free_slots() < w.concurrency / 2:
                await asyncio.sleep(0.001)  # let completions that arrive together batch up
            try:
                tasks = await self.client.lease(
                    w.queues,
                    min(self.free_slots(), 1000),
                    lease_duration=w.lease_duration,
                    wait=w.poll_wait,
                    worker_id=w.worker_id,
                    round_robin=w.round_robin,
                )
            except PERMANENT_REFUSALS as exc:
                log.error("the broker refused to lease tasks: %s", exc)
                self.refusal = exc
                return
            except ConveyorError as exc:
                log.warning("lease failed (retrying in %.1f s): %s", backoff, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.2
            self.accept(tasks)


def log_task(task: Task, outcome: Outcome, started: float) -> None:
    """The per-task log line: INFO for successes, WARNING for everything else."""
    level = logging.INFO if outcome.action == "ack" else logging.WARNING
    if not task_log.isEnabledFor(level):
        return
    duration = time.monotonic() - started
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
