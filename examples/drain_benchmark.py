"""Measure how fast one Worker drains no-op tasks, against a fresh local broker.

    python examples/drain_benchmark.py --tasks 30000 --concurrency 64

Starts `conveyor serve` (durable `sync` by default) on a temp dir, enqueues the
tasks (~100-byte JSON payloads), runs the worker in a thread with default
settings and reports tasks per second from the worker's start to the last
result, and the CPU the worker's process and the broker spent per task (they
share the machine's cores).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time

from conveyor import Client
from conveyor_server.testing import BrokerProcess
from conveyor_worker import Worker

#: About 100 bytes of JSON, as in the performance targets.
PAYLOAD = {"user_id": 123456, "action": "resize", "path": "/img/" + "a" * 50}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=30_000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[64])
    parser.add_argument(
        "--handler",
        choices=["sync", "async", "inline"],
        default="sync",
        help="sync (thread pool, the default), async, or sync with inline=True (opt-in)",
    )
    parser.add_argument("--transport", choices=["auto", "stream", "unary"], default="auto")
    parser.add_argument("--durability", choices=["sync", "nosync"], default="sync")
    args = parser.parse_args()

    for concurrency in args.concurrency:
        with tempfile.TemporaryDirectory() as data_dir:
            broker = BrokerProcess(
                data_dir, ["--durability", args.durability, "--log-level", "WARNING"]
            )
            address = broker.start()
            try:
                assert broker.process is not None
                run(address, args, concurrency, broker.process.pid)
            finally:
                broker.stop()


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far (Linux /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(address: str, args: argparse.Namespace, concurrency: int, broker_pid: int) -> None:
    with Client(address) as client:
        tasks = client.enqueue_many([("noop", PAYLOAD) for _ in range(args.tasks)], queue="bench")
        worker = Worker(
            address,
            queues=["bench"],
            concurrency=concurrency,
            poll_wait=1,
            transport=args.transport,
        )
        if args.handler != "async":

            def noop(payload):
                return None

            worker.register(noop, "noop", **({"inline": True} if args.handler == "inline" else {}))
        else:

            async def noop_async(payload):
                return None

            worker.register(noop_async, "noop")
        thread = threading.Thread(target=worker.run)
        broker_started = process_cpu(broker_pid)
        started, cpu_started = time.perf_counter(), time.process_time()
        thread.start()
        for task in tasks[-2 * concurrency :]:  # leased in enqueue order: these finish last
            client.result(task.id, timeout=300)
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
        broker_cpu = process_cpu(broker_pid) - broker_started
        worker.stop()
        thread.join()
        sample = tasks[:: max(1, len(tasks) // 500)]  # spot-check, outside the timing
        assert all(client.get_task(t.id).state == "SUCCEEDED" for t in sample)
    print(
        f"{args.tasks} no-op {args.handler} tasks, concurrency {concurrency}, "
        f"transport {args.transport}, durability {args.durability}: {elapsed:.2f} s = "
        f"{args.tasks / elapsed:,.0f} tasks/s; CPU per task: worker process "
        f"{cpu / args.tasks * 1e6:.0f} us, broker {broker_cpu / args.tasks * 1e6:.0f} us",
        flush=True,
    )


if __name__ == "__main__":
    main()
