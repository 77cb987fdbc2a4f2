"""The asyncio client: the shared methods (_core) awaited, many calls in flight on one channel."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import Any

import grpc

from conveyor import _convert
from conveyor._coalesce import EnqueueCoalescer
from conveyor._core import ClientCore
from conveyor._model import Seconds
from conveyor._operation import Call, Parallel, Step, install
from conveyor._stream import WorkStream
from conveyor.errors import Unavailable, error_from_rpc

__all__ = ["AsyncClient"]


class AsyncClient(ClientCore):
    """An asyncio connection to a broker: one channel, any number of concurrent calls.

    Create and use it inside one event loop; `async with AsyncClient(...) as client:`.
    Arguments and methods as Client, awaitable; `work_stream` is AsyncClient's own.
    """

    _grpc = grpc.aio

    def __init__(self, target: str = "127.0.0.1:7470", **settings: Any) -> None:
        super().__init__(target, **settings)
        self._coalescer = EnqueueCoalescer(
            lambda r: self._invoke(Call(self._tasks.EnqueueBatch, r, self.default_timeout)),
            lambda r: self._invoke(Call(self._tasks.Enqueue, r, self.default_timeout)),
            self.max_batch,
        )

    async def close(self) -> None:
        """Close the channel; calls in flight are cancelled."""
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _start(self, step: Step) -> Awaitable[Any]:
        """An awaitable doing one step of an operation (see _operation._awaitable)."""
        if isinstance(step, Call):
            if step.is_coalescable:
                return self._coalescer.submit(step.request.task)
            return self._invoke(step)
        if isinstance(step, Parallel):
            return asyncio.gather(*map(self._invoke, step.calls))
        return asyncio.sleep(step.seconds)

    async def _invoke(self, call: Call) -> Any:
        try:
            return await call.method(call.request, timeout=call.timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, is_lease_call=call.is_lease_call) from None
        except grpc.aio.UsageError as exc:  # the channel was closed
            raise Unavailable(str(exc)) from None

    def work_stream(
        self,
        queues: Sequence[str] | str,
        *,
        credits: int = 0,
        lease_duration: Seconds | None = None,
        worker_id: str = "",
        round_robin: bool = False,
    ) -> WorkStream:
        """Open a StreamWork call: the broker pushes tasks as you grant credits.

        `credits` are granted with the opening message; `stream.grant(n)` adds more.
        Acks, failures, releases and extensions go on the stream (`stream.ack(task,
        result)`, ...) and their outcomes come back in the batches it yields. Call it
        on the client's event loop. See docs/client.md, "Work streams".

        Errors surface while iterating the stream (it does not connect eagerly):
        InvalidArgument (bad queue names or lease_duration), Unavailable (the broker
        is unreachable, restarted or shutting down), Unimplemented (an older broker).
        """
        opening = _convert.stream_open(queues, lease_duration, worker_id, round_robin, credits)
        return WorkStream(
            lambda: self._workers.StreamWork(metadata=self._metadata),
            opening,
            self.serializer,
            self._leased_task,
        )


install(AsyncClient, is_async=True)
