"""`conveyor limit` and the LIMITS of `conveyor queues` against a real broker, as subprocesses."""

from __future__ import annotations

import json
import uuid

import pytest

from conveyor import Client
from conveyor import QueueLimits as Limits
from tests.e2e.test_cli_people import conveyor


@pytest.fixture
def queue() -> str:
    return f"lim-{uuid.uuid4().hex[:8]}"


def test_limit_changes_only_the_limits_named_and_queues_shows_them(shared_broker, queue) -> None:
    address = shared_broker.address
    out = conveyor("limit", queue, "--rate", "10", "--burst", "20", target=address)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"queue {queue}: rate 10/s (burst 20)"
    out = conveyor("limit", queue, "--concurrency", "5", "--key-concurrency", "1", target=address)
    assert out.stdout.strip() == f"queue {queue}: rate 10/s (burst 20), concurrency 5, 1 per key"
    with Client(address) as client:
        assert client.get_queue(queue).limits == Limits(10.0, 20, 5, 1)
    table = conveyor("queues", target=address)
    [row] = [line for line in table.stdout.splitlines() if line.split()[:1] == [queue]]
    assert row.rstrip().endswith("rate 10/s (burst 20), concurrency 5, 1 per key")
    listed = json.loads(conveyor("queues", "--json", target=address).stdout)
    [mine] = [q for q in listed if q["name"] == queue]
    assert mine["limits"] == {"rate": 10.0, "burst": 20, "concurrency": 5, "key_concurrency": 1}


def test_clear_removes_every_limit_before_the_flags(shared_broker, queue) -> None:
    address = shared_broker.address
    conveyor("limit", queue, "--rate", "3", "--concurrency", "4", target=address)
    out = conveyor("limit", queue, "--clear", "--key-concurrency", "2", target=address)
    assert out.stdout.strip() == f"queue {queue}: 2 per key"
    out = conveyor("limit", queue, "--json", target=address)  # no flag: shows
    assert json.loads(out.stdout)["limits"] == {
        "rate": 0.0,
        "burst": 0,
        "concurrency": 0,
        "key_concurrency": 2,
    }
    conveyor("limit", queue, "--clear", target=address)
    with Client(address) as client:
        client.enqueue("k", {}, queue=queue)  # so that the queue exists without limits
    out = conveyor("limit", queue, target=address)
    assert out.stdout.strip() == f"queue {queue}: no limits"


def test_a_value_the_broker_refuses_is_one_line_and_exit_2(shared_broker, queue) -> None:
    out = conveyor("limit", queue, "--rate", "1e12", target=shared_broker.address)
    assert out.returncode == 2, out.stderr
    [line] = out.stderr.strip().splitlines()
    assert line.startswith("conveyor limit: ") and "rate" in line


def test_showing_a_queue_that_does_not_exist_is_not_found(shared_broker, queue) -> None:
    out = conveyor("limit", queue, target=shared_broker.address)
    assert out.returncode == 1
    assert len(out.stderr.strip().splitlines()) == 1 and "not found" in out.stderr
