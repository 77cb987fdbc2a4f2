"""Runs the scenarios against a fresh broker and prints a table (median of --repeat runs)."""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench import scenarios
from conveyor_server.testing import BrokerProcess

_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _measure(broker: BrokerProcess, run: Callable[[], Awaitable[int]]) -> tuple[float, float]:
    """Tasks per second, and broker CPU microseconds per task."""
    assert broker.process is not None
    cpu_before = _cpu_seconds(broker.process.pid)
    started = time.perf_counter()
    moved = asyncio.run(run())
    elapsed = time.perf_counter() - started
    cpu = _cpu_seconds(broker.process.pid) - cpu_before
    return moved / elapsed, cpu / moved * 1e6


def run_once(count: int, durability: str) -> dict[str, tuple[float, float]]:
    results: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory(prefix="conveyor-bench-") as data_dir:
        broker = BrokerProcess(data_dir, ["--durability", durability, "--log-level", "WARNING"])
        address = broker.start()
        try:
            results["enqueue, 1 per call, 64 in flight"] = _measure(
                broker, lambda: scenarios.enqueue_unary(address, count, 64, "unary")
            )
            results["enqueue, EnqueueBatch of 100, 4 in flight"] = _measure(
                broker, lambda: scenarios.enqueue_batches(address, count * 5, 100, 4, "batch")
            )
            results["drain, Lease(100) + batched Ack, 2 in flight"] = _measure(
                broker, lambda: scenarios.drain(address, count * 5, 100, 2, "batch")
            )
        finally:
            broker.stop()
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="conveyor bench", description=__doc__)
    add_arguments(parser)
    run(parser.parse_args(argv))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--count", type=int, default=5000, help="tasks in the unary scenario")
    parser.add_argument("--repeat", type=int, default=3, help="runs; the median is reported")
    parser.add_argument("--durability", choices=["sync", "nosync"], default="sync")


def run(args: Any) -> int:
    runs = [run_once(args.count, args.durability) for _ in range(args.repeat)]
    print(f"\nConveyor bench: durability={args.durability}, median of {args.repeat} run(s)")
    print(f"{'scenario':48} {'tasks/s':>10} {'broker CPU µs/task':>20}")
    for name in runs[0]:
        rate = statistics.median(r[name][0] for r in runs)
        cpu = statistics.median(r[name][1] for r in runs)
        print(f"{name:48} {rate:>10,.0f} {cpu:>20.0f}")
    return 0
