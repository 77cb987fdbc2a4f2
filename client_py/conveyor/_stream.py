"""AsyncClient.work_stream: one StreamWork call, the high-throughput worker path.

The worker grants credits; the broker leases READY tasks and pushes them, never
more than the credits not yet used. Acks, failures, releases and lease
extensions are queued locally and leave together: everything queued during one
event-loop turn (and while the previous message was being written) travels as
one StreamWorkRequest, credits included. Their outcomes come back later, one
per item, in the batches the stream yields.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from conveyor import _convert
from conveyor._convert import LeaseLike
from conveyor._model import ExtendOutcome, ItemOutcome, Seconds, Task
from conveyor.errors import ConveyorError, Unavailable, error_from_rpc
from conveyor.serializer import Serializer, encode
from conveyor.v1 import task_pb2, worker_service_pb2

__all__ = ["StreamBatch", "WorkStream"]

_WS = worker_service_pb2


@dataclass(frozen=True, slots=True)
class StreamBatch:
    """One message from the broker: newly leased tasks and/or outcomes of earlier items.

    Each pushed task used one credit. Outcomes carry the task id of their item;
    `error` is None when the item worked, `LeaseLost` for a stale lease token.
    """

    tasks: Sequence[Task] = ()
    acks: Sequence[ItemOutcome] = ()
    failures: Sequence[ItemOutcome] = ()
    releases: Sequence[ItemOutcome] = ()
    extensions: Sequence[ExtendOutcome] = ()


class WorkStream:
    """A StreamWork call: `grant()` credits, iterate the pushed tasks and outcomes.

    Made by `AsyncClient.work_stream(...)`; use it on the client's event loop::

        async with client.work_stream(["images"], credits=8) as stream:
            async for batch in stream:
                for task in batch.tasks:
                    stream.ack(task, {"ok": True})
                    stream.grant(1)

    `grant`, `ack`, `fail`, `release` and `extend` never block: they add to the
    next message, which is written as soon as the loop is free. `close()` sends
    what is queued and half-closes; the iterator then yields the last outcomes
    and ends once the broker has answered everything. Iterating raises a
    `ConveyorError` (`Unavailable` when the broker went away or restarted,
    `InvalidArgument` for a bad `open`, `Unimplemented` from an older broker) when
    the stream breaks; the leases it pushed stay valid until they run out, so
    their outcomes can still be reported on a new stream or with the unary calls.
    """

    def __init__(
        self,
        start: Callable[[], Any],
        opening: worker_service_pb2.StreamWorkRequest,
        serializer: Serializer,
        task_from_pb: Callable[[task_pb2.Task], Task],
    ) -> None:
        self._serializer = serializer
        self._task_from_pb = task_from_pb
        self._pending: worker_service_pb2.StreamWorkRequest | None = None
        self._wake = asyncio.Event()
        self._is_closing = False
        self._queued = 0  # messages queued so far
        self._written = 0  # messages the transport took
        self._flushes: list[tuple[int, asyncio.Future[None]]] = []
        try:
            self._call = start()
        except grpc.aio.UsageError as exc:  # the client was closed
            raise Unavailable(f"cannot open a work stream: {exc}") from None
        self._writer = asyncio.ensure_future(self._write_loop(opening))
        self._call.add_done_callback(self._call_ended)

    # -- what the worker sends -------------------------------------------------

    def _request(self) -> worker_service_pb2.StreamWorkRequest:
        if self._is_closing:
            raise Unavailable("the work stream is closed")
        request = self._pending
        if request is None:
            request = self._pending = _WS.StreamWorkRequest()
            self._queued += 1
            self._wake.set()
        return request

    def grant(self, credits: int) -> None:
        """Let the broker push `credits` more tasks (added to the unused ones).

        Raises:
            Unavailable: the stream was closed.
        """
        if credits > 0:
            self._request().credits += credits

    def ack(self, lease: LeaseLike, result: Any = None) -> None:
        """Report a success with `result` (serialized; `Encoded` passes as is).

        Raises:
            Unavailable: the stream was closed.
            TypeError: (or the serializer's error) the result cannot be encoded.
        """
        data, content_type = encode(self._serializer, result)
        task_id, token = _convert.lease_ids(lease)
        item = self._request().acks.add()
        item.lease.task_id = task_id
        item.lease.lease_token = token
        item.result.data = data
        item.result.content_type = content_type

    def fail(
        self,
        lease: LeaseLike,
        error_type: str = "Error",
        message: str = "",
        *,
        details: str = "",
        retryable: bool = True,
        retry_delay: Seconds | None = None,
    ) -> None:
        """Report a failed attempt, as `AsyncClient.fail`.

        Raises:
            Unavailable: the stream was closed.
        """
        item = _convert.fail_item(lease, error_type, message, details, retryable, retry_delay)
        self._request().failures.append(item)

    def release(self, lease: LeaseLike) -> None:
        """Give a lease back unused (READY again at once, attempt not counted).

        Raises:
            Unavailable: the stream was closed.
        """
        task_id, token = _convert.lease_ids(lease)
        self._request().releases.add(task_id=task_id, lease_token=token)

    def extend(self, lease: LeaseLike, lease_duration: Seconds | None = None) -> None:
        """Heartbeat a lease; the ExtendOutcome (with cancel_requested) comes back later.

        Raises:
            Unavailable: the stream was closed.
        """
        task_id, token = _convert.lease_ids(lease)
        item = self._request().extensions.add()
        item.lease.task_id = task_id
        item.lease.lease_token = token
        if lease_duration is not None:
            item.lease_duration.CopyFrom(_convert.duration(lease_duration))

    async def flush(self) -> None:
        """Wait until everything queued so far was handed to the transport.

        Raises:
            Unavailable: the stream broke before it could be written.
        """
        if self._written >= self._queued:
            return
        if self._call.done() or self._writer.done():  # broken or cancelled: never written
            raise Unavailable("the work stream is closed; queued items were not sent")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._flushes.append((self._queued, future))
        await future

    def close(self) -> None:
        """Send what is queued, then half-close; keep iterating for the last outcomes."""
        self._is_closing = True
        self._wake.set()

    def cancel(self) -> None:
        """End the call at once; nothing queued is sent."""
        self._is_closing = True
        self._call.cancel()
        self._writer.cancel()
        self._fail_flushes(Unavailable("the work stream was cancelled"))

    async def __aenter__(self) -> WorkStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._writer

    # -- the transport -----------------------------------------------------------

    async def _write_loop(self, opening: worker_service_pb2.StreamWorkRequest) -> None:
        call = self._call
        try:
            await call.write(opening)
            while True:
                request = self._pending
                if request is None:
                    if self._is_closing:
                        await call.done_writing()
                        return
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                self._pending = None
                await call.write(request)
                self._written += 1
                if self._flushes:
                    self._finish_flushes()
        except (grpc.RpcError, grpc.aio.UsageError, asyncio.InvalidStateError) as exc:
            # The stream broke; the reader reports why. Nothing more can be sent.
            self._is_closing = True
            self._fail_flushes(Unavailable(f"the work stream broke: {exc}"))

    def _finish_flushes(self) -> None:
        waiting = []
        for seq, future in self._flushes:
            if seq <= self._written:
                if not future.done():
                    future.set_result(None)
            else:
                waiting.append((seq, future))
        self._flushes = waiting

    def _fail_flushes(self, error: ConveyorError) -> None:
        for _, future in self._flushes:
            if not future.done():
                future.set_exception(error)
        self._flushes = []

    def _call_ended(self, _: object) -> None:
        """However the call ended (the broker, a cancel, the client closed): nothing more
        is written. A writer stuck in a write the transport will never take is stopped."""
        self._stop_writing()
        if not self._writer.done():
            self._writer.cancel()
        self._fail_flushes(Unavailable("the work stream ended; queued items were not sent"))

    def _stop_writing(self) -> None:
        """The call ended: wake the writer so it finishes instead of waiting for ever."""
        self._is_closing = True
        self._wake.set()

    def __aiter__(self) -> WorkStream:
        return self

    async def __anext__(self) -> StreamBatch:
        try:
            response = await self._call.read()
        except grpc.RpcError as exc:
            self._stop_writing()
            raise error_from_rpc(exc) from None
        except grpc.aio.UsageError as exc:  # the channel was closed
            self._stop_writing()
            raise Unavailable(str(exc)) from None
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # this reader was cancelled
            # The call was cancelled under the reader: the client was closed.
            self._stop_writing()
            raise Unavailable("the work stream was cancelled (the client was closed)") from None
        if response is grpc.aio.EOF:
            self._stop_writing()
            raise StopAsyncIteration
        return self._batch(response)

    def _batch(self, response: worker_service_pb2.StreamWorkResponse) -> StreamBatch:
        make = self._task_from_pb
        outcomes = _convert.stream_outcomes
        return StreamBatch(
            tasks=[make(pb) for pb in response.tasks] if response.tasks else (),
            acks=outcomes(response.ack_outcomes) if response.ack_outcomes else (),
            failures=outcomes(response.fail_outcomes) if response.fail_outcomes else (),
            releases=outcomes(response.release_outcomes) if response.release_outcomes else (),
            extensions=(
                _convert.extension_results(response.extension_results)
                if response.extension_results
                else ()
            ),
        )
