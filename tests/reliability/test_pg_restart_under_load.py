"""PostgreSQL itself crashes (`pg_ctl stop -m immediate`) and comes back, under load on two
brokers. While it is down every probe on either broker answers UNAVAILABLE, promptly (not
INTERNAL, not a hang); once it is back both brokers serve again without a restart of
their own, and nothing acknowledged is lost (the ledger: lost, resurrected, twice and
unexpected all 0). The server runs with fsync on: an immediate stop is a crash, and an
acknowledged commit must survive it. CI: 2 outages; CONVEYOR_LONG_TESTS=1: 10.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

import grpc
import pytest

from conveyor.v1 import task_pb2, task_service_pb2, task_service_pb2_grpc
from conveyor_server.testing.postgres import PostgresServer
from tests.conftest import require_postgres
from tests.reliability.conftest import ClusterFactory
from tests.reliability.ledger import Ledger, count
from tests.reliability.load import Load, channel, read_back
from tests.reliability.sizes import pick
from tests.reliability.test_broker_sigkill import LEASE_SECONDS, _drain

pytestmark = pytest.mark.postgres

OUTAGES = pick(2, 10)
DOWN_SECONDS = 3.0
PROMPT_SECONDS = 4.0  # a probe answers within this while PostgreSQL is down


def _probe(address: str, n: int) -> tuple[str, float]:
    """One Enqueue: its status code name and how long the answer took."""
    stub = task_service_pb2_grpc.TaskServiceStub(channel(address))
    spec = task_pb2.TaskSpec(id=f"probe-{address}-{n}", queue="probe", kind="job")
    started = time.monotonic()
    try:
        stub.Enqueue(task_service_pb2.EnqueueRequest(task=spec), timeout=10)
        code = "OK"
    except grpc.RpcError as exc:
        code = exc.code().name
    return code, time.monotonic() - started


def _wait_serving(address: str, timeout: float) -> float:
    started = time.monotonic()
    n = 0
    while time.monotonic() - started < timeout:
        n += 1
        if _probe(address, 10_000 + n)[0] == "OK":
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
                    code, took = _probe(broker.address, n)
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
    with capsys.disabled():
        print(
            f"\nPostgreSQL crashed {OUTAGES}x under load: probes while down {dict(codes)}, "
            f"slowest answer {slowest:.2f} s, serving again after "
            f"{max(recoveries):.2f} s at most; {counts.line()}"
        )
    errors = loads[0].errors + loads[1].errors
    assert not errors, errors
    assert set(codes) == {"UNAVAILABLE"}, codes
    assert slowest < PROMPT_SECONDS
    assert all(b.process is not None and b.process.poll() is None for b in brokers)
    assert counts.tasks > 200
    assert counts.lost == [], counts.lost[:20]
    assert counts.resurrected == [], counts.resurrected[:20]
    assert counts.twice == [], counts.twice[:20]
    assert counts.unexpected == [], counts.unexpected[:20]
