"""Run one timed body and turn it into a Sample (CPU window + RPC count around it)."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import pg, rpc_count
from bench.measure import CpuWindow, Sample

#: Set by `--profile DIR`: py-spy records the broker during each timed window.
PROFILE_DIR: Path | None = None


@dataclass
class Moved:
    """What a timed body did: tasks moved, per-operation latencies, RPCs if it knows them."""

    tasks: int
    latencies_ms: list[float] = field(default_factory=list)
    rpcs: int | None = None


def deadline_in(seconds: float) -> float:
    return time.monotonic() + seconds


def timed(
    scenario: str,
    label: str,
    broker_pid: int | Sequence[int],
    body: Callable[[], Coroutine[Any, Any, Moved]],
    worker_pids: Sequence[int] = (),
) -> Sample:
    """Run `body` on a fresh event loop inside a CPU window; RPCs counted unless it knows.
    Several broker pids: their CPU is summed (the first is profiled)."""
    first = broker_pid if isinstance(broker_pid, int) else broker_pid[0]
    database = pg.server_pids if pg.is_running() else None
    with _profiled(first, scenario), rpc_count.counting() as counted:
        window = CpuWindow(broker_pid, worker_pids, database)
        with window:
            moved: Moved = asyncio.run(body())
    return Sample(
        scenario=scenario,
        label=label,
        tasks=moved.tasks,
        seconds=window.seconds,
        broker_cpu=window.broker_cpu,
        broker_sys=window.broker_sys,
        client_cpu=window.client_cpu,
        worker_cpu=window.worker_cpu,
        database_cpu=window.database_cpu,
        latencies_ms=moved.latencies_ms,
        rpcs=moved.rpcs if moved.rpcs is not None else counted[0],
    )


async def run_loops(
    concurrency: int, count: int, deadline: float, step: Callable[[], Awaitable[int]]
) -> Moved:
    """`concurrency` loops share `count` operations; each op returns tasks moved. Latency per op."""
    remaining = count
    moved = Moved(0)

    async def loop() -> None:
        nonlocal remaining
        while remaining > 0 and time.monotonic() < deadline:
            remaining -= 1
            started = time.perf_counter()
            n = await step()  # not `moved.tasks += await ...`: that reads before awaiting
            moved.tasks += n
            moved.latencies_ms.append((time.perf_counter() - started) * 1000)

    await asyncio.gather(*(loop() for _ in range(concurrency)))
    return moved


def py_spy_path() -> str | None:
    """py-spy beside this interpreter (a venv's), else on PATH; None if not installed."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


@contextmanager
def _profiled(broker_pid: int, scenario: str) -> Iterator[None]:
    """py-spy on the broker, if asked for: raw collapsed stacks per thread, only samples
    that hold the GIL (Python CPU, not fsync or epoll waits), without pausing the broker."""
    if PROFILE_DIR is None:
        yield
        return
    PROFILE_DIR.mkdir(parents=True, exist_ok=True)
    py_spy = py_spy_path()
    assert py_spy is not None, "run() checks for py-spy before any scenario"
    out = PROFILE_DIR / f"{scenario}.txt"
    command = [str(py_spy), "record", "-p", str(broker_pid), "-f", "raw", "-o", str(out)]
    spy = subprocess.Popen(
        [*command, "--threads", "--gil", "--nonblocking", "--rate", "200"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)  # let it attach before the window opens
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        spy.wait(30)
