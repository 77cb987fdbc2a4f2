"""The asyncio client: Client's methods, awaitable, many calls in flight on one channel."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar, Unpack

import grpc

from conveyor import _base, _convert
from conveyor._base import ClientBase, LeaseLike
from conveyor._channel import DEADLINE_MARGIN_SECONDS, next_wait, outcome, timeout_error
from conveyor._coalesce import EnqueueCoalescer
from conveyor._model import (
    ExtendOutcome,
    Failure,
    ItemOutcome,
    Seconds,
    Task,
    TaskOptions,
    TaskSpec,
)
from conveyor._schedules import AsyncScheduleMixin
from conveyor._stream import WorkStream
from conveyor.errors import Unavailable, error_from_rpc
from conveyor.v1 import (
    schedule_service_pb2_grpc,
    task_service_pb2,
    task_service_pb2_grpc,
    worker_service_pb2,
    worker_service_pb2_grpc,
)

__all__ = ["AsyncClient"]

R = TypeVar("R")


class AsyncClient(AsyncScheduleMixin, ClientBase):
    """An asyncio connection to a broker: one channel, any number of concurrent calls.

    Create and use it inside one event loop; `async with AsyncClient(...) as client:`.

    Args:
        target: "host:port" of `conveyor serve`.
        tls: use TLS with the system roots (implied by root_certificates/client_cert).
        root_certificates, client_cert, client_key: PEM bytes or file paths.
        token: bearer token sent as `authorization` metadata.
        keepalive: ping interval for long-lived idle connections.
        timeout: default per-call deadline (None: no deadline).
        retry_attempts: attempts for idempotent calls on UNAVAILABLE (1 disables).
        serializer: payload/result encoding; JSON by default.
    """

    def __init__(self, target: str = "127.0.0.1:7470", **settings: Any) -> None:
        super().__init__(target, **settings)
        s = self.settings
        options = s.options()
        self._channel = (
            grpc.aio.secure_channel(s.target, s.credentials(), options)
            if s.is_secure
            else grpc.aio.insecure_channel(s.target, options)
        )
        self._tasks = task_service_pb2_grpc.TaskServiceStub(self._channel)
        self._workers = worker_service_pb2_grpc.WorkerServiceStub(self._channel)
        self._schedule_stub = schedule_service_pb2_grpc.ScheduleServiceStub(self._channel)
        self._coalescer = EnqueueCoalescer(
            lambda r: self._call(self._tasks.EnqueueBatch, r, self.default_timeout),
            lambda r: self._call(self._tasks.Enqueue, r, self.default_timeout),
            self.max_batch,
        )

    async def close(self) -> None:
        """Close the channel; calls in flight are cancelled."""
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _call(
        self,
        method: Callable[..., Awaitable[R]],
        request: Any,
        timeout: float | None,
        *,
        is_lease_call: bool = False,
    ) -> R:
        try:
            return await method(request, timeout=timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, is_lease_call=is_lease_call) from None
        except grpc.aio.UsageError as exc:  # the channel was closed
            raise Unavailable(str(exc)) from None

    # -- producers -----------------------------------------------------------

    async def enqueue(
        self,
        kind: str,
        payload: Any = None,
        *,
        reject_duplicate: bool = False,
        timeout: Seconds | None = None,
        **options: Unpack[TaskOptions],
    ) -> Task:
        """Create one task; returns once it is committed. `task.duplicate` tells a dedup hit.

        Options: queue, id, delay, run_at, deadline, priority, max_attempts, retry_policy,
        lease_duration, unique_key, unique_window, result_retention, headers, content_type.

        Concurrent calls made in the same loop turn share one EnqueueBatch call (unless
        they pass reject_duplicate or their own timeout); each still gets its own task
        or error.

        Raises:
            InvalidArgument: a malformed option (the message names it).
            AlreadyExists: reject_duplicate and a duplicate exists.
            ResourceExhausted: the broker's store is full.
            Unavailable: the broker is unreachable or shutting down.
        """
        request = self._enqueue_request(kind, payload, reject_duplicate, dict(options))
        if reject_duplicate or timeout is not None:
            response = await self._call(self._tasks.Enqueue, request, self._timeout(timeout))
        else:
            response = await self._coalescer.submit(request.task)
        return self._enqueued_task(response, request.task)

    async def enqueue_many(
        self,
        items: Sequence[TaskSpec | tuple[str, Any]],
        *,
        reject_duplicate: bool = False,
        timeout: Seconds | None = None,
        **options: Unpack[TaskOptions],
    ) -> list[Task]:
        """Create many tasks with EnqueueBatch; returns them in order.

        Items are (kind, payload) pairs or TaskSpec; keyword options fill what an item
        leaves unset. Each batch of up to `max_batch` (1000) is atomic; longer lists are
        sent as several batches.

        Batches are sent concurrently.

        Raises:
            InvalidArgument, AlreadyExists, ResourceExhausted, Unavailable: as `enqueue`.
        """
        requests = self._batch_requests(items, reject_duplicate, dict(options))
        deadline = self._timeout(timeout)
        responses = await asyncio.gather(
            *(self._call(self._tasks.EnqueueBatch, r, deadline) for r in requests)
        )
        return [
            self._enqueued_task(answer, spec)
            for request, response in zip(requests, responses, strict=True)
            for answer, spec in zip(response.results, request.tasks, strict=True)
        ]

    async def get_task(self, task_id: str, *, timeout: Seconds | None = None) -> Task:
        """The task as it is now.

        Raises:
            InvalidArgument: empty id.
            NotFound: no such task, or removed after its retention.
        """
        request = task_service_pb2.GetTaskRequest(task_id=task_id)
        response = await self._call(self._tasks.GetTask, request, self._timeout(timeout))
        return self._task(response.task)

    async def wait(self, task_id: str, timeout: Seconds | None = None) -> Task:
        """Block until the task is final (whatever the state) and return it.

        Uses the broker's long poll; `timeout` None waits for ever.

        Raises:
            ResultTimeout: (a TimeoutError) the task was not final in time.
            NotFound: no such task.
        """
        total = _convert.seconds(timeout)
        give_up_at = None if total is None else time.monotonic() + total
        while True:
            remaining = None if give_up_at is None else give_up_at - time.monotonic()
            wait = next_wait(remaining)
            request = _convert.wait_request(task_id, wait)
            response = await self._call(
                self._tasks.GetResult, request, wait + DEADLINE_MARGIN_SECONDS
            )
            task = self._task(response.task)
            if response.is_final:
                return task
            if remaining is not None and remaining - wait <= 0:
                raise timeout_error(task, total)

    async def result(self, task_id: str, timeout: Seconds | None = None) -> Any:
        """Wait for the task to finish and return its decoded result.

        Raises:
            TaskFailed: it ended DEAD (error_type, error_message, error_details).
            TaskCancelled: it ended CANCELLED.
            TaskExpired: it ended EXPIRED.
            ResultTimeout: (a TimeoutError) still not final after `timeout`.
            NotFound: no such task.
        """
        return outcome(await self.wait(task_id, timeout))

    async def cancel(self, task_id: str, *, timeout: Seconds | None = None) -> Task:
        """Cancel a waiting task, or ask the worker running it to stop.

        Returns the task: CANCELLED, or LEASED with cancel_requested set.

        Raises:
            NotFound: no such task.
            FailedPrecondition: the task already finished (other than CANCELLED).
        """
        request = task_service_pb2.CancelTaskRequest(task_id=task_id)
        response = await self._call(self._tasks.CancelTask, request, self._timeout(timeout))
        return self._task(response.task)

    # -- workers (the SDK builds on these) -------------------------------------

    async def lease(
        self,
        queues: Sequence[str] | str,
        max_tasks: int = 1,
        *,
        lease_duration: Seconds | None = None,
        wait: Seconds | None = None,
        worker_id: str = "",
        round_robin: bool = False,
        timeout: Seconds | None = None,
    ) -> list[Task]:
        """Take up to max_tasks READY tasks; with `wait`, park until one arrives.

        Each task carries `lease_token` and `lease_expires_at`; pass the task (or
        `task.lease`) to extend/ack/fail/release. An empty list is not an error.

        Raises:
            InvalidArgument: no or bad queue names, max_tasks over the broker's limit.
            ResourceExhausted: too many waiting calls.
            Unavailable: the broker is unreachable or shutting down.
        """
        request = _convert.lease_request(
            queues, max_tasks, lease_duration, wait, worker_id, round_robin
        )
        deadline = self._timeout(timeout)
        if wait is not None and deadline is not None:
            deadline += _convert.seconds(wait) or 0.0
        response = await self._call(self._workers.Lease, request, deadline)
        return [self._leased_task(pb) for pb in response.tasks]

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

    async def extend(
        self,
        lease: LeaseLike | str,
        *,
        lease_token: str | None = None,
        lease_duration: Seconds | None = None,
        timeout: Seconds | None = None,
    ) -> ExtendOutcome:
        """Heartbeat one lease; the outcome says whether a cancel was requested.

        Raises:
            LeaseLost: (a FailedPrecondition) the token is stale.
            NotFound: no such task.
        """
        outcomes = await self.extend_many(
            [_base.ref(lease, lease_token)], lease_duration=lease_duration, timeout=timeout
        )
        return outcomes[0].raise_for_error()

    async def extend_many(
        self,
        leases: Sequence[LeaseLike],
        *,
        lease_duration: Seconds | None = None,
        timeout: Seconds | None = None,
    ) -> list[ExtendOutcome]:
        """Heartbeat many leases in one call; one outcome per lease, errors inside.

        Raises:
            Unavailable, ResourceExhausted: the call itself failed.
        """
        request = _convert.extend_request(leases, lease_duration)
        try:
            response = await self._call(
                self._workers.ExtendLease, request, self._timeout(timeout), is_lease_call=True
            )
        except _base.ITEM_ERRORS as exc:
            item = _base.lone_item_outcome(_base.task_ids(leases), exc)[0]
            return [ExtendOutcome(item.task_id, item.error)]
        return _convert.extend_outcomes(response)

    async def ack(
        self,
        lease: LeaseLike | str,
        result: Any = None,
        *,
        lease_token: str | None = None,
        timeout: Seconds | None = None,
    ) -> None:
        """Finish a leased task as SUCCEEDED with `result` (serialized).

        Raises:
            LeaseLost: (a FailedPrecondition) the token is stale; the result was dropped.
            InvalidArgument: the result is too large.
            NotFound: no such task.
        """
        _base.raise_first(
            await self.ack_many([(_base.ref(lease, lease_token), result)], timeout=timeout)
        )

    async def ack_many(
        self, items: Sequence[tuple[LeaseLike, Any]], *, timeout: Seconds | None = None
    ) -> list[ItemOutcome]:
        """Ack many (lease, result) pairs in one call; one outcome per item.

        Raises:
            Unavailable, ResourceExhausted: the call itself failed.
        """
        ids = _base.task_ids([lease for lease, _ in items])
        try:
            response = await self._call(
                self._workers.Ack,
                self._ack_request(items),
                self._timeout(timeout),
                is_lease_call=True,
            )
        except _base.ITEM_ERRORS as exc:
            return _base.lone_item_outcome(ids, exc)
        return _convert.item_outcomes(response.outcomes, ids)

    async def fail(
        self,
        lease: LeaseLike | str,
        error_type: str = "Error",
        message: str = "",
        *,
        details: str = "",
        retryable: bool = True,
        retry_delay: Seconds | None = None,
        lease_token: str | None = None,
        timeout: Seconds | None = None,
    ) -> None:
        """Report a failed attempt: retried after backoff (or retry_delay), or DEAD.

        Raises:
            LeaseLost: (a FailedPrecondition) the token is stale.
            InvalidArgument: error texts too long.
            NotFound: no such task.
        """
        failure = Failure(
            _base.ref(lease, lease_token), error_type, message, details, retryable, retry_delay
        )
        _base.raise_first(await self.fail_many([failure], timeout=timeout))

    async def fail_many(
        self, failures: Sequence[Failure], *, timeout: Seconds | None = None
    ) -> list[ItemOutcome]:
        """Report many failed attempts in one call; one outcome per item.

        Raises:
            Unavailable, ResourceExhausted: the call itself failed.
        """
        request = worker_service_pb2.FailRequest(
            failures=[
                _convert.fail_item(
                    f.lease, f.error_type, f.message, f.details, f.retryable, f.retry_delay
                )
                for f in failures
            ]
        )
        ids = _base.task_ids([f.lease for f in failures])
        try:
            response = await self._call(
                self._workers.Fail, request, self._timeout(timeout), is_lease_call=True
            )
        except _base.ITEM_ERRORS as exc:
            return _base.lone_item_outcome(ids, exc)
        return _convert.item_outcomes(response.outcomes, ids)

    async def release(
        self,
        lease: LeaseLike | str,
        *,
        lease_token: str | None = None,
        timeout: Seconds | None = None,
    ) -> None:
        """Give a lease back unused: READY again at once, attempt not counted.

        Raises:
            LeaseLost: (a FailedPrecondition) the token is stale.
            NotFound: no such task.
        """
        _base.raise_first(await self.release_many([_base.ref(lease, lease_token)], timeout=timeout))

    async def release_many(
        self, leases: Sequence[LeaseLike], *, timeout: Seconds | None = None
    ) -> list[ItemOutcome]:
        """Give many leases back in one call; one outcome per lease.

        Raises:
            Unavailable, ResourceExhausted: the call itself failed.
        """
        request = worker_service_pb2.ReleaseRequest(
            leases=[_convert.lease_ref(lease) for lease in leases]
        )
        ids = _base.task_ids(leases)
        try:
            response = await self._call(
                self._workers.Release, request, self._timeout(timeout), is_lease_call=True
            )
        except _base.ITEM_ERRORS as exc:
            return _base.lone_item_outcome(ids, exc)
        return _convert.item_outcomes(response.outcomes, ids)
