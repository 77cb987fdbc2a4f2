"""What Client and AsyncClient share: settings, channel, stubs, serializer, request building."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any, ClassVar

from conveyor import _convert
from conveyor._channel import ChannelSettings, call_timeout
from conveyor._convert import LeaseLike
from conveyor._model import ItemOutcome, Seconds, Task, TaskSpec
from conveyor.errors import InvalidArgument, LeaseLost, NotFound
from conveyor.serializer import JsonSerializer, Serializer
from conveyor.v1 import (
    schedule_service_pb2_grpc,
    task_pb2,
    task_service_pb2,
    task_service_pb2_grpc,
    worker_service_pb2,
    worker_service_pb2_grpc,
)

#: The broker's default --max-batch; enqueue_many splits bigger lists.
MAX_BATCH = 1000
#: Errors that belong to one item of a batched call (the rest are about the call).
ITEM_ERRORS = (InvalidArgument, NotFound, LeaseLost)


class ClientBase:
    """Holds the connection settings, the channel and its stubs, and builds requests.

    `_grpc` is the module whose channels the client uses: `grpc` or `grpc.aio`.
    """

    _grpc: ClassVar[Any]

    def __init__(
        self,
        target: str,
        *,
        tls: bool = False,
        root_certificates: bytes | str | None = None,
        client_cert: bytes | str | None = None,
        client_key: bytes | str | None = None,
        token: str | None = None,
        keepalive: Seconds | None = None,
        timeout: Seconds | None = timedelta(seconds=30),
        retry_attempts: int = 5,
        serializer: Serializer | None = None,
        max_batch: int = MAX_BATCH,
    ) -> None:
        self.settings = ChannelSettings(
            target,
            tls=tls,
            root_certificates=root_certificates,
            client_cert=client_cert,
            client_key=client_key,
            token=token,
            keepalive=keepalive,
            retry_attempts=retry_attempts,
        )
        self.serializer: Serializer = serializer or JsonSerializer()
        self.default_timeout = _convert.seconds(timeout)
        self.max_batch = max_batch
        self._metadata = self.settings.metadata()
        self._channel: Any = self.settings.open(self._grpc)
        self._tasks: Any = task_service_pb2_grpc.TaskServiceStub(self._channel)
        self._workers: Any = worker_service_pb2_grpc.WorkerServiceStub(self._channel)
        self._schedule_stub: Any = schedule_service_pb2_grpc.ScheduleServiceStub(self._channel)

    @property
    def target(self) -> str:
        return self.settings.target

    def _timeout(self, value: Seconds | None) -> float | None:
        return call_timeout(value, self.default_timeout)

    def _task(self, pb: task_pb2.Task, duplicate: bool = False) -> Task:
        return _convert.task_from_pb(pb, self.serializer, duplicate)

    def _enqueued_task(
        self, answer: task_service_pb2.EnqueueResponse, spec: task_pb2.TaskSpec
    ) -> Task:
        """The task of an Enqueue answer. The broker does not echo a new task's payload
        and headers (an answer must stay small whatever the request's size): they are
        the spec's. A duplicate comes without them; `get_task` has them."""
        task = self._task(answer.task, answer.duplicate)
        if not answer.duplicate:
            task.payload_bytes = spec.payload
            task.headers = dict(spec.headers) if spec.headers else {}
        return task

    def _leased_task(self, pb: task_pb2.Task) -> Task:
        return _convert.leased_task_from_pb(pb, self.serializer)

    def _enqueue_request(
        self, kind: str, payload: Any, reject_duplicate: bool, options: dict[str, Any]
    ) -> task_service_pb2.EnqueueRequest:
        spec = TaskSpec(kind, payload, **_convert.options(options))
        return task_service_pb2.EnqueueRequest(
            task=_convert.spec_to_pb(spec, self.serializer), reject_duplicate=reject_duplicate
        )

    def _batch_requests(
        self,
        items: Sequence[TaskSpec | tuple[str, Any]],
        reject_duplicate: bool,
        options: dict[str, Any],
    ) -> list[task_service_pb2.EnqueueBatchRequest]:
        defaults = _convert.options(options)
        specs = [
            _convert.spec_to_pb(_convert.merge_spec(item, defaults), self.serializer)
            for item in items
        ]
        return _convert.enqueue_requests(specs, self.max_batch, reject_duplicate)

    def _ack_request(self, items: Sequence[tuple[LeaseLike, Any]]) -> worker_service_pb2.AckRequest:
        return worker_service_pb2.AckRequest(
            acks=[_convert.ack_item(lease, result, self.serializer) for lease, result in items]
        )


def lone_item_outcome(task_ids: Sequence[str], error: Exception) -> list[ItemOutcome]:
    """A one-item batch whose item failed arrives as the call's error: turn it back."""
    if len(task_ids) == 1 and isinstance(error, ITEM_ERRORS):
        return [ItemOutcome(task_ids[0], error)]
    raise error


def raise_first(outcomes: Sequence[ItemOutcome]) -> None:
    for outcome in outcomes:
        if outcome.error is not None:
            raise outcome.error


def ref(lease: LeaseLike | str, lease_token: str | None) -> LeaseLike:
    """A single-call lease argument: a leased Task, LeaseRef, pair, or id plus token."""
    if isinstance(lease, str):
        pb = _convert.lease_ref(lease, lease_token)
        return (pb.task_id, pb.lease_token)
    return lease


def task_ids(leases: Sequence[LeaseLike]) -> list[str]:
    return [_convert.lease_ref(lease).task_id for lease in leases]
