"""`conveyor schedules` and `conveyor schedule add|rm|pause|resume|trigger|show`.

Built on the public `conveyor.Client`, so they take the same connection options as
every command (--target, --token, --tls, --tls-ca, --tls-cert, --tls-key and their
environment variables). Exit codes: 0 done, 2 bad input (a flag, a payload that is
not JSON, or the broker's INVALID_ARGUMENT), 1 any other refusal or an unreachable
broker; errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from conveyor import Client, ConveyorError, Schedule
from conveyor._cli import add_connection_arguments, client_settings
from conveyor.errors import InvalidArgument
from conveyor.serializer import Encoded
from conveyor_server.config import format_duration, parse_duration

_MISFIRE = ("all", "once", "skip")
_OVERLAP = ("allow", "skip_if_running")
_SOURCE = ("api", "file")


def _add_connection(parser: argparse.ArgumentParser) -> None:
    add_connection_arguments(parser)
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per call")


def _add_schedules(subparsers: Any) -> None:
    p = subparsers.add_parser("schedules", help="list the broker's schedules")
    _add_connection(p)
    p.add_argument("--source", choices=_SOURCE, help="only API- or file-made schedules")
    p.set_defaults(run=_command(_run_list))


def _add_schedule(subparsers: Any) -> None:
    p = subparsers.add_parser("schedule", help="add, remove, pause, resume or trigger a schedule")
    verbs = p.add_subparsers(dest="verb", required=True)
    add = verbs.add_parser("add", help="create a schedule (or replace one with --upsert)")
    _add_connection(add)
    _add_definition(add)
    add.set_defaults(run=_command(_run_add))
    for verb, help_text in (
        ("rm", "delete a schedule (its tasks stay)"),
        ("pause", "stop a schedule from firing"),
        ("resume", "fire again from the next tick"),
        ("trigger", "enqueue the schedule's task once, now"),
        ("show", "print one schedule in full"),
    ):
        sub = verbs.add_parser(verb, help=help_text)
        _add_connection(sub)
        sub.add_argument("name")
        sub.set_defaults(run=_command(_VERBS[verb]))


def _add_definition(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="schedule name: 1-64 of [A-Za-z0-9_.-]")
    when = p.add_mutually_exclusive_group(required=True)
    when.add_argument("--cron", help='cron expression, e.g. "*/5 * * * *" or @hourly')
    when.add_argument("--every", type=_duration, help="fixed interval, e.g. 30s, 5m")
    p.add_argument("--kind", required=True, help="task kind (handler name)")
    p.add_argument("--queue", help="task queue [default: default]")
    p.add_argument(
        "--payload",
        help='task payload, JSON by default (e.g. \'{"path": "s.png"}\'); '
        "with --content-type, sent as given",
    )
    p.add_argument("--content-type", help="payload media type; the payload is then not parsed")
    p.add_argument("--header", action="append", default=[], help="KEY=VALUE, repeatable")
    p.add_argument("--priority", type=int)
    p.add_argument("--max-attempts", type=int)
    p.add_argument("--deadline", type=_duration, help="each task expires after this long")
    p.add_argument("--tz", default="UTC", help="IANA time zone of the cron expression")
    p.add_argument("--misfire", choices=_MISFIRE, default="once")
    p.add_argument("--misfire-limit", type=int, help="cap for --misfire all")
    p.add_argument("--overlap", choices=_OVERLAP, default="allow")
    p.add_argument("--jitter", type=_duration, help="random delay up to this long")
    p.add_argument("--start", type=_time, help="no tick before (RFC 3339, with an offset)")
    p.add_argument("--end", type=_time, help="no tick after (RFC 3339, with an offset)")
    p.add_argument("--paused", action="store_true", help="create it paused")
    p.add_argument("--upsert", action="store_true", help="replace an existing schedule")


def _duration(text: str) -> timedelta:
    try:
        return timedelta(seconds=parse_duration(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    except OverflowError:
        raise argparse.ArgumentTypeError(f"{text!r} is too long") from None


def _time(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an RFC 3339 time: {text!r}") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r}: give a UTC offset, e.g. 2026-01-01T00:00:00Z")
    return moment


class BadInput(ValueError):
    """Input the command refuses before calling the broker (exit 2)."""


def _command(run: Callable[[Client, argparse.Namespace], None]) -> Callable[..., int]:
    """Connect with the connection options, run, and turn every failure into one line."""

    def command(args: argparse.Namespace) -> int:
        prog = f"conveyor {args.command}" + (f" {args.verb}" if getattr(args, "verb", "") else "")
        try:
            with Client(args.target, timeout=args.timeout, **client_settings(args)) as client:
                run(client, args)
        except (BadInput, InvalidArgument) as exc:
            print(f"{prog}: {exc}", file=sys.stderr)
            return 2
        except ConveyorError as exc:
            code = exc.code.name if exc.code is not None else type(exc).__name__
            print(f"{prog}: {code}: {_one_line(str(exc))}", file=sys.stderr)
            return 1
        except ValueError as exc:  # connection options: a missing certificate file, ...
            print(f"{prog}: {exc}", file=sys.stderr)
            return 2
        return 0

    return command


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _run_list(client: Client, args: argparse.Namespace) -> None:
    print(format_table(client.list_schedules(source=args.source)))


def _run_add(client: Client, args: argparse.Namespace) -> None:
    options = schedule_options(args)
    schedule = client.create_schedule(
        args.name, args.kind, _payload(args), upsert=args.upsert, **options
    )
    verb = "saved" if args.upsert else "created"
    print(f"{verb} {schedule.name}: next fire {_when(schedule.next_fire_time)}")


def schedule_options(args: argparse.Namespace) -> dict[str, Any]:
    """The create_schedule keywords `conveyor schedule add` passes (those given)."""
    headers = {}
    for item in args.header:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise BadInput(f"--header {item!r}: use KEY=VALUE")
        headers[key] = value
    given = {
        "cron": args.cron,
        "every": args.every,
        "timezone": args.tz,
        "queue": args.queue,
        "headers": headers or None,
        "priority": args.priority,
        "max_attempts": args.max_attempts,
        "deadline": args.deadline,
        "misfire": args.misfire,
        "misfire_limit": args.misfire_limit,
        "overlap": args.overlap,
        "jitter": args.jitter,
        "start_at": args.start,
        "end_at": args.end,
        "paused": args.paused,
    }
    return {key: value for key, value in given.items() if value is not None}


def _payload(args: argparse.Namespace) -> Any:
    """JSON unless --content-type says otherwise (then the text is sent as given)."""
    if args.content_type is not None:
        return Encoded((args.payload or "").encode(), args.content_type)
    if args.payload is None:
        return None
    try:
        return json.loads(args.payload)
    except ValueError as exc:
        raise BadInput(
            f"--payload is not JSON ({exc}); quote strings as JSON ('\"text\"') "
            "or give --content-type"
        ) from None


def _run_rm(client: Client, args: argparse.Namespace) -> None:
    client.delete_schedule(args.name)
    print(f"deleted {args.name}")


def _run_pause(client: Client, args: argparse.Namespace) -> None:
    client.pause_schedule(args.name)
    print(f"paused {args.name}")


def _run_resume(client: Client, args: argparse.Namespace) -> None:
    schedule = client.resume_schedule(args.name)
    print(f"resumed {schedule.name}: next fire {_when(schedule.next_fire_time)}")


def _run_trigger(client: Client, args: argparse.Namespace) -> None:
    print(f"enqueued {client.trigger_schedule(args.name).id}")


def _run_show(client: Client, args: argparse.Namespace) -> None:
    print(format_schedule(client.get_schedule(args.name)))


_VERBS: dict[str, Callable[[Client, argparse.Namespace], None]] = {
    "rm": _run_rm,
    "pause": _run_pause,
    "resume": _run_resume,
    "trigger": _run_trigger,
    "show": _run_show,
}

_COLUMNS = ("NAME", "SPEC", "TZ", "NEXT FIRE", "LAST FIRE", "PAUSED", "SOURCE")


def format_table(schedules: Sequence[Schedule]) -> str:
    """The `conveyor schedules` table: one row per schedule, columns aligned."""
    rows = [_COLUMNS]
    for s in schedules:
        rows.append(
            (
                s.name,
                _spec(s),
                s.timezone,
                _when(s.next_fire_time),
                _when(s.last_fire_time),
                "yes" if s.paused else "no",
                s.source,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def format_schedule(s: Schedule) -> str:
    """`conveyor schedule show`: one field a line, times in UTC, durations as people write them."""
    misfire = f"{s.misfire.value}" + (f" (at most {s.misfire_limit})" if s.misfire_limit else "")
    fields = (
        ("name", s.name),
        ("spec", _spec(s)),
        ("timezone", s.timezone),
        ("kind", s.kind),
        ("queue", s.queue or "default"),
        ("payload", _show_payload(s.payload)),
        ("misfire", misfire),
        ("overlap", s.overlap.value),
        ("jitter", format_duration(s.jitter.total_seconds()) if s.jitter else "-"),
        ("start", _when(s.start_at)),
        ("end", _when(s.end_at)),
        ("paused", "yes" if s.paused else "no"),
        ("source", s.source),
        ("next fire", _when(s.next_fire_time)),
        ("last fire", _when(s.last_fire_time)),
        ("last task", s.last_task_id or "-"),
    )
    width = max(len(label) for label, _ in fields) + 1
    return "\n".join(f"{label + ':':<{width}} {value}" for label, value in fields)


def _spec(s: Schedule) -> str:
    if s.cron:
        return s.cron
    return f"every {format_duration(s.every.total_seconds())}" if s.every else "-"


def _show_payload(payload: Any) -> str:
    if isinstance(payload, bytes):
        return repr(payload)
    return json.dumps(payload, ensure_ascii=False)


def _when(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


#: Appended to cli.SUBCOMMANDS.
SUBCOMMANDS = [_add_schedules, _add_schedule]
