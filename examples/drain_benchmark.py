"""Measure how fast one Worker drains no-op tasks, against a fresh local broker.

    python examples/drain_benchmark.py --tasks 20000 --concurrency 8

Starts `conveyor serve` on a temp dir, enqueues the tasks, runs the worker in a
thread and reports tasks per second from the worker's start to the last result.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time

from conveyor import Client
from conveyor_server.testing import BrokerProcess
from conveyor_worker import Worker


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--handler", choices=["sync", "async"], default="sync")
    parser.add_argument("--durability", choices=["sync", "nosync"], default="sync")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as data_dir:
        broker = BrokerProcess(
            data_dir, ["--durability", args.durability, "--log-level", "WARNING"]
        )
        address = broker.start()
        try:
            run(address, args)
        finally:
            broker.stop()


def run(address: str, args: argparse.Namespace) -> None:
    client = Client(address)
    tasks = client.enqueue_many([("noop", i) for i in range(args.tasks)], queue="bench")
    worker = Worker(address, queues=["bench"], concurrency=args.concurrency, poll_wait=1)
    if args.handler == "sync":
        worker.register(lambda payload: payload, "noop")
    else:

        async def noop(payload):
            return payload

        worker.register(noop, "noop")
    thread = threading.Thread(target=worker.run)
    started = time.perf_counter()
    thread.start()
    for task in tasks[-2 * args.concurrency :]:  # leased in enqueue order: these finish last
        client.result(task.id, timeout=300)
    elapsed = time.perf_counter() - started
    for task in tasks[:: max(1, len(tasks) // 500)]:  # spot-check, outside the timing
        assert client.result(task.id, timeout=60) == task.payload
    worker.stop()
    thread.join()
    print(
        f"{args.tasks} no-op {args.handler} tasks, concurrency {args.concurrency}, "
        f"durability {args.durability}: {elapsed:.2f} s = {args.tasks / elapsed:,.0f} tasks/s"
    )


if __name__ == "__main__":
    main()
