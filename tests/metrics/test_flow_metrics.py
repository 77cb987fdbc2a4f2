"""Flow-control metrics: throttled leases by queue and reason, and each queue's set limits;
the recorder and collector alone, then a real broker's scrape."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from conveyor import Client
from conveyor_server.service.metrics import Metrics
from conveyor_server.service.metrics.exporter import ConveyorCollector, Sources
from conveyor_server.service.metrics.tasks import TaskMetrics
from conveyor_server.testing import BrokerProcess
from tests.metrics.helpers import samples, scrape, value


def _scrape(metrics: Metrics, limits: dict[str, dict[str, float]] | None) -> str:
    sources = Sources(depths=list, parked=lambda: 0, limits=(lambda: limits) if limits else None)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ConveyorCollector(metrics, sources))
    return generate_latest(registry).decode()


def test_throttled_passes_are_counted_by_queue_and_reason_with_capped_queues() -> None:
    metrics = Metrics(tasks=TaskMetrics(max_queues=2))
    metrics.tasks.throttled([("a", "rate"), ("a", "rate"), ("b", "concurrency")])
    metrics.tasks.throttled([("c", "key_concurrency"), ("d", "key_concurrency")])
    text = _scrape(metrics, None)
    assert value(text, "conveyor_lease_throttled_total", queue="a", reason="rate") == 2
    assert value(text, "conveyor_lease_throttled_total", queue="b", reason="concurrency") == 1
    other = {"queue": "other", "reason": "key_concurrency"}
    assert value(text, "conveyor_lease_throttled_total", **other) == 2
    assert value(text, "conveyor_lease_throttled_total") == 5


def test_only_the_limits_that_are_set_are_exported() -> None:
    limits = {"emails": {"rate": 10.0, "burst": 0, "concurrency": 5, "key_concurrency": 0}}
    text = _scrape(Metrics(), limits)
    exported = {
        dict(labels)["limit"]: v
        for (name, labels), v in samples(text).items()
        if name == "conveyor_queue_limit"
    }
    assert exported == {"rate": 10.0, "concurrency": 5.0}


def test_no_limits_source_exports_no_limit_samples() -> None:
    text = _scrape(Metrics(), None)
    assert "# TYPE conveyor_queue_limit gauge" in text
    assert not [name for name, _ in samples(text) if name == "conveyor_queue_limit"]


def _limits(text: str, queue: str) -> dict[str, float]:
    return {
        dict(labels)["limit"]: v
        for (name, labels), v in samples(text).items()
        if name == "conveyor_queue_limit" and dict(labels)["queue"] == queue
    }


def test_a_live_scrape_counts_throttled_leases_and_shows_set_limits(broker: BrokerProcess) -> None:
    with Client(broker.address) as client:
        client.update_queue("capped", concurrency=2, key_concurrency=1)
        client.update_queue("metered", rate=2.0, burst=1)
        client.enqueue_many([("k", {})] * 3, queue="capped", concurrency_key="tenant")
        client.enqueue_many([("k", {})] * 3, queue="capped")
        client.enqueue_many([("k", {})] * 3, queue="metered")
        assert len(client.lease("capped", 10)) == 2  # one of the key, one without
        assert len(client.lease("metered", 10)) == 1  # the bucket holds one
        assert client.lease("metered", 10) == []  # and is empty now
        text = scrape(broker.metrics_address)
        assert _limits(text, "capped") == {"concurrency": 2, "key_concurrency": 1}
        assert _limits(text, "metered") == {"rate": 2.0, "burst": 1}
        assert value(text, "conveyor_lease_throttled_total", queue="metered", reason="rate") >= 1
        capped = value(text, "conveyor_lease_throttled_total", queue="capped")
        assert capped >= 1
        client.update_queue("capped", concurrency=0, key_concurrency=0)  # cleared: not shown
        text = scrape(broker.metrics_address)
        assert _limits(text, "capped") == {}
