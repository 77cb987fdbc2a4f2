"""Scenario 6: the round trip's floor on this machine (bench/floor_main.py).

The same sequence as `roundtrip` (a blocking producer calls Enqueue, a worker in
another process gets the task on a stream and acks it, the producer's GetResult
returns) against a bare grpc.aio server that does nothing else: first with no
store, then with the two durable LMDB commits a durable broker cannot skip.
The broker does strictly more than this server, so its round trip cannot beat
these figures; the gap between the two rows is what fsync'd commits cost here.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import grpc

from bench.common import RunConfig
from bench.floor_main import METHODS
from bench.measure import Sample
from bench.scenarios._timing import Moved, deadline_in, timed
from bench.sizes import Sizes

WARMUP = 50


@contextmanager
def _process(*args: str) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.floor_main", *args], stdout=subprocess.PIPE, text=True
    )
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait(10)


def _trips(channel: grpc.Channel, first: int, count: int, deadline: float) -> Moved:
    enqueue = channel.unary_unary(METHODS["Enqueue"])
    get_result = channel.unary_unary(METHODS["GetResult"])
    moved = Moved(0, rpcs=0)
    for n in range(first, first + count):
        if time.monotonic() > deadline:
            break
        started = time.perf_counter()
        task_id = enqueue(b"task-%d" % n, timeout=60)
        get_result(task_id, timeout=60)
        moved.latencies_ms.append((time.perf_counter() - started) * 1000)
        moved.tasks += 1
        moved.rpcs = (moved.rpcs or 0) + 2
    return moved


@contextmanager
def _server(durable: bool) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """The floor server (with its LMDB in a temp dir when durable) and its address."""
    with (
        tempfile.TemporaryDirectory(prefix="conveyor-floor-") as data_dir,
        _process("serve", *(["--data-dir", data_dir] if durable else [])) as server,
    ):
        assert server.stdout is not None
        said = server.stdout.readline().split()
        if not said or said[0] != "ready":
            raise RuntimeError(f"floor server did not start (said {said!r})")
        yield server, f"127.0.0.1:{said[1]}"


def _floor_run(sizes: Sizes, durable: bool) -> Sample:
    with (
        _server(durable) as (server, target),
        _process("work", "--target", target) as worker,
        grpc.insecure_channel(target) as channel,
    ):
        _trips(channel, 0, WARMUP, deadline_in(sizes.max_seconds))

        async def body() -> Moved:  # the blocking producer, inside timed()'s loop
            return _trips(channel, WARMUP, sizes.roundtrip, deadline_in(sizes.max_seconds))

        store = "two durable LMDB commits per trip" if durable else "no store"
        return timed(
            "floor-lmdb" if durable else "floor-bare",
            "floor: bare grpc.aio server, bytes, same RPCs as roundtrip, " + store,
            server.pid,
            body,
            [worker.pid],
        )


def floor(sizes: Sizes, config: RunConfig) -> list[Sample]:
    return [_floor_run(sizes, durable=False), _floor_run(sizes, durable=True)]
