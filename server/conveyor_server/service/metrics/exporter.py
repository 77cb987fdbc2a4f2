"""The /metrics endpoint: a prometheus_client Collector over the recorders, the store's
depth counts and sizes, and the engine's gauges; served by prometheus_client's HTTP
server on its own thread.

A scrape costs O(queues + methods): the depth counts are kept by the store in each
write (core/store.py `queue_depths`), never counted per scrape.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from conveyor_server.core.model import QueueDepth, TaskState
from conveyor_server.service.metrics import Metrics
from conveyor_server.service.metrics.flow import LimitsSource, limit_families, throttled_family
from conveyor_server.service.metrics.histogram import OTHER, Histogram
from conveyor_server.service.metrics.tasks import OUTCOMES, WORKER_WINDOW_SECONDS

log = logging.getLogger(__name__)

_OUTCOME_HELP = {
    "enqueued": "Tasks created (duplicates of an existing task are not counted).",
    "leased": "Tasks handed to a worker under a lease (each attempt counts).",
    "acked": "Attempts a worker acked: the task SUCCEEDED.",
    "failed": "Attempts a worker reported as failed (then retried, dead or cancelled).",
    "retried": "Failed or lease-expired attempts scheduled to run again.",
    "dead": "Tasks that ended DEAD: attempts used up or a non-retryable failure.",
    "cancelled": "Tasks that ended CANCELLED.",
    "expired": "Tasks that ended EXPIRED: their deadline passed before a worker took them.",
    "lease_expired": "Leases that ran out before the worker acked, failed or extended.",
}


@dataclass(slots=True)
class Sources:
    """What the exporter reads at scrape time besides the recorders."""

    depths: Callable[[], Sequence[QueueDepth]]
    parked: Callable[[], int]
    #: live_bytes, file_bytes, map_bytes, limit_bytes (LmdbStore.usage)
    store_usage: Callable[[], Mapping[str, int]] | None = None
    version: str = ""
    now: Callable[[], float] = time.time
    #: Each queue's stored limits (conveyor_queue_limit); None: not exported.
    limits: LimitsSource | None = None


class ConveyorCollector(Collector):
    def __init__(self, metrics: Metrics, sources: Sources) -> None:
        self._metrics = metrics
        self._sources = sources

    def collect(self) -> Iterator[Metric]:
        yield from self._build_info()
        yield from self._task_counters()
        yield from self._task_histograms()
        yield from self._depths()
        yield from self._gauges()
        yield from self._rpcs()
        yield from self._store()
        yield from self._schedules()
        yield from self._flow()

    def _build_info(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "conveyor_build_info", "Always 1; the labels say which build runs.",
            labels=["version", "python"],
        )  # fmt: skip
        info.add_metric([self._sources.version, platform.python_version()], 1)
        yield info

    def _task_counters(self) -> Iterator[Metric]:
        counts = self._metrics.tasks.counts.copy()
        families = {
            outcome: CounterMetricFamily(
                f"conveyor_tasks_{outcome}", _OUTCOME_HELP[outcome], labels=["queue", "kind"]
            )
            for outcome in OUTCOMES
        }
        for (outcome, queue, kind), value in sorted(counts.items()):
            families[outcome].add_metric([queue, kind], value)
        yield from families.values()

    def _task_histograms(self) -> Iterator[Metric]:
        tasks = self._metrics.tasks
        for name, histograms, text in (
            ("conveyor_task_queue_wait_seconds", tasks.queue_wait,
             "From when a task was due (READY) to its lease."),
            ("conveyor_task_run_seconds", tasks.run_time,
             "From a lease to the worker's ack or fail of that attempt."),
            ("conveyor_task_turnaround_seconds", tasks.turnaround,
             "From enqueue to a final state (succeeded, dead, cancelled, expired)."),
        ):  # fmt: skip
            family = HistogramMetricFamily(name, text, labels=["queue"])
            for queue, histogram in sorted(histograms.copy().items()):
                _add_histogram(family, [queue], histogram)
            yield family

    def _depths(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "conveyor_queue_depth", "Tasks in the store by queue and state.",
            labels=["queue", "state"],
        )  # fmt: skip
        oldest = GaugeMetricFamily(
            "conveyor_queue_oldest_ready_age_seconds",
            "How long the oldest READY task of the queue has been due (0: none ready).",
            labels=["queue"],
        )
        now = self._sources.now()
        label = self._metrics.tasks.queue_label
        merged: dict[str, tuple[dict[TaskState, int], float | None]] = {}
        for queue_depth in self._sources.depths():
            name = label(queue_depth.queue)
            counts, first = merged.setdefault(name, ({}, None))
            for state, count in queue_depth.counts.items():
                counts[state] = counts.get(state, 0) + count
            at = queue_depth.oldest_ready_at
            if at is not None and (first is None or at < first):
                merged[name] = (counts, at)
        for name in sorted(merged, key=lambda n: (n == OTHER, n)):
            counts, first = merged[name]
            for state in TaskState:
                depth.add_metric([name, state.name], counts.get(state, 0))
            oldest.add_metric([name], max(now - first, 0.0) if first is not None else 0.0)
        yield depth
        yield oldest

    def _gauges(self) -> Iterator[Metric]:
        metrics = self._metrics
        yield GaugeMetricFamily(
            "conveyor_long_polls_parked",
            "Lease and GetResult calls (and work streams' leasers) waiting for a task.",
            value=self._sources.parked(),
        )
        streams = sum(m.in_flight for m in metrics.rpc.methods if m.rpc_type == "bidi_stream")
        yield GaugeMetricFamily(
            "conveyor_work_streams_open", "StreamWork streams open now.", value=streams
        )
        yield GaugeMetricFamily(
            "conveyor_workers_seen",
            f"Distinct worker ids that leased in the last {WORKER_WINDOW_SECONDS:g} seconds.",
            value=metrics.tasks.workers_seen(),
        )

    def _rpcs(self) -> Iterator[Metric]:
        labels = ["grpc_service", "grpc_method", "grpc_type"]
        started = CounterMetricFamily(
            "grpc_server_started", "RPCs started on the server.", labels=labels
        )
        handled = CounterMetricFamily(
            "grpc_server_handled", "RPCs completed on the server, by status code.",
            labels=[*labels, "grpc_code"],
        )  # fmt: skip
        latency = HistogramMetricFamily(
            "grpc_server_handling_seconds",
            "Time from an RPC's start to its end (a stream: its whole life).",
            labels=labels,
        )
        for stats in list(self._metrics.rpc.methods):
            names = [stats.service, stats.method, stats.rpc_type]
            started.add_metric(names, stats.started)
            for code, value in sorted(stats.handled.copy().items()):
                handled.add_metric([*names, code], value)
            _add_histogram(latency, names, stats.latency)
        yield started
        yield handled
        yield latency

    def _store(self) -> Iterator[Metric]:
        commits = self._metrics.commits
        seconds = HistogramMetricFamily(
            "conveyor_store_commit_seconds",
            "Time to apply and commit one group of writes (fsync included in sync mode).",
        )
        writes = HistogramMetricFamily(
            "conveyor_store_commit_writes", "Write functions carried by one group commit."
        )
        with commits.lock:
            _add_histogram(seconds, [], commits.seconds)
            _add_histogram(writes, [], commits.writes)
        yield seconds
        yield writes
        if self._sources.store_usage is None:
            return
        usage = self._sources.store_usage()
        for key, name, text in (
            ("live_bytes", "conveyor_store_used_bytes",
             "Bytes held by live pages of the store (what the limit is checked against)."),
            ("file_bytes", "conveyor_store_file_bytes",
             "Bytes of the data file up to its highest page in use."),
            ("map_bytes", "conveyor_store_map_bytes", "The store's current map size."),
            ("limit_bytes", "conveyor_store_limit_bytes",
             "--max-store-bytes: new tasks are refused at 90 % of it."),
        ):  # fmt: skip
            yield GaugeMetricFamily(name, text, value=usage[key])

    def _schedules(self) -> Iterator[Metric]:
        schedules = self._metrics.schedules
        fires = CounterMetricFamily(
            "conveyor_schedule_fires", "Cron ticks that enqueued their task.", labels=["schedule"]
        )
        for name, value in sorted(schedules.fires.copy().items()):
            fires.add_metric([name], value)
        yield fires
        yield CounterMetricFamily(
            "conveyor_schedule_misfires",
            "Cron ticks missed while the broker was down and skipped by the misfire policy.",
            value=schedules.misfires,
        )
        yield CounterMetricFamily(
            "conveyor_schedule_overlap_skips",
            "Cron ticks skipped because the previous tick's task was still running.",
            value=schedules.overlap_skips,
        )

    def _flow(self) -> Iterator[Metric]:
        tasks = self._metrics.tasks
        yield throttled_family(tasks.throttled_counts.copy())
        yield from limit_families(self._sources.limits, tasks.queue_label)


def _add_histogram(family: HistogramMetricFamily, labels: list[str], histogram: Histogram) -> None:
    buckets, total = histogram.cumulative()
    family.add_metric(labels, buckets, total)


class MetricsServer:
    """prometheus_client's HTTP server for one registry, on its own thread."""

    def __init__(self, collector: Collector) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(collector)
        ProcessCollector(registry=self.registry)  # process_cpu_seconds_total, memory, fds
        self._server: Any = None
        self._thread: Any = None
        self.port = 0

    def start(self, listen: str) -> int:
        """Listen on host:port (port 0: any free one); returns the port. OSError if taken."""
        host, _, port = listen.rpartition(":")
        self._server, self._thread = start_http_server(
            int(port), addr=host.strip("[]"), registry=self.registry
        )
        self.port = int(self._server.server_port)
        return self.port

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = None
