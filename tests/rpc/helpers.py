"""Small builders for RPC tests."""

from __future__ import annotations

import queue as queue_module
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2

from conveyor.v1 import (
    task_pb2,
    task_service_pb2,
    task_service_pb2_grpc,
    worker_service_pb2,
    worker_service_pb2_grpc,
)
from conveyor_server.store.memory import MemoryStore


@dataclass
class Stubs:
    channel: grpc.Channel
    tasks: task_service_pb2_grpc.TaskServiceStub
    workers: worker_service_pb2_grpc.WorkerServiceStub


def connect(address: str) -> Stubs:
    channel = grpc.insecure_channel(address)
    return Stubs(
        channel,
        task_service_pb2_grpc.TaskServiceStub(channel),
        worker_service_pb2_grpc.WorkerServiceStub(channel),
    )


def seconds(value: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(value * 1e9))
    return d


def spec(queue: str, kind: str = "job", **fields: Any) -> task_pb2.TaskSpec:
    return task_pb2.TaskSpec(queue=queue, kind=kind, payload=b'{"n": 1}', **fields)


def enqueue(stubs: Any, queue: str, **fields: Any) -> task_pb2.Task:
    return stubs.tasks.Enqueue(task_service_pb2.EnqueueRequest(task=spec(queue, **fields))).task


def lease(stubs: Any, queue: str, max_tasks: int = 1, **fields: Any) -> list[task_pb2.Task]:
    request = worker_service_pb2.LeaseRequest(queues=[queue], max_tasks=max_tasks, **fields)
    return list(stubs.workers.Lease(request).tasks)


def ref(task: task_pb2.Task, token: str | None = None) -> worker_service_pb2.LeaseRef:
    return worker_service_pb2.LeaseRef(
        task_id=task.id, lease_token=task.lease_token if token is None else token
    )


def expect_status(code: grpc.StatusCode, call: Any, *args: Any, match: str = "") -> str:
    """Call and require the exact status; returns the details for further checks."""
    with pytest.raises(grpc.RpcError) as info:
        call(*args)
    assert info.value.code() == code, info.value.details()
    assert match in info.value.details()
    return info.value.details()


class GatedStore(MemoryStore):
    """Applies writes at once but reports them only when the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.is_gated = False
        self._held: list[tuple[Future[Any], Future[Any]]] = []

    def write(self, fn: Any, *, is_growth: bool = False) -> Future[Any]:
        done = super().write(fn, is_growth=is_growth)
        if not self.is_gated:
            return done
        reported: Future[Any] = Future()
        self._held.append((done, reported))
        return reported

    def open_gate(self) -> None:
        self.is_gated = False
        for done, reported in self._held:
            if done.exception() is not None:
                reported.set_exception(done.exception())  # type: ignore[arg-type]
            else:
                reported.set_result(done.result())
        self._held.clear()


class Feed:
    """A request iterator the test feeds as it goes (ends at close())."""

    def __init__(self, *first: Any) -> None:
        self._items: queue_module.Queue[Any | None] = queue_module.Queue()
        for item in first:
            self._items.put(item)

    def put(self, item: Any) -> None:
        self._items.put(item)

    def close(self) -> None:
        self._items.put(None)

    def __iter__(self) -> Iterator[Any]:
        while (item := self._items.get()) is not None:
            yield item
