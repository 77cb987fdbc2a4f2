"""The benchmark's worker process: a Worker with a no-op handler, driven over stdin.

    python -m bench.worker_main --target HOST:PORT --queue Q --concurrency 32

It prints `ready` once imported and built, starts on a `go` line, stops gracefully on the
next line (or EOF), then prints `handled N rpcs M transport T` (M is -1 when
unary calls are not all it made). Starting on a signal keeps interpreter
start-up and imports out of the timed window; a separate process keeps the worker's CPU
apart from the producer's, as in production.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import threading
from typing import Any

from bench import rpc_count
from conveyor_worker import Worker


def build(args: argparse.Namespace) -> tuple[Worker, itertools.count[int]]:
    # transport= only when asked: the SDK grew it (StreamWork) after this script was written.
    # concurrency= and prefetch= only when given: without them the Worker uses its defaults.
    extra: dict[str, Any] = {"transport": args.transport} if args.transport else {}
    if args.concurrency is not None:
        extra["concurrency"] = args.concurrency
    if args.prefetch is not None:
        extra["prefetch"] = args.prefetch
    worker = Worker(
        args.target,
        queues=[args.queue],
        poll_wait=1.0,
        grace_period=5.0,
        **extra,
    )
    handled = itertools.count()
    if args.handler == "async":

        async def noop_async(payload: Any) -> None:
            next(handled)

        worker.register(noop_async, args.kind)
    else:

        def noop(payload: Any) -> None:
            next(handled)

        worker.register(noop, args.kind)
    return worker, handled


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--kind", default="bench.noop")
    parser.add_argument("--concurrency", type=int, help="default: the SDK's")
    parser.add_argument("--prefetch", type=int, help="default: the SDK's")
    parser.add_argument("--handler", choices=["sync", "async"], default="async")
    parser.add_argument("--transport", help="Worker(transport=...); default: the SDK's")
    args = parser.parse_args()
    rpc_count.install()
    worker, handled = build(args)
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return

    def stop_on_next_line() -> None:
        sys.stdin.readline()
        worker.stop()

    threading.Thread(target=stop_on_next_line, daemon=True).start()
    worker.run()
    # Unary calls are counted; messages on a stream are not, so then the count says nothing.
    unary_only = getattr(worker, "transport", "unary") == "unary"
    rpcs = rpc_count.COUNTER.calls if unary_only else -1
    print(
        f"handled {next(handled)} rpcs {rpcs} transport {getattr(worker, 'transport', 'unary')}",
        flush=True,
    )


if __name__ == "__main__":
    main()
