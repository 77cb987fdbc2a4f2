"""CPU, memory and latency readings. CPU comes from the kernel, not from timers, so that a
figure can say which process paid for it."""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

_TICKS = os.sysconf("SC_CLK_TCK")


def proc_cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process, all its threads, from /proc/<pid>/stat.
    System time is where fsync, epoll and socket work show up."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / _TICKS, int(fields[12]) / _TICKS


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (all its threads)."""
    return sum(proc_cpu_split(pid))


def self_cpu_seconds() -> float:
    """User + system CPU of this process, all threads (gRPC's included)."""
    times = os.times()
    return times.user + times.system


def rss_mib(pid: int) -> tuple[float, float]:
    """(VmRSS, RssAnon) in MiB. LMDB's mapped file pages count in VmRSS but not in RssAnon:
    RssAnon is the broker's own heap, the figure that must not grow with queue depth."""
    values: dict[str, float] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon"):
                values[key] = int(rest.split()[0]) / 1024
    return values.get("VmRSS", 0.0), values.get("RssAnon", 0.0)


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (0 if empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


@dataclass
class Sample:
    """One measured run of one scenario: what moved, in how long, and who paid the CPU."""

    scenario: str
    label: str
    tasks: int
    seconds: float
    broker_cpu: float
    client_cpu: float  # this (bench) process
    worker_cpu: float = 0.0  # worker subprocesses, where there are any
    broker_sys: float = 0.0  # the kernel's part of broker_cpu
    database_cpu: float | None = None  # the PostgreSQL server's processes (--store postgres)
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    rpcs: int | None = None
    note: str = ""

    @property
    def rate(self) -> float:
        return self.tasks / self.seconds if self.seconds > 0 else 0.0

    def latency(self, pct: float) -> float | None:
        if not self.latencies_ms:
            return None
        return percentile(sorted(self.latencies_ms), pct)


class CpuWindow:
    """CPU seconds spent by the broker(s), this process, worker pids and (given a callable
    that lists them) the database server's processes over a timed window."""

    def __init__(
        self,
        broker_pid: int | Sequence[int],
        other_pids: Sequence[int] = (),
        database_pids: Callable[[], list[int]] | None = None,
    ) -> None:
        self.broker_pids = [broker_pid] if isinstance(broker_pid, int) else list(broker_pid)
        self.other_pids = list(other_pids)
        self._database_pids = database_pids
        self.database_cpu: float | None = None

    def _brokers(self) -> tuple[float, float]:
        splits = [proc_cpu_split(pid) for pid in self.broker_pids]
        return sum(u for u, _ in splits), sum(s for _, s in splits)

    def _database(self) -> dict[int, float]:
        if self._database_pids is None:
            return {}
        cpu: dict[int, float] = {}
        for pid in self._database_pids():
            with contextlib.suppress(OSError):  # a backend that exited meanwhile
                cpu[pid] = proc_cpu_seconds(pid)
        return cpu

    def __enter__(self) -> CpuWindow:
        self._broker = self._brokers()
        self._db = self._database()
        self._self = self_cpu_seconds()
        self._others = sum(proc_cpu_seconds(pid) for pid in self.other_pids)
        self._started = time.perf_counter()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Close the window (idempotent): read the clocks once, before anything else runs."""
        if hasattr(self, "seconds"):
            return
        self.seconds = time.perf_counter() - self._started
        user, system = self._brokers()
        self.broker_cpu = user + system - sum(self._broker)
        self.broker_sys = system - self._broker[1]
        others = sum(proc_cpu_seconds(pid) for pid in self.other_pids) - self._others
        self.client_cpu = self_cpu_seconds() - self._self
        self.worker_cpu = others
        if self._database_pids is not None:  # processes started in the window count whole
            self.database_cpu = sum(
                cpu - self._db.get(pid, 0.0) for pid, cpu in self._database().items()
            )
