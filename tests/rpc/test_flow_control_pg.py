"""Flow control across two brokers sharing one PostgreSQL database (real `conveyor serve`)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conveyor.v1 import queue_service_pb2 as pb2
from conveyor.v1 import queue_service_pb2_grpc
from conveyor_server.testing import BrokerProcess
from tests.rpc.helpers import connect, lease, seconds
from tests.rpc.test_flow_control import ack, fill, update


@pytest.mark.postgres
def test_limits_hold_across_brokers_and_a_slot_freed_on_one_wakes_the_other(
    template_databases, tmp_path
) -> None:
    url = template_databases.create()
    brokers = [BrokerProcess(tmp_path / name, database_url=url) for name in ("a", "b")]
    try:
        for broker in brokers:
            broker.start()
        _two_brokers(*(connect(broker.address) for broker in brokers))
    finally:
        for broker in brokers:
            broker.kill()
        template_databases.drop(url)


def _two_brokers(a, b) -> None:
    admin = queue_service_pb2_grpc.QueueServiceStub(a.channel)
    # A limit set through a binds b's very next Lease (not only after b's next refresh).
    fill(a, "solo", 10)
    update(admin, "solo", concurrency=2)
    assert len(lease(b, "solo", 10)) == 2
    update(admin, "shared", concurrency=3, key_concurrency=1)
    fill(a, "shared", 4, concurrency_key="x")
    fill(b, "shared", 4, concurrency_key="y")
    fill(a, "shared", 4)
    with ThreadPoolExecutor(4) as pool:
        leased = [t for f in [pool.submit(lease, s, "shared", 10) for s in (a, b, a, b)]
                  for t in f.result(timeout=10)]  # fmt: skip
    keys = sorted(t.concurrency_key for t in leased)
    assert len(leased) == 3 and keys.count("x") <= 1 and keys.count("y") <= 1, keys
    got = queue_service_pb2_grpc.QueueServiceStub(b.channel).GetQueue(
        pb2.GetQueueRequest(name="shared")
    )
    assert got.queue.limits.concurrency == 3
    with ThreadPoolExecutor(1) as pool:
        parked = pool.submit(lease, b, "shared", 1, wait=seconds(10))
        time.sleep(0.3)
        assert not parked.done()
        started = time.monotonic()
        ack(a, leased[0])  # finished through a: b's Lease learns of the free slot
        assert len(parked.result(timeout=5)) == 1
        assert time.monotonic() - started < 1.5
    for stubs in (a, b):
        stubs.channel.close()
