"""Node and Go clients built from proto/ alone, against a real broker and the Python SDK.

The examples in examples/node and examples/go are the code under test: they print one JSON
line per event, which these tests read. Both directions run (a foreign worker serving a
Python producer, a Python SDK worker serving a foreign producer), over unary calls and
StreamWork, with redelivery after a foreign worker is killed and stale-token fencing.
"""

from __future__ import annotations

import signal
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from conveyor import Client, LeaseLost
from conveyor_server.testing import BrokerProcess
from conveyor_worker import Worker
from tests.interop.conftest import Language

FAILED_PRECONDITION = 9


@pytest.fixture
def queue() -> str:
    return f"interop-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def client(shared_broker: BrokerProcess) -> Iterator[Client]:
    with Client(shared_broker.address) as c:
        yield c


@contextmanager
def python_worker(address: str, queue: str, kind: str) -> Iterator[Worker]:
    """A Python SDK worker in a thread whose handler says which language ran it."""
    worker = Worker(address, queues=[queue], concurrency=4, poll_wait=1)

    @worker.handler(kind)
    def shout(payload, ctx):
        return {
            "upper": str(payload.get("text", "")).upper(),
            "attempt": ctx.attempt,
            "worker": "python",
        }

    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(30)
        assert not thread.is_alive(), "the Python worker did not stop"


@pytest.mark.parametrize("transport", ["unary", "stream"])
def test_python_producer_foreign_worker_python_reads_result(
    lang: Language, transport, spawn, shared_broker, client, queue
):
    payloads = [{"n": n, "text": "é"} for n in range(3)]
    tasks = [client.enqueue("interop.echo", p, queue=queue) for p in payloads]
    args = ["--queue", queue, "--count", "3"] + (["--stream"] if transport == "stream" else [])
    worker = spawn(lang, "worker", shared_broker.address, *args)
    for task, payload in zip(tasks, payloads, strict=True):
        # The foreign worker acked with content type application/json: Python decodes it.
        assert client.result(task.id, timeout=15) == {
            "echo": payload,
            "kind": "interop.echo",
            "attempt": 1,
            "worker": lang.name,
        }
    events = worker.finish()
    assert sorted(e["id"] for e in events if e["event"] == "acked") == sorted(t.id for t in tasks)


def test_foreign_producer_python_sdk_worker_foreign_reads_result(
    lang: Language, spawn, shared_broker, queue
):
    with python_worker(shared_broker.address, queue, "interop.shout"):
        producer = spawn(
            lang,
            "producer",
            shared_broker.address,
            *("--queue", queue, "--kind", "interop.shout", "--payload", '{"text": "hi"}'),
            *("--count", "2", "--result", "15"),
        )
        lines = producer.finish()
    assert len(lines) == 2
    for line in lines:
        assert line["state"] == "TASK_STATE_SUCCEEDED" and line["is_final"]
        assert line["content_type"] == "application/json"  # the Python SDK's default
        assert line["result"] == {"upper": "HI", "attempt": 1, "worker": "python"}


def test_a_killed_foreign_worker_has_its_task_rerun_by_a_python_worker(
    lang: Language, spawn, shared_broker, client, queue
):
    task = client.enqueue("interop.shout", {"text": "again", "sleep_ms": 60_000}, queue=queue)
    worker = spawn(lang, "worker", shared_broker.address, "--queue", queue, "--lease-seconds", "1")
    assert worker.wait_for("leased")["id"] == task.id
    worker.kill()  # SIGKILL mid-task: no release, no ack; only the lease running out helps
    killed_at = time.monotonic()
    with python_worker(shared_broker.address, queue, "interop.shout"):
        result = client.result(task.id, timeout=15)
    assert result == {"upper": "AGAIN", "attempt": 2, "worker": "python"}
    assert time.monotonic() - killed_at < 10


@pytest.mark.parametrize("transport", ["unary", "stream"])
def test_a_foreign_worker_with_a_stale_lease_is_rejected(
    lang: Language, transport, spawn, shared_broker, client, queue
):
    """The foreign worker stalls past its lease; Python takes the task over and acks it;
    the late ack from the foreign worker gets FAILED_PRECONDITION and changes nothing."""
    task = client.enqueue("interop.slow", {"sleep_ms": 1500}, queue=queue)
    # One slot: a worker with a free slot would lease the expired task again itself.
    args = [
        "--queue",
        queue,
        "--slots",
        "1",
        "--lease-seconds",
        "0.3",
        "--no-extend",
        "--count",
        "1",
    ]
    worker = spawn(
        lang, "worker", shared_broker.address, *args, *(["--stream"] * (transport == "stream"))
    )
    assert worker.wait_for("leased")["id"] == task.id
    [again] = client.lease(queue, lease_duration=30, wait=5)  # after the 0.3 s lease ran out
    assert (again.id, again.attempt) == (task.id, 2)
    client.ack(again, {"by": "python"})
    rejected = worker.wait_for("rejected")
    assert (rejected["id"], rejected["code"]) == (task.id, FAILED_PRECONDITION)
    worker.finish()
    assert client.result(task.id, timeout=5) == {"by": "python"}


def test_a_python_client_with_a_stale_lease_is_rejected(client, queue):
    """The same fencing from the Python client: LeaseLost is its FAILED_PRECONDITION."""
    task = client.enqueue("interop.slow", {}, queue=queue)
    [first] = client.lease(queue, lease_duration=0.2, wait=5)
    [second] = client.lease(queue, lease_duration=30, wait=5)
    assert (second.id, second.attempt) == (task.id, 2)
    with pytest.raises(LeaseLost):
        client.ack(first, {"by": "late"})
    client.ack(second, {"by": "current"})
    assert client.result(task.id, timeout=5) == {"by": "current"}


def test_a_foreign_worker_stops_gracefully_on_sigterm(
    lang: Language, spawn, shared_broker, client, queue
):
    """SIGTERM: the running task finishes and is acked, the queued one is left READY."""
    running, waiting = (
        client.enqueue("interop.echo", {"sleep_ms": 2000}, queue=queue, priority=p) for p in (1, 0)
    )
    worker = spawn(
        lang, "worker", shared_broker.address, "--queue", queue, "--slots", "1", "--stream"
    )
    assert worker.wait_for("leased")["id"] == running.id
    worker.signal(signal.SIGTERM)
    events = worker.finish()
    assert [e["id"] for e in events if e["event"] == "acked"] == [running.id]
    assert client.get_task(waiting.id).state.name == "READY"


def test_foreign_clients_send_the_bearer_token(lang: Language, spawn, broker_factory, queue):
    broker = broker_factory("--auth-token", "s3cret")
    args = ("--queue", queue, "--payload", "{}")
    refused = spawn(lang, "producer", broker.address, *args)
    assert refused.process.wait(20) != 0
    assert "unauthenticated" in refused.stderr().lower()
    accepted = spawn(lang, "producer", broker.address, *args, env={"CONVEYOR_TOKEN": "s3cret"})
    [line] = accepted.finish()
    assert line["state"] == "TASK_STATE_READY"
