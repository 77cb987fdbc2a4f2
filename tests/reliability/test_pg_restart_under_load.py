"""PostgreSQL itself crashes (`pg_ctl stop -m immediate`) and comes back, under load on two
brokers. While it is down every probe on either broker (a write, a read, a Lease) answers
UNAVAILABLE, promptly: not INTERNAL, not a hang, not an empty answer. Once it is back both
brokers serve again without a restart of their own, nothing acknowledged is lost (the
ledger: lost, resurrected, twice and unexpected all 0), and a worker parked on one broker
still wakes for a task enqueued on the other (the LISTEN connections came back). The
server runs with fsync on: an immediate stop is a crash, and an acknowledged commit must
survive it. CI: 2 outages; CONVEYOR_LONG_TESTS=1: 10.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

import grpc
import pytest

from conveyor.v1 import (
    task_pb2,
    task_service_pb2,
    task_service_pb2_grpc,
    worker_service_pb2,
    worker_service_pb2_grpc,
)
from conveyor_server.testing.postgres import PostgresServer
from tests.conftest import require_postgres
from tests.reliability.conftest import ClusterFactory
from tests.reliability.ledger import Ledger, count
from tests.reliability.load import Load, channel, read_back
from tests.reliability.sizes import pick
from tests.reliability.test_broker_sigkill import LEASE_SECONDS, _drain
from tests.reliability.test_pg_cross_broker_wakeup import latencies, lease_worker, stream_worker

pytestmark = pytest.mark.postgres

OUTAGES = pick(2, 10)
DOWN_SECONDS = 3.0
PROMPT_SECONDS = 4.0  # a probe answers within this while PostgreSQL is down


def _probe(address: str, n: int) -> list[tuple[str, float]]:
    """An Enqueue (a write), a GetTask (a read) and a Lease without a wait: each call's
    status code name and how long its answer took."""
    conn = channel(address)
    tasks = task_service_pb2_grpc.TaskServiceStub(conn)
    workers = worker_service_pb2_grpc.WorkerServiceStub(conn)
    spec = task_pb2.TaskSpec(id=f"probe-{n}", queue="probe", kind="job")
    calls = [
        lambda: tasks.Enqueue(task_service_pb2.EnqueueRequest(task=spec), timeout=10),
        lambda: tasks.GetTask(task_service_pb2.GetTaskRequest(task_id="0-0"), timeout=10),
        lambda: workers.Lease(worker_service_pb2.LeaseRequest(queues=["probe"]), timeout=10),
    ]
    answers = []
    for call in calls:
        started = time.monotonic()
        try:
            call()
            code = "OK"
        except grpc.RpcError as exc:
            code = exc.code().name
        answers.append((code, time.monotonic() - started))
    conn.close()
    return answers


def _wait_serving(address: str, timeout: float) -> float:
    started = time.monotonic()
    n = 0
    while time.monotonic() - started < timeout:
        n += 1
        if _probe(address, 10_000 + n)[0][0] == "OK":
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"{address} did not serve again within {timeout} s")


@pytest.fixture
def crashable_postgres() -> Iterator[PostgresServer]:
    require_postgres()
    server = PostgresServer(fsync=True).start()
    yield server
    server.stop()


@pytest.mark.timeout(pick(180, 1200))
def test_postgres_crash_under_load_answers_unavailable_then_loses_nothing(
    crashable_postgres: PostgresServer, pg_cluster: ClusterFactory, capsys
):
    url = crashable_postgres.create_database("restart")
    brokers = pg_cluster(2, database_url=url)
    ledger = Ledger()
    loads = [
        Load(b.address, ledger, lease_seconds=LEASE_SECONDS, name_prefix=f"{i}")
        for i, b in enumerate(brokers)
    ]
    for load in loads:
        load.start(producers=2, workers=1, stream_workers=1)
    codes: Counter[str] = Counter()
    slowest = 0.0
    recoveries: list[float] = []
    n = 0
    try:
        for _ in range(OUTAGES):
            time.sleep(3.0)
            crashable_postgres.stop(mode="immediate", remove=False)
            down_until = time.monotonic() + DOWN_SECONDS
            while time.monotonic() < down_until:
                for broker in brokers:
                    n += 1
                    for code, took in _probe(broker.address, n):
                        codes[code] += 1
                        slowest = max(slowest, took)
                time.sleep(0.1)
            crashable_postgres.start()
            recoveries += [_wait_serving(b.address, timeout=30) for b in brokers]
        time.sleep(2.0)
        for load in loads:
            load.stop_producers()
        _drain(loads[0], brokers[0].address, timeout=60)
    finally:
        for load in loads:
            load.stop()
    counts = count(ledger, read_back(brokers[1].address, ledger.ids()))
    # the LISTEN connections came back too: parked workers on one broker still wake up
    # for tasks enqueued on the other
    a, b = (x.address for x in brokers)
    woken = latencies(a, b, "after-lease", lease_worker, rounds=20)
    woken += latencies(b, a, "after-stream", stream_worker, rounds=20)
    with capsys.disabled():
        print(
            f"\nPostgreSQL crashed {OUTAGES}x under load: probes while down {dict(codes)}, "
            f"slowest answer {slowest:.2f} s, serving again after "
            f"{max(recoveries):.2f} s at most; {counts.line()}; wake-ups after: "
            f"max {max(woken) * 1000:.0f} ms"
        )
    errors = loads[0].errors + loads[1].errors
    assert not errors, errors
    assert set(codes) == {"UNAVAILABLE"}, codes
    assert slowest < PROMPT_SECONDS
    assert all(b.process is not None and b.process.poll() is None for b in brokers)
    assert counts.tasks > 200
    assert max(woken) < 1.0, sorted(woken)[-5:]
    assert counts.lost == [], counts.lost[:20]
    assert counts.resurrected == [], counts.resurrected[:20]
    assert counts.twice == [], counts.twice[:20]
    assert counts.unexpected == [], counts.unexpected[:20]
