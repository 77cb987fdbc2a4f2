"""The worker on one StreamWork stream: credits for idle slots, outcomes on the stream.

- Credits. The first message grants `concurrency + prefetch` credits; each slot
  that frees grants one more. Grants made in one event-loop turn travel in one
  message with the acks and failures of that turn, so the worker never holds
  more leases than it has idle slots (plus `prefetch`).
- Outcomes. Each ack/fail/release is remembered until its outcome comes back.
  A rejected one (LeaseLost: another attempt owns the task) is logged, not fatal.
- Reconnect. When the stream breaks (broker restart, network), running handlers
  carry on; the stream is reopened with backoff, the outcomes not yet answered
  are sent again on the new one (the broker checks their fencing tokens), and
  credits are granted afresh for the idle slots. Tasks pushed into the broken
  stream come back when their leases run out.
- Shutdown. No more credits; tasks pushed but not started are released; running
  handlers finish within the grace period (a stream that breaks meanwhile is
  reopened without credits, so their outcomes and heartbeats still flow); the
  stream is half-closed and read
  to its end, so every outcome is answered; tasks still arriving then (credits
  the broker had not used) and anything left unanswered go by the unary calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from conveyor import AsyncClient, ConveyorError, ExtendOutcome, LeaseLost, Task, WorkStream
from conveyor.errors import Unimplemented
from conveyor_worker._completer import Completer
from conveyor_worker._outcome import Outcome, result_refused
from conveyor_worker._runner import HandlerPool
from conveyor_worker._session import PERMANENT_REFUSALS, Session

if TYPE_CHECKING:
    from conveyor_worker._worker import Worker

__all__ = ["StreamSession"]

log = logging.getLogger("conveyor.worker")

_FIRST_BACKOFF = 0.2
_MAX_BACKOFF = 5.0
_CLOSE_SECONDS = 10.0
#: While tasks wait in the local buffer (the broker is not what the worker waits for),
#: outcomes and credits are held up to this long or this many, so that the broker gets a
#: few large messages instead of one per event-loop turn (its cost per message is paid per
#: message, not per task). With the buffer empty they go at once: latency is unchanged.
HOLD_SECONDS = 0.002
HOLD_ITEMS = 64


class StreamSession(Session):
    """Tasks and outcomes on StreamWork, reopened when it breaks."""

    transport = "stream"

    def __init__(self, worker: Worker, client: AsyncClient, pool: HandlerPool) -> None:
        super().__init__(worker, client, pool)
        self.stream: WorkStream | None = None
        self.granted = 0  # credits granted on the current stream and not used yet
        # Outcomes sent (or waiting for a stream) whose answer has not come back.
        self.unanswered: dict[str, tuple[Task, Outcome]] = {}
        self.resent: set[str] = set()
        self.is_closing = False
        self.has_connected = False
        self.late: list[Task] = []  # pushed after the stream was half-closed
        self.held: list[tuple[Task, Outcome]] = []  # outcomes not yet on the stream (HOLD_*)
        self._hold_timer: asyncio.TimerHandle | None = None

    # -- the stream ----------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> bool:
        keeper = asyncio.ensure_future(self.keeper.run())
        pump = asyncio.ensure_future(self._pump())
        stopped = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({pump, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if pump.done():
                if pump.exception() is None and pump.result():
                    return True  # the broker has no StreamWork: use the unary calls
                if self.refusal is None:
                    log.error("the work stream loop ended unexpectedly: %r", pump.exception())
        finally:
            stopped.cancel()
            await self._shutdown(pump)
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
        return False

    async def _pump(self) -> bool:
        """Keep a stream open; returns True if the broker does not offer StreamWork."""
        w = self.w
        self.log_start()
        backoff = _FIRST_BACKOFF
        while not self.is_closing:
            credits = 0 if self.is_stopping else max(self.free_slots(), 0)
            stream = self.client.work_stream(
                w.queues,
                credits=credits,
                lease_duration=w.lease_duration,
                worker_id=w.worker_id,
                round_robin=w.round_robin,
            )
            self.stream, self.granted = stream, credits
            self._drop_held()  # they are unanswered too: resent just below
            self._resend_unanswered(stream)
            try:
                async for batch in stream:
                    self.has_connected = True
                    backoff = _FIRST_BACKOFF
                    if batch.tasks:
                        self._receive(batch.tasks)
                    for outcomes, name in (
                        (batch.acks, "ack"),
                        (batch.failures, "fail"),
                        (batch.releases, "release"),
                    ):
                        for outcome in outcomes:
                            self._answered(outcome.task_id, outcome.error, name)
                    for extension in batch.extensions:
                        self.keeper.handle(extension)
            except Unimplemented:
                if not self.has_connected and w.transport == "auto":
                    log.info("the broker has no StreamWork: using Lease/Ack calls")
                    self.stream = None
                    return True
                log.error("the broker has no StreamWork (retrying in %.1f s)", backoff)
            except PERMANENT_REFUSALS as exc:
                log.error("the broker refused the work stream: %s", exc)
                self.refusal = exc
                return False
            except ConveyorError as exc:
                if self.is_closing:
                    break
                log.warning(
                    "work stream broke (reopening in %.1f s, %d task(s) running): %s",
                    backoff,
                    self.busy,
                    exc,
                )
            except Exception:  # boundary: a bug here must not stop the worker
                log.exception("internal error on the work stream (reopening in %.1f s)", backoff)
            else:
                if self.is_closing:
                    break
                log.warning("the broker ended the work stream (reopening in %.1f s)", backoff)
            finally:
                stream.cancel()
                if self.stream is stream:
                    self.stream = None
                self.granted = 0
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _MAX_BACKOFF)
        return False

    def _receive(self, tasks: Sequence[Task]) -> None:
        self.granted -= len(tasks)
        if self.is_closing:
            self.late.extend(tasks)  # the stream is half-closed: released by a unary call
        elif self.is_stopping:
            for task in tasks:
                self.released_unstarted += 1
                self.report(task, Outcome("release"))
        else:
            self.accept(tasks)

    def _answered(self, task_id: str, error: ConveyorError | None, name: str) -> None:
        sent = self.unanswered.pop(task_id, None)
        was_resent = task_id in self.resent
        if was_resent:
            self.resent.discard(task_id)
        if error is None:
            return
        failure = result_refused(error) if name == "ack" and sent is not None else None
        if failure is not None and sent is not None:
            log.warning("task %s: ack refused, failing it: %s", task_id, failure.message)
            self.report(sent[0], failure)
            return
        if was_resent and isinstance(error, LeaseLost):
            log.info(
                "task %s: %s resent after a reconnect was rejected (most likely recorded "
                "before the stream broke): %s",
                task_id,
                name,
                error,
            )
        else:
            log.warning("task %s: %s rejected: %s", task_id, name, error)

    def _resend_unanswered(self, stream: WorkStream) -> None:
        for task, outcome in self.unanswered.values():
            self.resent.add(task.id)
            _send(stream, task, outcome)

    # -- what the session sends ----------------------------------------------------

    def report(self, task: Task, outcome: Outcome) -> None:
        if outcome.action == "drop":
            return
        self.unanswered[task.id] = (task, outcome)
        if self.buffer and not self.is_stopping:  # busy: gather a larger message
            self.held.append((task, outcome))
            if len(self.held) >= HOLD_ITEMS:
                self.flush_held()
            elif self._hold_timer is None:
                self._hold_timer = self.loop.call_later(HOLD_SECONDS, self.flush_held)
            return
        self.flush_held()  # keeps the order of outcomes
        self._send_one(task, outcome)

    def _send_one(self, task: Task, outcome: Outcome) -> None:
        stream = self.stream
        if stream is not None:
            with contextlib.suppress(ConveyorError):  # broken: kept, sent again on the next
                _send(stream, task, outcome)

    def flush_held(self) -> None:
        """Send the held outcomes, and the credits for the slots they freed."""
        held = self.held
        self._drop_held()
        for task, outcome in held:
            self._send_one(task, outcome)
        if held:
            self.slot_freed()

    def _drop_held(self) -> None:
        self.held = []
        if self._hold_timer is not None:
            self._hold_timer.cancel()
            self._hold_timer = None

    def slot_freed(self) -> None:
        if self.held:
            return  # the credits go with the held outcomes (flush_held)
        stream = self.stream
        if stream is None or self.is_stopping:
            return
        more = self.free_slots() - self.granted
        if more > 0:
            try:
                stream.grant(more)
            except ConveyorError:
                return
            self.granted += more

    async def _send_extensions(self, tasks: list[Task]) -> Sequence[ExtendOutcome] | None:
        duration = self.keeper.lease_duration
        stream = self.stream
        if stream is None:  # between streams: running handlers keep their leases anyway
            return await self.client.extend_many(tasks, lease_duration=duration)
        for task in tasks:
            stream.extend(task, duration)
        return None  # the outcomes come back on the stream

    # -- shutdown -------------------------------------------------------------------

    async def _shutdown(self, pump: asyncio.Task[bool]) -> None:
        self.is_stopping = True
        for task in self.take_unstarted():
            self.report(task, Outcome("release"))
        await self.finish_running()
        self.is_closing = True
        stream = self.stream
        if stream is not None and not pump.done():
            stream.close()
            done, _ = await asyncio.wait({pump}, timeout=_CLOSE_SECONDS)
            if not done:
                log.warning("the work stream did not end in %g s", _CLOSE_SECONDS)
        pump.cancel()
        await asyncio.gather(pump, return_exceptions=True)
        if self.late or self.unanswered:
            completer = Completer(self.client)
            completer.release(self.late)
            for task, outcome in self.unanswered.values():
                completer.report(task, outcome)
            self.unanswered.clear()
            await completer.flush()


def _send(stream: WorkStream, task: Task, outcome: Outcome) -> None:
    action = outcome.action
    if action == "ack":
        stream.ack(task, outcome.result)
    elif action == "fail":
        stream.fail(
            task,
            outcome.error_type,
            outcome.message,
            details=outcome.details,
            retryable=outcome.retryable,
            retry_delay=outcome.retry_delay,
        )
    elif action == "release":
        stream.release(task)
