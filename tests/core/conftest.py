"""Core fixtures: a Broker over a MemoryStore, a FakeClock and a seeded Random."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import pytest

from conveyor_server.core.broker import Broker, LeaseBatch
from conveyor_server.core.clock import FakeClock
from conveyor_server.core.model import (
    Ack,
    Extension,
    Failure,
    ItemOutcome,
    LeaseRef,
    Task,
    TaskResult,
    TaskSpec,
    TickOutcome,
)
from conveyor_server.core.settings import BrokerSettings
from conveyor_server.store.memory import MemoryStore


def ref(task: Task) -> LeaseRef:
    return LeaseRef(task.id, task.lease_token)


class Harness:
    """Short spellings for the broker calls the core tests make over and over."""

    def __init__(self, broker: Broker, clock: FakeClock) -> None:
        self.broker = broker
        self.clock = clock

    def enqueue(self, kind: str = "job", **fields: Any) -> Task:
        return self.broker.enqueue(TaskSpec(kind=kind, **fields)).result().task

    def lease_batch(
        self,
        queues: Sequence[str] = ("default",),
        max_tasks: int = 1,
        **kwargs: Any,
    ) -> LeaseBatch:
        return self.broker.lease(list(queues), max_tasks, **kwargs).result()

    def lease(
        self, queues: Sequence[str] = ("default",), max_tasks: int = 10, **kw: Any
    ) -> list[Task]:
        return self.lease_batch(queues, max_tasks, **kw).tasks

    def lease_one(self, queue: str = "default", **kwargs: Any) -> Task:
        tasks = self.lease([queue], 1, **kwargs)
        assert len(tasks) == 1, f"expected one task from {queue!r}, got {len(tasks)}"
        return tasks[0]

    def ack(self, task: Task, data: bytes = b"ok", token: str | None = None) -> ItemOutcome:
        lease = LeaseRef(task.id, task.lease_token if token is None else token)
        return self.broker.ack([Ack(lease, TaskResult(data, "text/plain"))]).result()[0]

    def fail(
        self,
        task: Task,
        message: str = "boom",
        *,
        token: str | None = None,
        **fields: Any,
    ) -> ItemOutcome:
        lease = LeaseRef(task.id, task.lease_token if token is None else token)
        fields.setdefault("error_type", "ValueError")
        failure = Failure(lease, error_message=message, **fields)
        return self.broker.fail([failure]).result()[0]

    def extend(
        self, task: Task, lease_duration: float | None = None, token: str | None = None
    ) -> ItemOutcome:
        lease = LeaseRef(task.id, task.lease_token if token is None else token)
        return self.broker.extend([Extension(lease, lease_duration)]).result()[0]

    def release(self, task: Task, token: str | None = None) -> ItemOutcome:
        lease = LeaseRef(task.id, task.lease_token if token is None else token)
        return self.broker.release([lease]).result()[0]

    def tick(self) -> TickOutcome:
        return self.broker.tick().result()

    def advance(self, seconds: float, *, tick: bool = True) -> TickOutcome | None:
        self.clock.advance(seconds)
        return self.tick() if tick else None

    def get(self, task_id: str) -> Task:
        return self.broker.get_task(task_id)

    def count(self, db: str) -> int:
        return self.broker.store.read(lambda txn: txn.count(db))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings() -> BrokerSettings:
    return BrokerSettings()


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def broker(store: MemoryStore, clock: FakeClock, settings: BrokerSettings) -> Broker:
    return Broker(store, clock, settings, rng=random.Random(20240601))


@pytest.fixture
def h(broker: Broker, clock: FakeClock) -> Harness:
    return Harness(broker, clock)
