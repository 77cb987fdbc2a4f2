"""`conveyor worker module:attr`: run a Worker object found by import path."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import Any

from conveyor_worker._worker import Worker

__all__ = ["add_worker_command", "load_worker"]


def add_worker_command(subparsers: Any) -> None:
    """Add the `worker` subcommand to the `conveyor` CLI."""
    p = subparsers.add_parser("worker", help="run a worker: conveyor worker mypackage.tasks:worker")
    p.add_argument("worker", help="import path of a Worker (or a function returning one)")
    p.add_argument("--concurrency", type=int, help="handlers running at once")
    p.add_argument("--queues", help="comma-separated queue names, in lease order")
    p.add_argument("--target", default=os.environ.get("CONVEYOR_TARGET"), help="broker host:port")
    p.add_argument("--grace-period", type=float, help="seconds running tasks get on shutdown")
    p.add_argument(
        "--log-level",
        default=os.environ.get("CONVEYOR_LOG_LEVEL", "INFO"),
        help="DEBUG, INFO (a line per task), WARNING (only failures and retries)",
    )
    p.set_defaults(run=run_worker_command)


def load_worker(path: str) -> Worker:
    """Import "module:attr" (the current directory is importable); call it if it is a factory.

    Raises:
        SystemExit: the path does not name a Worker.
    """
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise SystemExit(f"conveyor worker: expected module:attribute, got {path!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    target: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        target = getattr(target, part)
    if not isinstance(target, Worker) and callable(target):
        target = target()
    if not isinstance(target, Worker):
        raise SystemExit(f"conveyor worker: {path} is {type(target).__name__}, not a Worker")
    return target


def run_worker_command(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    worker = load_worker(args.worker)
    if args.concurrency is not None:
        worker.concurrency = args.concurrency
    if args.queues:
        worker.queues = [q for q in args.queues.split(",") if q]
    if args.target:
        worker.target = args.target
    if args.grace_period is not None:
        worker.grace_period = args.grace_period
    worker.run()
    return 0
