"""CPU, memory and latency readings. CPU comes from the kernel, not from timers, so that a
figure can say which process paid for it."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
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
    """CPU seconds spent by the broker, this process and worker pids over a timed window."""

    def __init__(self, broker_pid: int, other_pids: Sequence[int] = ()) -> None:
        self.broker_pid = broker_pid
        self.other_pids = list(other_pids)

    def __enter__(self) -> CpuWindow:
        self._broker = proc_cpu_split(self.broker_pid)
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
        user, system = proc_cpu_split(self.broker_pid)
        self.broker_cpu = user + system - sum(self._broker)
        self.broker_sys = system - self._broker[1]
        others = sum(proc_cpu_seconds(pid) for pid in self.other_pids) - self._others
        self.client_cpu = self_cpu_seconds() - self._self
        self.worker_cpu = others
