"""What every scenario shares: the payload, a fresh broker, pre-filling a queue."""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

from conveyor import AsyncClient, Task
from conveyor.v1 import task_pb2
from conveyor_server.testing import BrokerProcess

KIND = "bench.noop"
#: A ~100-byte JSON payload, as in the issue's targets.
PAYLOAD_OBJ = {"user_id": 123456, "action": "resize", "path": "/img/" + "a" * 50}
PAYLOAD = json.dumps(PAYLOAD_OBJ).encode()
#: Per-call deadline for bench clients: a stuck call fails the run instead of hanging it.
CALL_TIMEOUT = 60.0


def spec(queue: str) -> task_pb2.TaskSpec:
    return task_pb2.TaskSpec(
        queue=queue, kind=KIND, payload=PAYLOAD, content_type="application/json"
    )


@dataclass(frozen=True)
class RunConfig:
    """Settings every scenario gets from the command line."""

    durability: str
    enqueue_concurrency: int
    drain_concurrency: int | None  # None: the SDK's default (drain-default)
    drain_prefetch: int | None
    drain_handler: str
    drain_processes: int
    drain_transport: str | None = None  # Worker(transport=...); None: the SDK default
    broker_args: tuple[str, ...] = ()  # more `conveyor serve` flags (--broker-arg)
    store: str = "lmdb"  # or "postgres": a throwaway PostgreSQL (bench/pg.py)
    brokers: int = 1  # brokers sharing the PostgreSQL database (postgres only)
    # drain-limited's flow control (bench/scenarios/drain_limited.py)
    limit_keys: int = 1000
    limit_concurrency: int = 1024
    limit_key_concurrency: int = 0


@contextmanager
def running_broker(durability: str, extra_args: Sequence[str] = ()) -> Iterator[BrokerProcess]:
    """A broker on a fresh temp dir, so no scenario sees another's leftovers."""
    with tempfile.TemporaryDirectory(prefix="conveyor-bench-") as data_dir:
        args = ["--durability", durability, "--log-level", "WARNING", *extra_args]
        broker = BrokerProcess(data_dir, args)
        broker.start()
        try:
            yield broker
        finally:
            if broker.process is not None and broker.process.poll() is None:
                broker.stop()
            broker.kill()


@dataclass
class Brokers:
    """The brokers of one scenario run: one, or several on one PostgreSQL database."""

    processes: list[BrokerProcess]

    @property
    def address(self) -> str:
        return self.processes[0].address

    @property
    def addresses(self) -> list[str]:
        return [broker.address for broker in self.processes]

    @property
    def pids(self) -> list[int]:
        return [pid(broker) for broker in self.processes]

    def spread(self, n: int) -> list[str]:
        """`n` addresses dealt round-robin over the brokers (n client loops or workers)."""
        return [self.addresses[i % len(self.processes)] for i in range(n)]


@contextmanager
def running_brokers(config: RunConfig) -> Iterator[Brokers]:
    """`config.brokers` fresh brokers: LMDB in a temp dir, or on a fresh PostgreSQL database."""
    if config.store != "postgres":
        with running_broker(config.durability, config.broker_args) as broker:
            yield Brokers([broker])
        return
    from bench import pg

    with pg.fresh_database() as url, ExitStack() as stack:
        extra = ["--database-url", url, *config.broker_args]
        started = [
            stack.enter_context(running_broker(config.durability, extra))
            for _ in range(config.brokers)
        ]
        yield Brokers(started)


def over(config: RunConfig) -> str:
    """The label's note on the brokers, when there are several."""
    return f", over {config.brokers} brokers" if config.brokers > 1 else ""


def pid(broker: BrokerProcess) -> int:
    assert broker.process is not None, "broker not running"
    return broker.process.pid


@dataclass
class Prefill:
    tasks: int
    seconds: float
    last: list[Task]  # the final batch, committed after every other: these are leased last


async def prefill(
    address: str, count: int, queue: str, deadline: float, in_flight: int = 4
) -> Prefill:
    """Queue `count` tasks with enqueue_many (1000 per call, `in_flight` calls at a time).

    The last batch goes alone after the rest, so its tasks are the last in queue order.
    Stops early at `deadline` (time.monotonic()); `tasks` says how many were queued.
    """
    chunk = [(KIND, PAYLOAD_OBJ)] * min(1000, count)
    started = time.perf_counter()
    async with AsyncClient(address, timeout=CALL_TIMEOUT) as client:
        remaining = max(0, count - len(chunk))
        queued = 0

        async def loop() -> None:
            nonlocal remaining, queued
            while remaining > 0 and time.monotonic() < deadline:
                n = min(remaining, len(chunk))
                remaining -= n
                await client.enqueue_many(chunk[:n], queue=queue)
                queued += n

        await asyncio.gather(*(loop() for _ in range(in_flight)))
        last = await client.enqueue_many(chunk, queue=queue)
    return Prefill(queued + len(last), time.perf_counter() - started, last)
