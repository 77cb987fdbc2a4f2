"""`conveyor worker module:attr`: run a Worker object found by import path."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import Any

from conveyor import ConveyorError
from conveyor._cli import add_connection_arguments, client_settings
from conveyor_worker._worker import Worker

__all__ = ["WorkerPathError", "add_worker_command", "load_worker"]


class WorkerPathError(ValueError):
    """The import path does not name a Worker (said in one line, exit 2)."""


def add_worker_command(subparsers: Any) -> None:
    """Add the `worker` subcommand to the `conveyor` CLI."""
    p = subparsers.add_parser("worker", help="run a worker: conveyor worker mypackage.tasks:worker")
    p.add_argument("worker", help="import path of a Worker (or a function returning one)")
    p.add_argument("--concurrency", type=_positive, help="handlers running at once (1 or more)")
    p.add_argument(
        "--prefetch",
        type=_not_negative,
        help="tasks leased ahead of the idle slots (0: none; default 64 per slot, at most 512)",
    )
    p.add_argument("--queues", help="comma-separated queue names, in lease order")
    add_connection_arguments(p, target_default=False)
    p.add_argument("--grace-period", type=_seconds, help="seconds running tasks get on shutdown")
    p.add_argument(
        "--log-level",
        default=os.environ.get("CONVEYOR_LOG_LEVEL", "INFO"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        type=str.upper,
        help="DEBUG, INFO (a line per task), WARNING (only failures and retries)",
    )
    p.set_defaults(run=run_worker_command)


def _not_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


_positive.__name__ = "whole number of 1 or more"  # argparse names the type in its error


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 86400:
        raise ValueError(text)
    return value


_seconds.__name__ = "number of seconds from 0 to 86400"


def load_worker(path: str) -> Worker:
    """Import "module:attr" (the current directory is importable); call it if it is a factory.

    Raises:
        WorkerPathError: the module or attribute does not exist, or it is not a Worker.
    """
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise WorkerPathError(f"expected module:attribute, got {path!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        target: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not _is_prefix(exc.name, module_name):
            raise  # a module the user's code imports is missing: its traceback helps
        raise WorkerPathError(f"{path}: no module named {exc.name!r}") from None
    for part in attr.split("."):
        if not hasattr(target, part):
            raise WorkerPathError(f"{path}: {type(target).__name__} has no attribute {part!r}")
        target = getattr(target, part)
    if not isinstance(target, Worker) and callable(target):
        target = target()
    if not isinstance(target, Worker):
        raise WorkerPathError(f"{path} is {type(target).__name__}, not a Worker")
    return target


def _is_prefix(name: str, module_name: str) -> bool:
    return module_name == name or module_name.startswith(name + ".")


def run_worker_command(args: argparse.Namespace) -> int:
    """Exit 0 after a graceful stop; 2 for a bad path or option; 1 if the broker refused us."""
    try:
        logging.basicConfig(
            level=args.log_level.upper(),  # the env default is not checked by argparse
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )
        worker = load_worker(args.worker)
        worker.client_options.update(client_settings(args))
    except ValueError as exc:
        print(f"conveyor worker: {exc}", file=sys.stderr)
        return 2
    if args.concurrency is not None:
        worker.concurrency = args.concurrency
    if args.prefetch is not None:
        worker.prefetch = args.prefetch
    if args.queues is not None:
        queues = [q.strip() for q in args.queues.split(",") if q.strip()]
        if not queues:
            print(f"conveyor worker: --queues {args.queues!r} names no queue", file=sys.stderr)
            return 2
        worker.queues = queues
    if args.target:
        worker.target = args.target
    if args.grace_period is not None:
        worker.grace_period = args.grace_period
    try:
        worker.run()
    except ConveyorError as exc:  # a permanent refusal: bad queue name, wrong token
        print(f"conveyor worker: the broker refused the worker: {exc}", file=sys.stderr)
        return 1
    return 0
