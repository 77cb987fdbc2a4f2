"""Coalesce concurrent single enqueues into EnqueueBatch calls (AsyncClient only).

Concurrent `enqueue()` calls made in the same event-loop turn travel as one
EnqueueBatch: the broker pays one RPC and one commit for them, and the channel
never carries thousands of calls at once (past ~1,000 in flight the broker
starts cancelling them). A batch is atomic, so when one bad task makes a
coalesced batch fail, each task is retried alone and only the bad one fails.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from conveyor.errors import AlreadyExists, InvalidArgument
from conveyor.v1 import task_pb2, task_service_pb2

SendBatch = Callable[
    [task_service_pb2.EnqueueBatchRequest], Awaitable[task_service_pb2.EnqueueBatchResponse]
]
SendOne = Callable[[task_service_pb2.EnqueueRequest], Awaitable[task_service_pb2.EnqueueResponse]]
_Pending = tuple[task_pb2.TaskSpec, "asyncio.Future[task_service_pb2.EnqueueResponse]"]


class EnqueueCoalescer:
    """Collects specs during one loop turn, then sends them in batches of max_batch."""

    def __init__(self, send_batch: SendBatch, send_one: SendOne, max_batch: int) -> None:
        self._send_batch = send_batch
        self._send_one = send_one
        self._max_batch = max_batch
        self._pending: list[_Pending] = []
        self._in_flight: set[asyncio.Task[None]] = set()

    def submit(self, spec: task_pb2.TaskSpec) -> asyncio.Future[task_service_pb2.EnqueueResponse]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[task_service_pb2.EnqueueResponse] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append((spec, future))
        return future

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        for start in range(0, len(pending), self._max_batch):
            chunk = pending[start : start + self._max_batch]
            task = asyncio.ensure_future(self._send(chunk))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

    async def _send(self, chunk: list[_Pending]) -> None:
        if len(chunk) == 1:
            await self._send_alone(chunk[0])
            return
        request = task_service_pb2.EnqueueBatchRequest(tasks=[spec for spec, _ in chunk])
        try:
            response = await self._send_batch(request)
        except (InvalidArgument, AlreadyExists):
            await asyncio.gather(*(self._send_alone(item) for item in chunk))
            return
        except BaseException as exc:
            for _, future in chunk:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), result in zip(chunk, response.results, strict=True):
            if not future.done():
                future.set_result(result)

    async def _send_alone(self, item: _Pending) -> None:
        spec, future = item
        try:
            result = await self._send_one(task_service_pb2.EnqueueRequest(task=spec))
        except Exception as exc:
            if not future.done():
                future.set_exception(exc)
            return
        if not future.done():
            future.set_result(result)
