"""`conveyor schedules` and `conveyor schedule add|rm|pause|resume|trigger|show`: gRPC clients.

They talk to a running broker (`--target`, env CONVEYOR_TARGET, default 127.0.0.1:7470)
through the generated ScheduleService stub.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf import timestamp_pb2

from conveyor.v1 import schedule_service_pb2 as pb2
from conveyor.v1 import schedule_service_pb2_grpc
from conveyor_server.config import parse_duration
from conveyor_server.rpc.codec import set_duration

DEFAULT_TARGET = "127.0.0.1:7470"
_MISFIRE = {
    "skip": pb2.MISFIRE_POLICY_SKIP,
    "once": pb2.MISFIRE_POLICY_ONCE,
    "all": pb2.MISFIRE_POLICY_ALL,
}
_OVERLAP = {
    "allow": pb2.OVERLAP_POLICY_ALLOW,
    "skip_if_running": pb2.OVERLAP_POLICY_SKIP_IF_RUNNING,
}
_SOURCE = {"api": pb2.SCHEDULE_SOURCE_API, "file": pb2.SCHEDULE_SOURCE_FILE}


def _add_target(parser: argparse.ArgumentParser) -> None:
    default = os.environ.get("CONVEYOR_TARGET", DEFAULT_TARGET)
    parser.add_argument(
        "--target",
        default=default,
        help=f"broker address host:port [env CONVEYOR_TARGET; default {DEFAULT_TARGET}]",
    )
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per call")


def _add_schedules(subparsers: Any) -> None:
    p = subparsers.add_parser("schedules", help="list the broker's schedules")
    _add_target(p)
    p.add_argument("--source", choices=sorted(_SOURCE), help="only API- or file-made schedules")
    p.set_defaults(run=_run_list)


def _add_schedule(subparsers: Any) -> None:
    p = subparsers.add_parser("schedule", help="add, remove, pause, resume or trigger a schedule")
    verbs = p.add_subparsers(dest="verb", required=True)
    add = verbs.add_parser("add", help="create a schedule (or replace one with --upsert)")
    _add_target(add)
    _add_definition(add)
    add.set_defaults(run=_run_add)
    for verb, help_text in (
        ("rm", "delete a schedule (its tasks stay)"),
        ("pause", "stop a schedule from firing"),
        ("resume", "fire again from the next tick"),
        ("trigger", "enqueue the schedule's task once, now"),
        ("show", "print one schedule in full"),
    ):
        sub = verbs.add_parser(verb, help=help_text)
        _add_target(sub)
        sub.add_argument("name")
        sub.set_defaults(run=_run_verb)


def _add_definition(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="schedule name: 1-64 of [A-Za-z0-9_.-]")
    when = p.add_mutually_exclusive_group(required=True)
    when.add_argument("--cron", help='cron expression, e.g. "*/5 * * * *" or @hourly')
    when.add_argument("--every", type=parse_duration, help="fixed interval, e.g. 30s, 5m")
    p.add_argument("--kind", required=True, help="task kind (handler name)")
    p.add_argument("--queue", default="", help="task queue [default: default]")
    p.add_argument("--payload", default="", help="task payload (sent as given)")
    p.add_argument("--content-type", default="", help="payload MIME type")
    p.add_argument("--header", action="append", default=[], help="KEY=VALUE, repeatable")
    p.add_argument("--priority", type=int, default=0)
    p.add_argument("--max-attempts", type=int, default=0)
    p.add_argument("--deadline", type=parse_duration, help="each task expires after this long")
    p.add_argument("--tz", default="UTC", help="IANA time zone of the cron expression")
    p.add_argument("--misfire", choices=sorted(_MISFIRE), default="once")
    p.add_argument("--misfire-limit", type=int, default=0, help="cap for --misfire all")
    p.add_argument("--overlap", choices=sorted(_OVERLAP), default="allow")
    p.add_argument("--jitter", type=parse_duration, help="random delay up to this long")
    p.add_argument("--start", type=_parse_time, help="no tick before (RFC 3339)")
    p.add_argument("--end", type=_parse_time, help="no tick after (RFC 3339)")
    p.add_argument("--paused", action="store_true", help="create it paused")
    p.add_argument("--upsert", action="store_true", help="replace an existing schedule")


def _parse_time(text: str) -> timestamp_pb2.Timestamp:
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError("give a UTC offset, e.g. 2026-01-01T00:00:00Z")
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment.astimezone(UTC))
    return stamp


def schedule_from_args(args: argparse.Namespace) -> pb2.Schedule:
    """The Schedule message `conveyor schedule add` sends."""
    headers = {}
    for item in args.header:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"conveyor: --header {item!r}: use KEY=VALUE")
        headers[key] = value
    schedule = pb2.Schedule(
        name=args.name,
        cron=args.cron or "",
        timezone=args.tz,
        misfire_policy=_MISFIRE[args.misfire],
        misfire_limit=args.misfire_limit,
        overlap_policy=_OVERLAP[args.overlap],
        paused=args.paused,
        task=pb2.TaskTemplate(
            queue=args.queue,
            kind=args.kind,
            payload=args.payload.encode(),
            content_type=args.content_type,
            headers=headers,
            priority=args.priority,
            max_attempts=args.max_attempts,
        ),
    )
    if args.every is not None:
        set_duration(schedule.interval, args.every)
    if args.deadline is not None:
        set_duration(schedule.task.deadline, args.deadline)
    if args.jitter is not None:
        set_duration(schedule.jitter, args.jitter)
    if args.start is not None:
        schedule.start_at.CopyFrom(args.start)
    if args.end is not None:
        schedule.end_at.CopyFrom(args.end)
    return schedule


def _call(args: argparse.Namespace, fn: Callable[[Any], Any]) -> int:
    with grpc.insecure_channel(args.target) as channel:
        stub = schedule_service_pb2_grpc.ScheduleServiceStub(channel)
        try:
            fn(stub)
        except grpc.RpcError as exc:
            print(f"conveyor: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    return 0


def _run_list(args: argparse.Namespace) -> int:
    def list_them(stub: Any) -> None:
        request = pb2.ListSchedulesRequest(
            source=_SOURCE.get(args.source or "", pb2.SCHEDULE_SOURCE_UNSPECIFIED)
        )
        response = stub.ListSchedules(request, timeout=args.timeout)
        print(format_table(response.schedules))

    return _call(args, list_them)


def _run_add(args: argparse.Namespace) -> int:
    def add(stub: Any) -> None:
        request = pb2.CreateScheduleRequest(schedule=schedule_from_args(args), upsert=args.upsert)
        response = stub.CreateSchedule(request, timeout=args.timeout)
        verb = "created" if response.created else "replaced"
        print(f"{verb} {response.schedule.name}: next fire {_time(response.schedule, 'next')}")

    return _call(args, add)


def _run_verb(args: argparse.Namespace) -> int:
    def run(stub: Any) -> None:
        name, timeout = args.name, args.timeout
        if args.verb == "rm":
            stub.DeleteSchedule(pb2.DeleteScheduleRequest(name=name), timeout=timeout)
            print(f"deleted {name}")
        elif args.verb == "pause":
            stub.PauseSchedule(pb2.PauseScheduleRequest(name=name), timeout=timeout)
            print(f"paused {name}")
        elif args.verb == "resume":
            response = stub.ResumeSchedule(pb2.ResumeScheduleRequest(name=name), timeout=timeout)
            print(f"resumed {name}: next fire {_time(response.schedule, 'next')}")
        elif args.verb == "trigger":
            response = stub.TriggerSchedule(pb2.TriggerScheduleRequest(name=name), timeout=timeout)
            print(f"enqueued {response.task.id}")
        else:
            response = stub.GetSchedule(pb2.GetScheduleRequest(name=name), timeout=timeout)
            print(response.schedule, end="")

    return _call(args, run)


_COLUMNS = ("NAME", "SPEC", "TZ", "NEXT FIRE", "LAST FIRE", "PAUSED", "SOURCE")


def format_table(schedules: Any) -> str:
    """The `conveyor schedules` table: one row per schedule, columns aligned."""
    rows = [_COLUMNS]
    for s in schedules:
        spec = s.cron or f"every {_seconds(s.interval)}"
        source = pb2.ScheduleSource.Name(s.source).removeprefix("SCHEDULE_SOURCE_").lower()
        rows.append(
            (
                s.name,
                spec,
                s.timezone or "UTC",
                _time(s, "next"),
                _time(s, "last"),
                "yes" if s.paused else "no",
                source,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _time(schedule: pb2.Schedule, which: str) -> str:
    name = f"{which}_fire_time"
    if not schedule.HasField(name):  # type: ignore[arg-type]
        return "-"
    stamp: timestamp_pb2.Timestamp = getattr(schedule, name)
    return stamp.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _seconds(duration: Any) -> str:
    total = duration.seconds + duration.nanos / 1e9
    return f"{total:g}s"


#: Appended to cli.SUBCOMMANDS.
SUBCOMMANDS = [_add_schedules, _add_schedule]
