"""The broker's lease path against a stale cache and a stepped-back clock: the store's
limits bind every lease and hand-over; an unshared store pays no keyed-task seek."""

from __future__ import annotations

from typing import Any

import pytest

from conveyor_server.core.broker import Broker, LeaseGrant
from conveyor_server.core.model import TaskSpec, TaskState
from conveyor_server.core.queues import QueueAdmin, QueueUpdate
from conveyor_server.core.settings import BrokerSettings
from tests.core.conftest import Harness
from tests.core.test_broker_flow import fill, limit


@pytest.fixture
def admin(h: Harness) -> QueueAdmin:
    return QueueAdmin(h.broker)


def test_a_limit_set_through_another_broker_binds_the_next_lease(h: Harness) -> None:
    other = Broker(h.broker.store, h.clock, BrokerSettings())  # its cache: no limits yet
    fill(h, 10)
    QueueAdmin(other).update("q", QueueUpdate({"concurrency": 2})).result()  # not noted here
    assert len(h.lease(["q"], 10)) == 2
    assert h.broker.store.read(lambda txn: txn.leased_count("q")) == 2


def test_a_hand_over_obeys_a_limit_this_broker_has_not_noted(h: Harness) -> None:
    other = Broker(h.broker.store, h.clock, BrokerSettings())
    fill(h, 1)
    h.lease(["q"], 1)
    QueueAdmin(other).update("q", QueueUpdate({"concurrency": 1})).result()
    grant = LeaseGrant(None, "w")
    outcome = h.broker.enqueue(TaskSpec(kind="job", queue="q"), lease_to=grant).result()
    assert outcome.task.state is TaskState.READY
    assert h.broker.store.read(lambda txn: txn.leased_count("q")) == 1


def test_a_clock_step_back_does_not_stall_the_bucket(h: Harness, admin: QueueAdmin) -> None:
    limit(h, admin, rate=1)
    fill(h, 100)
    assert len(h.lease(["q"], 10)) == 1
    h.clock.advance(-600)  # the wall clock steps back 10 minutes (NTP step, VM restore)
    got = 0
    for _ in range(60):
        h.clock.advance(1)
        got += len(h.lease(["q"], 10))
    assert got >= 59  # one a second, as before the step


class _SeekCounter:
    """A store whose transactions count ready_keys calls (the cost of a lease's lookups)."""

    def __init__(self, store: Any) -> None:
        self._store, self.seeks = store, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def _wrap(self, fn: Any) -> Any:
        def counted(txn: Any) -> Any:
            return fn(_CountingTxn(txn, self))

        return counted

    def read(self, fn: Any) -> Any:
        return self._store.read(self._wrap(fn))

    def write(self, fn: Any, **options: Any) -> Any:
        return self._store.write(self._wrap(fn), **options)


class _CountingTxn:
    def __init__(self, txn: Any, counter: _SeekCounter) -> None:
        self._txn, self._counter = txn, counter

    def __getattr__(self, name: str) -> Any:
        return getattr(self._txn, name)

    def ready_keys(self, *args: Any) -> list[str]:
        self._counter.seeks += 1
        return list(self._txn.ready_keys(*args))


def test_an_unshared_store_pays_no_key_seek_for_a_plain_queue(h: Harness) -> None:
    counter = _SeekCounter(h.broker.store)
    broker = Broker(counter, h.clock, BrokerSettings())  # type: ignore[arg-type]
    broker.enqueue(TaskSpec(kind="job", queue="plain")).result()
    assert len(broker.lease(["plain"], 5).result().tasks) == 1  # then the queue runs empty
    assert broker.lease(["plain"], 5).result().tasks == []
    assert not broker.has_leasable(["plain"])
    assert counter.seeks == 0
    broker.enqueue(TaskSpec(kind="job", queue="plain", concurrency_key="k")).result()
    assert broker.has_leasable(["plain"])  # a keyed queue is still looked at
    assert len(broker.lease(["plain"], 5).result().tasks) == 1
