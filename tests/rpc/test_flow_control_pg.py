"""Flow control across two brokers sharing one PostgreSQL database (real `conveyor serve`)."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from conveyor.v1 import queue_service_pb2 as pb2
from conveyor.v1 import queue_service_pb2_grpc
from tests.rpc.helpers import connect, lease, seconds
from tests.rpc.test_flow_control import ack, fill, update


def test_limits_hold_across_brokers_and_a_slot_freed_on_one_wakes_the_other(
    postgres_server, broker_factory
) -> None:
    # its own database (the suite runs this once per broker_store, both times on PostgreSQL)
    url = postgres_server.create_database(f"flow_two_brokers_{uuid.uuid4().hex[:8]}")
    a = connect(broker_factory("--database-url", url).address)
    b = connect(broker_factory("--database-url", url).address)
    admin = queue_service_pb2_grpc.QueueServiceStub(a.channel)
    update(admin, "shared", concurrency=3, key_concurrency=1)
    fill(a, "shared", 4, concurrency_key="x")
    fill(b, "shared", 4, concurrency_key="y")
    fill(a, "shared", 4)
    time.sleep(1.0)  # b reads which queues have limits at least every 0.5 s
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
