"""The dashboard against a real Prometheus: Debian's `prometheus`, started here on loopback
with a temp config and TSDB, scrapes a real broker running a known workload. Every panel's
PromQL runs through the HTTP API and returns data; the counters equal the workload."""

from __future__ import annotations

import json
import math
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from conveyor import Client
from conveyor.errors import NotFound
from conveyor_server.testing import BrokerProcess
from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "conveyor.json"
#: What Grafana puts in place of the dashboard's variables ("All", and a rate window that
#: spans both workload phases at a 1 s scrape interval).
VARIABLES = {"$__rate_interval": "1m", "$instance": ".*", "$queue": ".*"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Prometheus:
    def __init__(self, address: str) -> None:
        self.address = address

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"http://{self.address}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", (expr, body)
        assert body["data"]["resultType"] == "vector", expr
        return body["data"]["result"]

    def scalar(self, expr: str) -> float:
        result = self.query(expr)
        assert len(result) == 1, (expr, result)
        return float(result[0]["value"][1])

    def wait_for(self, expr: str, wanted: float, timeout: float = 30.0) -> None:
        """Until `expr` (one series) equals `wanted`: Prometheus has scraped that far."""
        deadline = time.monotonic() + timeout
        seen: object = None
        while time.monotonic() < deadline:
            result = self.query(expr)
            seen = [r["value"][1] for r in result]
            if len(result) == 1 and float(result[0]["value"][1]) == wanted:
                return
            time.sleep(0.25)
        raise AssertionError(f"{expr} never became {wanted} (last: {seen})")


@pytest.fixture
def prometheus(broker: BrokerProcess, tmp_path: Path) -> Iterator[Prometheus]:
    binary = require_tool("prometheus")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: conveyor\n"
        f"    static_configs:\n      - targets: ['{broker.metrics_address}']\n"
    )
    address = f"127.0.0.1:{_free_port()}"
    with (tmp_path / "prometheus.log").open("w") as log:
        process = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address={address}", "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        server = Prometheus(address)
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://{address}/-/ready", timeout=2) as ready:
                    if ready.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    "prometheus did not start:\n" + (tmp_path / "prometheus.log").read_text()
                )
            time.sleep(0.2)
        server.wait_for('up{job="conveyor"}', 1)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


#: One phase of the workload: how many tasks end each way.
PHASE = {"ack": 6, "dead": 2, "retry": 1}


def _phase(client: Client, scrape_total: Callable[[str], float]) -> None:
    """Every outcome once or more: enqueue, lease, ack, fail (dead, retried), cancel,
    a deadline that passes, a lease that runs out, a NOT_FOUND, and a lease a
    concurrency limit holds back."""
    work = sum(PHASE.values())
    client.enqueue_many([("resize", {"n": i}) for i in range(work)], queue="images")
    held = client.enqueue("mail", {}, queue="emails")
    client.enqueue("report", {}, queue="late", deadline=datetime.now(UTC) + timedelta(seconds=0.3))
    client.enqueue("slow", {}, queue="slow")
    leased = client.lease("images", work, worker_id="w-1")
    assert len(leased) == work
    for task in leased[: PHASE["ack"]]:
        client.ack(task, {"ok": True})
    for task in leased[PHASE["ack"] : PHASE["ack"] + PHASE["dead"]]:
        client.fail(task, "ValueError", "bad input", retryable=False)
    for task in leased[PHASE["ack"] + PHASE["dead"] :]:
        client.fail(task, "TimeoutError", "try later", retry_delay=3600)
    client.cancel(held.id)
    client.update_queue("limited", concurrency=1, rate=1000)
    client.enqueue_many([("send", {}), ("send", {})], queue="limited")
    [first] = client.lease("limited", 2)  # the limit lets one through
    assert client.lease("limited", 1) == []  # and holds the other back: throttled
    client.ack(first)
    assert len(client.lease("slow", 1, lease_duration=1, worker_id="w-2")) == 1
    with pytest.raises(NotFound):
        client.get_task("no-such-task")
    before_expired = scrape_total("expired")
    before_lease_expired = scrape_total("lease_expired")
    deadline = time.monotonic() + 20
    while scrape_total("expired") == before_expired or (
        scrape_total("lease_expired") == before_lease_expired
    ):
        assert time.monotonic() < deadline, "the deadline and the lease never ran out"
        time.sleep(0.1)


def test_every_dashboard_query_returns_data_and_counters_equal_the_workload(
    broker: BrokerProcess, prometheus: Prometheus
) -> None:
    from tests.metrics.helpers import scrape, value

    def scrape_total(outcome: str) -> float:
        return value(scrape(broker.metrics_address), f"conveyor_tasks_{outcome}_total")

    client = Client(broker.address)
    try:
        # Two phases, each seen by Prometheus: a counter's series appears in the first and
        # increases in the second, so every rate() in the dashboard has something to show.
        _phase(client, scrape_total)
        prometheus.wait_for("sum(conveyor_tasks_lease_expired_total)", 1)
        time.sleep(1.5)
        _phase(client, scrape_total)
    finally:
        client.close()
    prometheus.wait_for("sum(conveyor_tasks_lease_expired_total)", 2)
    time.sleep(1.5)

    work = sum(PHASE.values())
    expected = {
        "enqueued": 2 * (work + 3 + 2),
        "leased": 2 * (work + 1 + 1),
        "acked": 2 * (PHASE["ack"] + 1),
        "failed": 2 * (PHASE["dead"] + PHASE["retry"]),
        "dead": 2 * PHASE["dead"],
        "retried": 2 * PHASE["retry"] + 2,  # the fails to retry, and the leases that ran out
        "cancelled": 2,
        "expired": 2,
        "lease_expired": 2,
    }
    for outcome, count in expected.items():
        assert prometheus.scalar(f"sum(conveyor_tasks_{outcome}_total)") == count, outcome
    assert prometheus.scalar('sum(conveyor_queue_depth{queue="images", state="DEAD"})') == 4
    handled = 'sum(grpc_server_handled_total{grpc_method="Ack", grpc_code="OK"})'
    assert prometheus.scalar(handled) == 2 * (PHASE["ack"] + 1)
    missing = 'sum(grpc_server_handled_total{grpc_method="GetTask", grpc_code="NOT_FOUND"})'
    assert prometheus.scalar(missing) == 2
    throttled = 'sum(conveyor_lease_throttled_total{queue="limited", reason="concurrency"})'
    assert prometheus.scalar(throttled) >= 2
    assert prometheus.scalar('conveyor_queue_limit{queue="limited", limit="concurrency"}') == 1
    assert prometheus.scalar('conveyor_queue_limit{queue="limited", limit="rate"}') == 1000
    assert prometheus.query('conveyor_queue_limit{queue="limited", limit="burst"}') == []

    dashboard = json.loads(DASHBOARD.read_text())
    checked = 0
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            for variable, replacement in VARIABLES.items():
                expr = expr.replace(variable, replacement)
            assert "$" not in expr, f"{panel['title']}: unknown variable in {expr}"
            result = prometheus.query(expr)
            assert result, f"{panel['title']} / {target['legendFormat']}: no data from {expr}"
            values = [float(r["value"][1]) for r in result]
            assert any(math.isfinite(v) for v in values), f"{panel['title']}: only NaN: {expr}"
            checked += 1
    assert checked >= 27
