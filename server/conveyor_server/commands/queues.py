"""`conveyor queues|pause|resume|purge|workers|top`: queue commands for people (QueueService)."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.progress import Progress
from rich.table import Table

from conveyor import Client, QueueInfo, TaskState
from conveyor_server.commands import limits
from conveyor_server.commands.connection import (
    UsageError,
    add_connection,
    add_json,
    age,
    command,
    json_line,
    print_json,
    when,
)

_COLUMNS = (
    TaskState.READY,
    TaskState.SCHEDULED,
    TaskState.LEASED,
    TaskState.SUCCEEDED,
    TaskState.DEAD,
    TaskState.CANCELLED,
    TaskState.EXPIRED,
)
_FINAL = (TaskState.SUCCEEDED, TaskState.DEAD, TaskState.CANCELLED, TaskState.EXPIRED)
_PURGE_DEFAULT = ("READY", "SCHEDULED")
_PURGEABLE = [s.name for s in _COLUMNS if s is not TaskState.LEASED]
#: Tasks per call of a purge or retry the CLI makes, so that it can show progress.
STEP = 1000


def queue_json(info: QueueInfo) -> dict[str, Any]:
    out = asdict(info)
    out["counts"] = {str(state): n for state, n in info.counts.items()}
    out["oldest_ready_age"] = (
        info.oldest_ready_age.total_seconds() if info.oldest_ready_age else None
    )
    return out


def queue_table(queues: list[QueueInfo], rates: dict[str, float] | None = None) -> Table:
    table = Table(box=None, header_style="bold")
    table.add_column("QUEUE")
    for state in _COLUMNS:
        table.add_column(state.name, justify="right")
    if rates is not None:
        table.add_column("DONE/S", justify="right")
    table.add_column("OLDEST READY", justify="right")
    table.add_column("WORKERS", justify="right")
    table.add_column("PAUSED")
    table.add_column("LIMITS")
    for q in queues:
        oldest = q.oldest_ready_age.total_seconds() if q.oldest_ready_age else None
        row = [q.name, *(str(q.counts.get(s, 0)) for s in _COLUMNS)]
        if rates is not None:
            row.append(f"{rates.get(q.name, 0.0):.1f}")
        row += [age(oldest), str(q.workers), "paused" if q.paused else ""]
        row.append(limits.limits_text(q, none=""))
        table.add_row(*row)
    return table


@command
def _run_queues(args: argparse.Namespace, client: Client) -> None:
    queues = client.list_queues()
    if args.json:
        print_json([queue_json(q) for q in queues])
    else:
        Console().print(queue_table(queues))


@command
def _run_pause(args: argparse.Namespace, client: Client) -> None:
    info = client.pause_queue(args.queue) if args.command == "pause" else None
    if info is None:
        info = client.resume_queue(args.queue)
    state = "paused" if info.paused else "resumed"
    print(f"queue {info.name} {state} ({info.counts.get(TaskState.READY, 0)} ready)")


def _states(values: list[str] | None, default: tuple[str, ...]) -> list[str]:
    return [v.upper() for v in values] if values else list(default)


@command
def _run_purge(args: argparse.Namespace, client: Client) -> None:
    states = _states(args.state, _PURGE_DEFAULT)
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError("purge deletes tasks: pass --yes to confirm")
        answer = input(f"delete the {'/'.join(states)} tasks of {args.queue}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing purged")
            return
    total = sum(client.get_queue(args.queue).counts.get(TaskState(s), 0) for s in states)
    purged = 0
    with Progress(console=Console(stderr=True), transient=True) as progress:
        bar = progress.add_task(f"purging {args.queue}", total=total or None)
        while True:
            done = client.purge_queue(args.queue, states, limit=STEP)
            purged += done
            progress.update(bar, completed=purged)
            if done < STEP:
                break
    print(f"purged {purged} task(s) from {args.queue}")


@command
def _run_workers(args: argparse.Namespace, client: Client) -> None:
    workers = client.list_workers()
    if args.json:
        print_json([asdict(w) for w in workers])
        return
    table = Table(box=None, header_style="bold")
    for name in ("WORKER", "HOST", "QUEUES", "IN FLIGHT", "STREAMS", "CONNECTED", "LAST SEEN"):
        table.add_column(name)
    for w in workers:
        table.add_row(
            w.id,
            w.host,
            ",".join(w.queues),
            str(w.tasks_in_flight),
            str(w.streams),
            when(w.connected_at),
            when(w.last_seen_at),
        )
    Console().print(table)


@command
def _run_top(args: argparse.Namespace, client: Client) -> None:
    if args.interval <= 0:
        raise UsageError(f"--interval: {args.interval} is not positive")
    console = Console()
    previous: dict[str, int] = {}
    previous_at = time.monotonic()
    count = 0
    last: list[QueueInfo] = []
    rates_now: dict[str, float] = {}

    def frame() -> Table:
        nonlocal previous, previous_at
        queues = client.list_queues()
        now = time.monotonic()
        finished = {q.name: sum(q.counts.get(s, 0) for s in _FINAL) for q in queues}
        elapsed = max(now - previous_at, 1e-6)
        rates = {name: max(n - previous.get(name, n), 0) / elapsed for name, n in finished.items()}
        previous, previous_at = finished, now
        last[:] = queues
        rates_now.clear()
        rates_now.update(rates)
        table = queue_table(queues, rates)
        table.title = f"conveyor top — {args.target} — {datetime.now(UTC):%H:%M:%S} UTC"
        return table

    if args.json or not console.is_terminal:  # a pipe or a test: one frame per refresh
        while not args.iterations or count < args.iterations:
            if count:
                time.sleep(args.interval)
            table = frame()
            if args.json:
                frame_json = {"queues": [queue_json(q) for q in last], "rates": rates_now}
                print(json_line(frame_json), flush=True)
            else:
                console.print(table)
            count += 1
        return
    with Live(frame(), console=console, auto_refresh=False) as live:
        count = 1
        while not args.iterations or count < args.iterations:
            time.sleep(args.interval)
            live.update(frame(), refresh=True)
            count += 1


def _add(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "queues", help="list queues: counts by state, age, workers, pause, limits"
    )
    add_connection(p)
    add_json(p)
    p.set_defaults(run=_run_queues)
    for verb, text in (
        ("pause", "stop a queue from handing out tasks (kept across restarts)"),
        ("resume", "let a paused queue hand out tasks again"),
    ):
        p = subparsers.add_parser(verb, help=text)
        p.add_argument("queue")
        add_connection(p)
        p.set_defaults(run=_run_pause)
    p = subparsers.add_parser("purge", help="delete a queue's waiting (or other) tasks")
    p.add_argument("queue")
    p.add_argument(
        "--state",
        action="append",
        type=str.upper,
        choices=_PURGEABLE,
        help="state to delete, repeatable [default: READY and SCHEDULED]",
    )
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    add_connection(p)
    p.set_defaults(run=_run_purge)
    p = subparsers.add_parser("workers", help="workers seen: streams and recent Lease callers")
    add_connection(p)
    add_json(p)
    p.set_defaults(run=_run_workers)
    p = subparsers.add_parser("top", help="live view of queue depths and rates")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes [1]")
    p.add_argument("--iterations", type=int, default=0, help="stop after N refreshes [0: never]")
    p.add_argument("--json", action="store_true", help="one JSON object per refresh")
    add_connection(p)
    p.set_defaults(run=_run_top)


SUBCOMMANDS = [_add, limits.add]
