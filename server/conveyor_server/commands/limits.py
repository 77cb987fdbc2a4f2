"""`conveyor limit QUEUE`: set, clear or show a queue's flow limits (QueueService.UpdateQueue).

Only the limits named on the command line change; `--clear` sets every limit to 0 (no
limit) first, so `--clear --rate 5` leaves the queue with a rate limit alone. With no
limit flag at all the command shows the limits. A bad value is refused by argparse in
one line (exit 2) before any call; one the broker refuses is one line and exit 2 too.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import asdict
from typing import Any

from conveyor import Client, QueueInfo
from conveyor_server.commands.connection import add_connection, add_json, command, print_json

#: Counts on the wire are uint32 (QueueLimits in queue_service.proto).
MAX_COUNT = (1 << 32) - 1
#: The limit flags, their QueueLimits field and help.
LIMIT_FLAGS = (
    ("--rate", "rate", "tasks leased per second, cluster-wide (0: no rate limit)"),
    ("--burst", "burst", "bucket size: most leased at once after a lull (0: max(1, ceil(rate)))"),
    ("--concurrency", "concurrency", "most tasks LEASED at once (0: no limit)"),
    ("--key-concurrency", "key_concurrency",
     "most tasks LEASED at once per concurrency_key (0: no limit)"),
)  # fmt: skip


def parse_rate(text: str) -> float:
    """A finite number of tasks per second, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number, 0 or more")
    return value


def parse_count(text: str) -> int:
    """A whole number 0..MAX_COUNT."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 <= value <= MAX_COUNT:
        raise argparse.ArgumentTypeError(f"{text!r} is out of range (0 to {MAX_COUNT})")
    return value


def limits_text(info: QueueInfo, none: str = "no limits") -> str:
    """The set limits as people read them: 'rate 10/s (burst 20), concurrency 5, 1 per key'."""
    limits = info.limits
    parts = []
    if limits.rate:
        burst = f" (burst {limits.burst})" if limits.burst else ""
        parts.append(f"rate {limits.rate:g}/s{burst}")
    elif limits.burst:
        parts.append(f"burst {limits.burst}")
    if limits.concurrency:
        parts.append(f"concurrency {limits.concurrency}")
    if limits.key_concurrency:
        parts.append(f"{limits.key_concurrency} per key")
    return ", ".join(parts) or none


def _changes(args: argparse.Namespace) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if args.clear:
        changes = {"rate": 0.0, "burst": 0, "concurrency": 0, "key_concurrency": 0}
    for _, field, _ in LIMIT_FLAGS:
        value = getattr(args, field)
        if value is not None:
            changes[field] = value
    return changes


@command
def _run_limit(args: argparse.Namespace, client: Client) -> None:
    changes = _changes(args)
    info = client.update_queue(args.queue, **changes) if changes else client.get_queue(args.queue)
    if args.json:
        print_json({"name": info.name, "limits": asdict(info.limits), "paused": info.paused})
        return
    paused = " (paused)" if info.paused else ""
    print(f"queue {info.name}: {limits_text(info)}{paused}")


def add(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "limit", help="set, clear or show a queue's rate and concurrency limits"
    )
    p.add_argument("queue")
    for flag, field, text in LIMIT_FLAGS:
        kind = parse_rate if field == "rate" else parse_count
        metavar = "R" if field == "rate" else "N"
        p.add_argument(flag, dest=field, type=kind, metavar=metavar, help=text)
    p.add_argument(
        "--clear", action="store_true", help="set every limit to 0 (none) before the flags"
    )
    add_connection(p)
    add_json(p)
    p.set_defaults(run=_run_limit)
