"""Flow-control metrics: leases a limit held back, and each queue's limits.

`conveyor_lease_throttled_total{queue,reason}` comes from TaskMetrics.throttled (fed by
the engine from LeaseBatch.throttled); `conveyor_queue_limit{queue,limit}` is read at
scrape time from the queues' stored settings, one sample per limit that is set (a limit
of 0 means none and is left out, so `conveyor_queue_limit` lists only what holds).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from conveyor_server.core.flow import QueueLimits
from conveyor_server.service.metrics.histogram import OTHER, LabelCap

#: queue -> {limit name -> value}, limit names as in QueueLimits (rate, burst, ...).
LimitsSource = Callable[[], Mapping[str, Mapping[str, float]]]
#: The reasons LeaseBatch.throttled gives, in export order.
REASONS = ("rate", "concurrency", "key_concurrency")


def limit_values(limits: QueueLimits) -> dict[str, float]:
    """A queue's limits by name (QueueLimits' fields), for LimitsSource."""
    return {name: float(value) for name, value in asdict(limits).items()}


def throttled_family(counts: Mapping[tuple[str, str], int]) -> Metric:
    family = CounterMetricFamily(
        "conveyor_lease_throttled",
        "Lease passes in which a queue had READY tasks that a flow limit held back, by the "
        "limit that held them (rate, concurrency, key_concurrency).",
        labels=["queue", "reason"],
    )
    for (queue, reason), value in sorted(counts.items()):
        family.add_metric([queue, reason], value)
    return family


def limit_families(limits: LimitsSource | None, label: LabelCap) -> Iterator[Metric]:
    """conveyor_queue_limit: the queue's stored limits that are set (non-zero)."""
    family = GaugeMetricFamily(
        "conveyor_queue_limit",
        "A queue's flow limit as stored: rate (tasks leased per second), burst (bucket "
        "size), concurrency (most LEASED at once), key_concurrency (most LEASED per "
        "concurrency_key). Unset limits are not exported.",
        labels=["queue", "limit"],
    )
    if limits is not None:
        for queue, values in sorted(limits().items()):
            name = label(queue)
            if name == OTHER:  # past the label cap: limits of other queues do not add up
                continue
            for limit, value in values.items():
                if value:
                    family.add_metric([name, limit], float(value))
    yield family
