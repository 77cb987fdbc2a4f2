"""Two PostgreSQL brokers on the same limited queues: a lease locks the queues' flow rows
in queue order (no crosswise locks), and a deadlock PostgreSQL breaks anyway is a conflict
to retry, never an unavailable store."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from conveyor_server.core.broker import Broker
from conveyor_server.core.clock import FakeClock
from conveyor_server.core.flow import QueueFlow, QueueLimits
from conveyor_server.core.settings import BrokerSettings
from tests.store.conftest import NOW, empty_postgres

pytest.importorskip("psycopg")

import psycopg

from conveyor_server.store.pg_store import PgStore


@pytest.fixture
def limited(postgres_url: str) -> Iterator[tuple[str, PgStore, PgStore]]:
    """Two stores on one database where queues q1 and q2 have a concurrency limit."""
    empty_postgres(postgres_url)
    a, b = PgStore(postgres_url), PgStore(postgres_url)

    def limit(txn: Any) -> None:
        for queue in ("q1", "q2"):
            txn.put_queue_flow(queue, QueueFlow(QueueLimits(concurrency=5), 0.0, NOW))

    a.write(limit).result(timeout=10)
    yield postgres_url, a, b
    a.close()
    b.close()


def _locker(first: str, second: str, barrier: threading.Barrier) -> Any:
    """A write that locks two flow rows, meeting the other writer in between (first
    attempt only: a retry runs straight through)."""
    calls = []

    def fn(txn: Any) -> str:
        calls.append(1)
        txn.get_queue_flow(first)
        if len(calls) == 1:
            barrier.wait(timeout=10)
        txn.get_queue_flow(second)
        return f"{first}+{second}"

    return fn


def test_a_deadlock_between_two_stores_is_retried_not_unavailable(limited) -> None:
    _, a, b = limited
    barrier = threading.Barrier(2)
    one = a.write(_locker("q1", "q2", barrier))
    two = b.write(_locker("q2", "q1", barrier))
    # PostgreSQL breaks the deadlock (deadlock_timeout, 1 s): the victim runs again.
    assert one.result(timeout=30) == "q1+q2"
    assert two.result(timeout=30) == "q2+q1"
    assert a.read(lambda txn: txn.get_queue_flow("q1")) is not None  # both still connected
    assert b.read(lambda txn: txn.get_queue_flow("q1")) is not None


def _waiting_on_a_lock(url: str, deadline: float) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND datname = current_database()"
            ).fetchone()
            if row[0]:
                return True
            time.sleep(0.02)
    return False


def test_a_lease_locks_its_queues_flow_rows_in_queue_order(limited) -> None:
    url, a, b = limited
    broker = Broker(b, FakeClock(NOW), BrokerSettings(), rng=random.Random(1))
    held, release = threading.Event(), threading.Event()

    def hold_q1(txn: Any) -> None:
        txn.get_queue_flow("q1")  # another broker's lease holds q1's row
        held.set()
        release.wait(timeout=20)

    holder = a.write(hold_q1)
    try:
        assert held.wait(timeout=10)
        lease = broker.lease(["q2", "q1"], 5)  # lists q2 first: must still lock q1 first
        assert _waiting_on_a_lock(url, time.monotonic() + 10)
        with psycopg.connect(url) as probe:  # q2 is free while the lease waits for q1
            probe.execute(
                "SELECT queue FROM conveyor_queue_flows WHERE queue = 'q2' FOR UPDATE NOWAIT"
            ).fetchall()
            probe.rollback()
    finally:
        release.set()
    holder.result(timeout=10)
    assert lease.result(timeout=10).tasks == []


def test_a_limit_set_through_another_broker_binds_the_next_lease(limited) -> None:
    from conveyor_server.core.model import TaskSpec
    from conveyor_server.core.queues import QueueAdmin, QueueUpdate

    _, a, b = limited
    clock = FakeClock(NOW)
    first = Broker(a, clock, BrokerSettings(), rng=random.Random(1))
    second = Broker(b, clock, BrokerSettings(), rng=random.Random(2))  # no limit on "q" yet
    for _ in range(10):
        first.enqueue(TaskSpec(kind="k", queue="q")).result(timeout=10)
    QueueAdmin(first).update("q", QueueUpdate({"concurrency": 2})).result(timeout=10)
    assert len(second.lease(["q"], 10).result(timeout=10).tasks) == 2


def test_ready_heads_fills_the_page_past_a_key_another_broker_holds(limited, make_task) -> None:
    _, a, b = limited
    tasks = {key: make_task(queue="q", concurrency_key=key) for key in "abcd"}

    def put(txn: Any) -> None:
        for task in tasks.values():
            txn.put_task(task, is_new=True)

    a.write(put).result(timeout=10)
    held, release = threading.Event(), threading.Event()

    def hold_b(txn: Any) -> None:
        assert txn.ready_task_ids("q", 1, "b") == [tasks["b"].id]  # locked till commit
        held.set()
        release.wait(timeout=20)

    holder = a.write(hold_b)
    try:
        assert held.wait(timeout=10)
        page = b.write(lambda txn: txn.ready_heads("q", "", 2)).result(timeout=10)
        rest = b.write(lambda txn: txn.ready_heads("q", "c", 2)).result(timeout=10)
    finally:
        release.set()
    holder.result(timeout=10)
    assert page == [("a", tasks["a"].id), ("c", tasks["c"].id)]  # a full page: b skipped
    assert rest == [("d", tasks["d"].id)]  # short: the keys end
