"""`conveyor tasks|task|enqueue|retry|delete`: task commands for people."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from conveyor import Client, Task, TaskState
from conveyor_server.commands.connection import (
    UsageError,
    add_connection,
    add_json,
    command,
    print_json,
    when,
)
from conveyor_server.commands.queues import STEP
from conveyor_server.config import parse_duration

_STATES = [s.name for s in TaskState if s is not TaskState.UNSPECIFIED]
_RETRYABLE = ["DEAD", "CANCELLED", "EXPIRED"]


def task_json(task: Task) -> dict[str, Any]:
    out = asdict(task)
    for key in ("serializer", "payload_bytes", "result_bytes", "lease_token"):
        out.pop(key, None)
    out["state"] = str(task.state)
    out["payload"] = _decoded(task.payload_bytes, task.content_type)
    if task.result_bytes is not None:
        out["result"] = _decoded(task.result_bytes, task.result_content_type)
    return out


def _decoded(data: bytes, content_type: str) -> Any:
    if not data:
        return None
    if content_type in ("", "application/json"):
        try:
            return json.loads(data)
        except ValueError:
            pass
    return data.decode("utf-8", "replace")


def _since(text: str) -> datetime:
    """A time filter: an RFC 3339 time, or a duration ago (10m, 2h)."""
    try:
        return datetime.now(UTC) - timedelta(seconds=parse_duration(text))
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give a duration (10m) or a time") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r}: give a UTC offset, e.g. Z")
    return moment


def _where(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "queue": args.queue,
        "states": args.state,
        "kind": args.kind,
        "created_after": args.since,
        "created_before": args.until,
    }


@command
def _run_tasks(args: argparse.Namespace, client: Client) -> None:
    if args.limit <= 0:
        raise UsageError(f"--limit: {args.limit} is not positive")
    tasks = list(client.iter_tasks(limit=args.limit, newest_first=args.newest, **_where(args)))
    if args.json:
        print_json([task_json(t) for t in tasks])
        return
    table = Table(box=None, header_style="bold")
    for name in ("ID", "QUEUE", "KIND", "STATE", "ATTEMPT", "CREATED", "ERROR"):
        table.add_column(name)
    for t in tasks:
        error = f"{t.last_error.type}: {t.last_error.message}" if t.last_error else ""
        attempts = f"{t.attempt}/{t.max_attempts}"
        table.add_row(t.id, t.queue, t.kind, str(t.state), attempts, when(t.created_at), error)
    Console().print(table)


@command
def _run_task(args: argparse.Namespace, client: Client) -> None:
    task = client.get_task(args.task_id)
    shown = task_json(task)
    if args.json:
        print_json(shown)
        return
    console = Console()
    error = shown.pop("last_error", None)
    table = Table(box=None, show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for key in sorted(shown):
        value = shown[key]
        if isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, dict | list):
            value = json.dumps(value)
        table.add_row(key, "" if value is None else str(value))
    console.print(table)
    if error is not None:
        console.print(f"\n[bold]last error[/bold] (attempt {error['attempt']}): ", end="")
        console.print(f"{error['type']}: {error['message']}", markup=False)
        if error["details"]:
            console.print(error["details"], markup=False, highlight=False)


@command
def _run_enqueue(args: argparse.Namespace, client: Client) -> None:
    text = args.json if args.json not in (None, "-") else None
    if text is None:
        if args.json is None and sys.stdin.isatty():
            raise UsageError("give the payload with --json '{...}' or on stdin")
        text = sys.stdin.read()
    try:
        payload = json.loads(text) if text.strip() else None
    except ValueError as exc:
        raise UsageError(f"--json: not JSON: {exc}") from None
    options: dict[str, Any] = {"queue": args.queue, "priority": args.priority}
    if args.delay is not None:
        options["delay"] = timedelta(seconds=args.delay)
    if args.id:
        options["id"] = args.id
    if args.max_attempts:
        options["max_attempts"] = args.max_attempts
    task = client.enqueue(args.kind, payload, **options)
    print(f"{task.id} {'(duplicate) ' if task.duplicate else ''}{task.state}")


@command
def _run_retry(args: argparse.Namespace, client: Client) -> None:
    if args.task_ids:
        if any(v is not None for v in _where(args).values()):
            raise UsageError("give task ids or filters (--queue, --state, ...), not both")
        print(f"retried {client.retry_tasks(args.task_ids)} task(s)")
        return
    if not args.queue and not args.all:
        raise UsageError("name task ids, or --queue Q (or --all for every queue)")
    states = args.state or _RETRYABLE
    where = {**_where(args), "states": states}
    total = None
    if args.queue:
        counts = client.get_queue(args.queue).counts
        total = sum(counts.get(TaskState(s), 0) for s in states)
    retried = 0
    with Progress(console=Console(stderr=True), transient=True) as progress:
        bar = progress.add_task("retrying", total=total or None)
        while True:
            done = client.retry_tasks(limit=STEP, **where)
            retried += done
            progress.update(bar, completed=retried)
            if done < STEP:
                break
    print(f"retried {retried} task(s)")


@command
def _run_delete(args: argparse.Namespace, client: Client) -> None:
    client.delete_task(args.task_id)
    print(f"deleted {args.task_id}")


def _add_filters(p: argparse.ArgumentParser, states: list[str]) -> None:
    p.add_argument("--queue", help="only this queue")
    p.add_argument("--state", action="append", type=str.upper, choices=states, help="repeatable")
    p.add_argument("--kind", help="only this kind")
    p.add_argument("--since", type=_since, help="created at/after: 10m, 2h or an RFC 3339 time")
    p.add_argument("--until", type=_since, help="created before: as --since")


def _add(subparsers: Any) -> None:
    p = subparsers.add_parser("tasks", help="list tasks (filters: queue, state, kind, time)")
    _add_filters(p, _STATES)
    p.add_argument("--limit", type=int, default=50, help="most tasks shown [50]")
    p.add_argument("--newest", action="store_true", help="newest first")
    add_json(p)
    add_connection(p)
    p.set_defaults(run=_run_tasks)
    p = subparsers.add_parser("task", help="show one task in full, with its error")
    p.add_argument("task_id")
    add_json(p)
    add_connection(p)
    p.set_defaults(run=_run_task)
    p = subparsers.add_parser("enqueue", help="create a task from JSON (--json or stdin)")
    p.add_argument("kind")
    p.add_argument("--queue", default="default", help="[default]")
    p.add_argument("--json", help="the payload as JSON; '-' or absent: read stdin")
    p.add_argument("--delay", type=parse_duration, help="run after this long (30s, 5m)")
    p.add_argument("--priority", type=int, default=0)
    p.add_argument("--id", help="task id (idempotent enqueue)")
    p.add_argument("--max-attempts", type=int, default=0)
    add_connection(p)
    p.set_defaults(run=_run_enqueue)
    p = subparsers.add_parser("retry", help="DEAD/CANCELLED/EXPIRED tasks back to READY")
    p.add_argument("task_ids", nargs="*", help="these tasks (all or none)")
    _add_filters(p, _RETRYABLE)
    p.add_argument("--all", action="store_true", help="filters apply to every queue")
    add_connection(p)
    p.set_defaults(run=_run_retry)
    p = subparsers.add_parser("delete", help="remove one task and its result")
    p.add_argument("task_id")
    add_connection(p)
    p.set_defaults(run=_run_delete)


SUBCOMMANDS = [_add]
