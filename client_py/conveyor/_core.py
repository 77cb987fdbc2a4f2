"""The client's methods, written once for Client and AsyncClient (see _operation).

Each public method is an `@operation`: a generator that builds requests, yields
the RPCs and turns the responses into results. Client runs it blocking,
AsyncClient awaits it; the schedule methods come from `ScheduleOperations`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Unpack

from conveyor import _base, _convert
from conveyor._base import LeaseLike
from conveyor._channel import (
    DEADLINE_MARGIN_SECONDS,
    LONG_POLL_SECONDS,
    next_wait,
    outcome,
    timeout_error,
)
from conveyor._model import (
    ExtendOutcome,
    Failure,
    ItemOutcome,
    Seconds,
    Task,
    TaskOptions,
    TaskSpec,
)
from conveyor._operation import Call, Op, Parallel, Sleep, operation
from conveyor._queues import QueueOperations
from conveyor._schedules import ScheduleOperations
from conveyor.errors import Unavailable
from conveyor.v1 import task_service_pb2, worker_service_pb2

__all__ = ["ClientCore"]

#: Pauses between GetResult calls while the broker is unreachable (restarting).
_RECONNECT_FIRST_SECONDS = 0.1
_RECONNECT_MAX_SECONDS = 2.0


class ClientCore(QueueOperations, ScheduleOperations):
    """The methods Client and AsyncClient share; Client's are blocking, AsyncClient's awaitable.

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

    # -- producers -----------------------------------------------------------

    @operation
    def enqueue(
        self,
        kind: str,
        payload: Any = None,
        *,
        reject_duplicate: bool = False,
        timeout: Seconds | None = None,
        **options: Unpack[TaskOptions],
    ) -> Op[Task]:
        """Create one task; returns once it is committed. `task.duplicate` tells a dedup hit.

        Options: queue, id, delay, run_at, deadline, priority, max_attempts, retry_policy,
        lease_duration, unique_key, unique_window, result_retention, headers, content_type,
        concurrency_key (fairness and per-key limits, see docs/flow-control.md).

        On AsyncClient, concurrent calls made in the same loop turn share one
        EnqueueBatch call (unless they pass reject_duplicate or their own timeout);
        each still gets its own task or error.

        Raises:
            InvalidArgument: a malformed option (the message names it).
            AlreadyExists: reject_duplicate and a duplicate exists.
            ResourceExhausted: the broker's store is full.
            Unavailable: the broker is unreachable or shutting down.
        """
        request = self._enqueue_request(kind, payload, reject_duplicate, dict(options))
        is_coalescable = not reject_duplicate and timeout is None  # positional: a hot path
        response = yield Call(
            self._tasks.Enqueue, request, self._timeout(timeout), False, is_coalescable
        )
        return self._enqueued_task(response, request.task)

    @operation
    def enqueue_many(
        self,
        items: Sequence[TaskSpec | tuple[str, Any]],
        *,
        reject_duplicate: bool = False,
        timeout: Seconds | None = None,
        **options: Unpack[TaskOptions],
    ) -> Op[list[Task]]:
        """Create many tasks with EnqueueBatch; returns them in order.

        Items are (kind, payload) pairs or TaskSpec; keyword options fill what an item
        leaves unset. Each batch of up to `max_batch` (1000) is atomic; longer lists are
        sent as several batches (one after the other on Client, concurrently on
        AsyncClient).

        Raises:
            InvalidArgument, AlreadyExists, ResourceExhausted, Unavailable: as `enqueue`.
        """
        requests = self._batch_requests(items, reject_duplicate, dict(options))
        deadline = self._timeout(timeout)
        responses = yield Parallel([Call(self._tasks.EnqueueBatch, r, deadline) for r in requests])
        return [
            self._enqueued_task(answer, spec)
            for request, response in zip(requests, responses, strict=True)
            for answer, spec in zip(response.results, request.tasks, strict=True)
        ]

    @operation
    def get_task(self, task_id: str, *, timeout: Seconds | None = None) -> Op[Task]:
        """The task as it is now.

        Raises:
            InvalidArgument: empty id.
            NotFound: no such task, or removed after its retention.
        """
        request = task_service_pb2.GetTaskRequest(task_id=task_id)
        response = yield Call(self._tasks.GetTask, request, self._timeout(timeout))
        return self._task(response.task)

    @operation
    def wait(self, task_id: str, timeout: Seconds | None = None) -> Op[Task]:
        """Block until the task is final (whatever the state) and return it.

        Uses the broker's long poll; `timeout` None waits for ever. While the broker
        is unreachable (restarting) it keeps trying until `timeout` (or, with None,
        for 30 s of outage), then raises Unavailable: never a timeout it did not wait.

        Raises:
            ResultTimeout: (a TimeoutError) the task was not final in time.
            NotFound: no such task.
            Unavailable: the broker was unreachable when the time ran out.
        """
        return (yield from self._wait(task_id, timeout))

    @operation
    def result(self, task_id: str, timeout: Seconds | None = None) -> Op[Any]:
        """Wait for the task to finish and return its decoded result.

        Raises:
            TaskFailed: it ended DEAD (error_type, error_message, error_details).
            TaskCancelled: it ended CANCELLED.
            TaskExpired: it ended EXPIRED.
            ResultTimeout: (a TimeoutError) still not final after `timeout`.
            NotFound: no such task.
            Unavailable: as `wait`.
        """
        return outcome((yield from self._wait(task_id, timeout)))

    def _wait(self, task_id: str, timeout: Seconds | None) -> Op[Task]:
        total = _convert.seconds(timeout)
        give_up_at = None if total is None else time.monotonic() + total
        pause = _RECONNECT_FIRST_SECONDS
        outage_began: float | None = None
        while True:
            remaining = None if give_up_at is None else give_up_at - time.monotonic()
            wait = next_wait(remaining)
            request = _convert.wait_request(task_id, wait)
            try:
                response = yield Call(
                    self._tasks.GetResult, request, wait + DEADLINE_MARGIN_SECONDS
                )
            except Unavailable:
                # A broker shutting down answers parked polls early, then refuses
                # calls until it is back: wait for it within our own deadline.
                now = time.monotonic()
                outage_began = outage_began or now
                left = LONG_POLL_SECONDS - (now - outage_began) if give_up_at is None else None
                left = give_up_at - now if give_up_at is not None else left
                if left is None or left <= 0:
                    raise
                yield Sleep(min(pause, left))
                pause = min(pause * 2, _RECONNECT_MAX_SECONDS)
                continue
            pause, outage_began = _RECONNECT_FIRST_SECONDS, None
            task = self._task(response.task)
            if response.is_final:
                return task
            if give_up_at is not None and time.monotonic() >= give_up_at:
                raise timeout_error(task, total)

    @operation
    def cancel(self, task_id: str, *, timeout: Seconds | None = None) -> Op[Task]:
        """Cancel a waiting task, or ask the worker running it to stop.

        Returns the task: CANCELLED, or LEASED with cancel_requested set.

        Raises:
            NotFound: no such task.
            FailedPrecondition: the task already finished (other than CANCELLED).
        """
        request = task_service_pb2.CancelTaskRequest(task_id=task_id)
        response = yield Call(self._tasks.CancelTask, request, self._timeout(timeout))
        return self._task(response.task)

    # -- workers (the SDK builds on these) -------------------------------------

    @operation
    def lease(
        self,
        queues: Sequence[str] | str,
        max_tasks: int = 1,
        *,
        lease_duration: Seconds | None = None,
        wait: Seconds | None = None,
        worker_id: str = "",
        round_robin: bool = False,
        timeout: Seconds | None = None,
    ) -> Op[list[Task]]:
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
        response = yield Call(self._workers.Lease, request, deadline)
        return [self._leased_task(pb) for pb in response.tasks]

    @operation
    def extend(
        self,
        lease: LeaseLike | str,
        *,
        lease_token: str | None = None,
        lease_duration: Seconds | None = None,
        timeout: Seconds | None = None,
    ) -> Op[ExtendOutcome]:
        """Heartbeat one lease; the outcome says whether a cancel was requested.

        Raises:
            LeaseLost: (a FailedPrecondition) the token is stale.
            NotFound: no such task.
        """
        leases = [_base.ref(lease, lease_token)]
        outcomes = yield from self._extend_many(leases, lease_duration, timeout)
        return outcomes[0].raise_for_error()

    @operation
    def extend_many(
        self,
        leases: Sequence[LeaseLike],
        *,
        lease_duration: Seconds | None = None,
        timeout: Seconds | None = None,
    ) -> Op[list[ExtendOutcome]]:
        """Heartbeat many leases in one call; one outcome per lease, errors inside.

        Raises:
            Unavailable, ResourceExhausted: the call itself failed.
        """
        return (yield from self._extend_many(leases, lease_duration, timeout))

    def _extend_many(
        self, leases: Sequence[LeaseLike], lease_duration: Seconds | None, timeout: Seconds | None
    ) -> Op[list[ExtendOutcome]]:
        request = _convert.extend_request(leases, lease_duration)
        try:
            response = yield Call(
                self._workers.ExtendLease, request, self._timeout(timeout), is_lease_call=True
            )
        except _base.ITEM_ERRORS as exc:
            item = _base.lone_item_outcome(_base.task_ids(leases), exc)[0]
            return [ExtendOutcome(item.task_id, item.error)]
        return _convert.extend_outcomes(response)

    @operation
    def ack(
        self,
        lease: LeaseLike | str,
        result: Any = None,
        *,
        lease_token: str | None = None,
        timeout: Seconds | None = None,
    ) -> Op[None]:
        """Finish a leased task as SUCCEEDED with `result` (serialized).

        Raises:
            LeaseLost: (a FailedPrecondition) the token is stale; the result was dropped.
            InvalidArgument: the result is too large.
            NotFound: no such task.
        """
        _base.raise_first(
            (yield from self._ack_many([(_base.ref(lease, lease_token), result)], timeout))
        )

    @operation
    def ack_many(
        self, items: Sequence[tuple[LeaseLike, Any]], *, timeout: Seconds | None = None
    ) -> Op[list[ItemOutcome]]:
        """Ack many (lease, result) pairs in one call; one outcome per item.

        Raises:
            Unavailable, ResourceExhausted: the call itself failed.
        """
        return (yield from self._ack_many(items, timeout))

    def _ack_many(
        self, items: Sequence[tuple[LeaseLike, Any]], timeout: Seconds | None
    ) -> Op[list[ItemOutcome]]:
        ids = _base.task_ids([lease for lease, _ in items])
        return (yield from self._items(self._workers.Ack, self._ack_request(items), ids, timeout))

    @operation
    def fail(
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
    ) -> Op[None]:
        """Report a failed attempt: retried after backoff (or retry_delay), or DEAD.

        Raises:
            LeaseLost: (a FailedPrecondition) the token is stale.
            InvalidArgument: error texts too long.
            NotFound: no such task.
        """
        failure = Failure(
            _base.ref(lease, lease_token), error_type, message, details, retryable, retry_delay
        )
        _base.raise_first((yield from self._fail_many([failure], timeout)))

    @operation
    def fail_many(
        self, failures: Sequence[Failure], *, timeout: Seconds | None = None
    ) -> Op[list[ItemOutcome]]:
        """Report many failed attempts in one call; one outcome per item.

        Raises:
            Unavailable, ResourceExhausted: the call itself failed.
        """
        return (yield from self._fail_many(failures, timeout))

    def _fail_many(
        self, failures: Sequence[Failure], timeout: Seconds | None
    ) -> Op[list[ItemOutcome]]:
        request = worker_service_pb2.FailRequest(
            failures=[
                _convert.fail_item(
                    f.lease, f.error_type, f.message, f.details, f.retryable, f.retry_delay
                )
                for f in failures
            ]
        )
        ids = _base.task_ids([f.lease for f in failures])
        return (yield from self._items(self._workers.Fail, request, ids, timeout))

    @operation
    def release(
        self,
        lease: LeaseLike | str,
        *,
        lease_token: str | None = None,
        timeout: Seconds | None = None,
    ) -> Op[None]:
        """Give a lease back unused: READY again at once, attempt not counted.

        Raises:
            LeaseLost: (a FailedPrecondition) the token is stale.
            NotFound: no such task.
        """
        _base.raise_first((yield from self._release_many([_base.ref(lease, lease_token)], timeout)))

    @operation
    def release_many(
        self, leases: Sequence[LeaseLike], *, timeout: Seconds | None = None
    ) -> Op[list[ItemOutcome]]:
        """Give many leases back in one call; one outcome per lease.

        Raises:
            Unavailable, ResourceExhausted: the call itself failed.
        """
        return (yield from self._release_many(leases, timeout))

    def _release_many(
        self, leases: Sequence[LeaseLike], timeout: Seconds | None
    ) -> Op[list[ItemOutcome]]:
        request = worker_service_pb2.ReleaseRequest(
            leases=[_convert.lease_ref(lease) for lease in leases]
        )
        return (
            yield from self._items(self._workers.Release, request, _base.task_ids(leases), timeout)
        )

    def _items(
        self, method: Any, request: Any, ids: list[str], timeout: Seconds | None
    ) -> Op[list[ItemOutcome]]:
        """One batched Ack/Fail/Release call; a lone item's error comes back as its outcome."""
        try:
            response = yield Call(method, request, self._timeout(timeout), is_lease_call=True)
        except _base.ITEM_ERRORS as exc:
            return _base.lone_item_outcome(ids, exc)
        return _convert.item_outcomes(response.outcomes, ids)
