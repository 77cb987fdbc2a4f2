"""/metrics on a real broker: the counters equal a known workload, the text passes
`promtool check metrics`, an empty --metrics-listen turns it off, a busy port is refused."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Callable

import pytest

from conveyor import Client
from conveyor.errors import NotFound
from conveyor_server.testing import BrokerProcess
from tests.conftest import require_tool
from tests.metrics.helpers import scrape, value

BrokerFactory = Callable[..., BrokerProcess]


def test_counters_and_depths_equal_the_workload(broker: BrokerProcess) -> None:
    client = Client(broker.address)
    try:
        client.enqueue_many([("resize", {"n": i}) for i in range(20)], queue="images")
        client.enqueue("mail", {}, queue="emails")
        leased = client.lease("images", 12, worker_id="w-1")
        assert len(leased) == 12
        for task in leased[:8]:
            client.ack(task, {"ok": True})
        for task in leased[8:]:
            client.fail(task, "ValueError", "bad input", retryable=False)
        with pytest.raises(NotFound):
            client.get_task("no-such-task")
    finally:
        client.close()
    text = scrape(broker.metrics_address)

    assert value(text, "conveyor_tasks_enqueued_total", queue="images", kind="resize") == 20
    assert value(text, "conveyor_tasks_enqueued_total", queue="emails", kind="mail") == 1
    assert value(text, "conveyor_tasks_leased_total", queue="images") == 12
    assert value(text, "conveyor_tasks_acked_total", queue="images") == 8
    assert value(text, "conveyor_tasks_failed_total", queue="images") == 4
    assert value(text, "conveyor_tasks_dead_total", queue="images") == 4
    assert value(text, "conveyor_tasks_retried_total") == 0
    assert value(text, "conveyor_queue_depth", queue="images", state="READY") == 8
    assert value(text, "conveyor_queue_depth", queue="images", state="SUCCEEDED") == 8
    assert value(text, "conveyor_queue_depth", queue="images", state="DEAD") == 4
    assert value(text, "conveyor_queue_depth", queue="images", state="LEASED") == 0
    assert value(text, "conveyor_queue_oldest_ready_age_seconds", queue="images") > 0
    assert value(text, "conveyor_task_queue_wait_seconds_count", queue="images") == 12
    assert value(text, "conveyor_task_run_seconds_count", queue="images") == 12
    assert value(text, "conveyor_task_turnaround_seconds_count", queue="images") == 12
    assert value(text, "conveyor_workers_seen") == 1

    ack = {"grpc_service": "conveyor.v1.WorkerService", "grpc_method": "Ack"}
    assert value(text, "grpc_server_handled_total", grpc_code="OK", **ack) == 8
    assert value(text, "grpc_server_started_total", **ack) == 8
    assert value(text, "grpc_server_handling_seconds_count", **ack) == 8
    get = {"grpc_service": "conveyor.v1.TaskService", "grpc_method": "GetTask"}
    assert value(text, "grpc_server_handled_total", grpc_code="NOT_FOUND", **get) == 1
    assert value(text, "conveyor_store_commit_seconds_count") >= 1
    assert value(text, "conveyor_store_commit_writes_sum") >= 1 + 1 + 1 + 8 + 4
    assert 0 < value(text, "conveyor_store_used_bytes") <= value(text, "conveyor_store_file_bytes")
    assert value(text, "conveyor_store_limit_bytes") == 32 << 30
    assert value(text, "conveyor_build_info") == 1


def test_depths_are_right_after_a_restart(broker: BrokerProcess) -> None:
    client = Client(broker.address)
    try:
        client.enqueue_many([("job", None)] * 5, queue="kept")
        client.lease("kept", 2)
    finally:
        client.close()
    broker.restart()
    text = scrape(broker.metrics_address)
    assert value(text, "conveyor_queue_depth", queue="kept", state="READY") == 3
    assert value(text, "conveyor_queue_depth", queue="kept", state="LEASED") == 2
    assert value(text, "conveyor_tasks_enqueued_total") == 0, "counters start again at 0"


def test_a_live_scrape_passes_promtool_check_metrics(broker: BrokerProcess) -> None:
    promtool = require_tool("promtool")
    client = Client(broker.address)
    try:
        task = client.enqueue("job", {"a": 1}, queue="lint")
        client.ack(client.lease("lint", 1)[0], None)
        assert client.result(task.id, timeout=5) is None
    finally:
        client.close()
    text = scrape(broker.metrics_address)
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip() == "" and checked.stderr.strip() == ""


def test_an_empty_metrics_listen_turns_metrics_off(broker_factory: BrokerFactory) -> None:
    broker = broker_factory("--metrics-listen", "")
    assert broker.metrics_address == ""
    assert "metrics on" not in broker.log


def test_a_busy_metrics_port_is_refused(tmp_path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "conveyor_server", "serve", "--listen", "127.0.0.1:0",
             "--data-dir", str(tmp_path / "d"), "--metrics-listen", f"127.0.0.1:{port}"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert f"cannot serve metrics on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
