"""The schedules file (`conveyor serve --schedules FILE`): TOML parsing and the change watcher.

Format (one table per schedule, keyed by its name)::

    [schedules.nightly-report]
    cron = "0 3 * * *"              # or: interval = "30s"
    timezone = "Europe/Berlin"      # default UTC
    misfire_policy = "once"         # skip | once | all
    misfire_limit = 100             # for "all"
    overlap_policy = "allow"        # allow | skip_if_running
    jitter = "10s"
    start_at = 2026-01-01T00:00:00Z # TOML date-times (with offset) or RFC 3339 strings
    end_at = 2027-01-01T00:00:00Z

    [schedules.nightly-report.task]
    queue = "reports"
    kind = "reports.nightly"
    payload = { day = "yesterday" } # a string is sent as UTF-8 text, anything else as JSON
    headers = { team = "data" }
    priority = 0
    max_attempts = 3
    deadline = "1h"                 # relative to each task's run time
    retry_policy = { initial_backoff = "1s", multiplier = 2.0, max_backoff = "5m" }

Durations are numbers of seconds or strings such as "250ms", "30s", "5m", "1h", "7d".
The file owns the schedules it declares; pausing them through the API is kept
across reloads. The watcher stats the file once a second (no inotify), and SIGHUP
asks for an immediate reload. An invalid file is logged and changes nothing.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from conveyor_server.config import parse_duration
from conveyor_server.core.errors import InvalidArgument
from conveyor_server.core.model import RetryPolicy
from conveyor_server.core.schedules.model import (
    DEFAULT_MISFIRE_LIMIT,
    MisfirePolicy,
    OverlapPolicy,
    Schedule,
    ScheduleSource,
    TaskTemplate,
)
from conveyor_server.service.background import FileWatch, read_tables

log = logging.getLogger("conveyor.schedules")

_SCHEDULE_KEYS = {
    "cron",
    "interval",
    "timezone",
    "misfire_policy",
    "misfire_limit",
    "overlap_policy",
    "jitter",
    "start_at",
    "end_at",
    "task",
}
_TASK_KEYS = {
    "queue",
    "kind",
    "payload",
    "content_type",
    "headers",
    "priority",
    "max_attempts",
    "retry_policy",
    "deadline",
    "lease_duration",
    "result_retention",
}


class ScheduleFileError(InvalidArgument):
    """The schedules file cannot be read or declares an invalid schedule."""


def load_schedule_file(path: str | os.PathLike[str]) -> list[Schedule]:
    """Parse the file into schedules (source FILE), not yet validated against the broker.

    Raises:
        ScheduleFileError: unreadable file, bad TOML, unknown keys or bad values;
            the message names the file and the schedule.
    """
    tables = read_tables(path, "schedules", ScheduleFileError)
    schedules = []
    for name, table in tables.items():
        try:
            schedule = _schedule(name, table)
        except (ValueError, TypeError) as exc:
            raise ScheduleFileError(f"{path}: schedule {name!r}: {exc}") from None
        schedules.append(schedule)
    return schedules


def _schedule(name: str, table: Any) -> Schedule:
    _check_table(table, _SCHEDULE_KEYS, "")
    if "task" not in table:
        raise ValueError("task: missing [schedules.<name>.task] table")
    return Schedule(
        name=name,
        template=_template(table["task"]),
        cron=table.get("cron"),
        interval_seconds=_duration(table, "interval"),
        timezone=table.get("timezone", "UTC"),
        misfire_policy=_enum(MisfirePolicy, table, "misfire_policy", MisfirePolicy.ONCE),
        misfire_limit=int(table.get("misfire_limit", DEFAULT_MISFIRE_LIMIT)),
        overlap_policy=_enum(OverlapPolicy, table, "overlap_policy", OverlapPolicy.ALLOW),
        jitter_seconds=_duration(table, "jitter") or 0.0,
        start_at=_time(table, "start_at"),
        end_at=_time(table, "end_at"),
        source=ScheduleSource.FILE,
    )


def _template(table: Any) -> TaskTemplate:
    _check_table(table, _TASK_KEYS, "task.")
    payload = table.get("payload")
    content_type = table.get("content_type")
    if payload is None:
        data = b""
    elif isinstance(payload, str):
        data = payload.encode()
        content_type = content_type or "text/plain"
    else:
        data = json.dumps(payload, separators=(",", ":"), default=str).encode()
        content_type = content_type or "application/json"
    retry = table.get("retry_policy")
    return TaskTemplate(
        kind=table.get("kind", ""),
        queue=table.get("queue", "default"),
        payload=data,
        content_type=content_type or "",
        headers={str(k): str(v) for k, v in table.get("headers", {}).items()},
        priority=int(table.get("priority", 0)),
        max_attempts=int(table["max_attempts"]) if "max_attempts" in table else None,
        retry_policy=_retry_policy(retry) if retry is not None else None,
        deadline=_duration(table, "deadline"),
        lease_duration=_duration(table, "lease_duration"),
        result_retention=_duration(table, "result_retention"),
    )


def _retry_policy(table: Any) -> RetryPolicy:
    _check_table(table, {"initial_backoff", "multiplier", "max_backoff", "jitter"}, "retry.")
    defaults = RetryPolicy()
    initial = _duration(table, "initial_backoff")
    maximum = _duration(table, "max_backoff")
    return RetryPolicy(
        initial_backoff=defaults.initial_backoff if initial is None else initial,
        multiplier=float(table.get("multiplier", defaults.multiplier)),
        max_backoff=defaults.max_backoff if maximum is None else maximum,
        jitter=float(table.get("jitter", 0.0)),
    )


def _check_table(table: Any, allowed: set[str], prefix: str) -> None:
    if not isinstance(table, dict):
        raise ValueError(f"{prefix.rstrip('.') or 'schedule'}: must be a table")
    unknown = set(table) - allowed
    if unknown:
        raise ValueError(f"unknown keys {sorted(prefix + k for k in unknown)}")


def _duration(table: dict[str, Any], key: str) -> float | None:
    value = table.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{key}: a duration is a number of seconds or a string like '30s'")
    return parse_duration(value) if isinstance(value, str) else float(value)


def _time(table: dict[str, Any], key: str) -> float | None:
    value = table.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise ValueError(f"{key}: give a date-time with a UTC offset, e.g. 2026-01-01T00:00:00Z")
    return value.timestamp()


def _enum(kind: Any, table: dict[str, Any], key: str, default: Any) -> Any:
    value = table.get(key)
    if value is None:
        return default
    try:
        return kind[str(value).upper()]
    except KeyError:
        choices = " | ".join(m.name.lower() for m in kind)
        raise ValueError(f"{key}: {value!r} is not one of {choices}") from None


class ScheduleFileWatcher:
    """Reconciles the file at start, then whenever its stat changes or `reload()` is called."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        apply: Callable[[Sequence[Schedule]], Awaitable[object]],
        interval: float = 1.0,
    ) -> None:
        self.path = Path(path)
        self._apply = apply
        self._watch = FileWatch(path, self._reapply, what="schedules", log=log, interval=interval)

    async def start(self) -> None:
        """Load and apply the file once; a bad file at startup is an error, not a warning.

        Raises:
            ScheduleFileError: the file is unreadable or invalid.
            InvalidArgument: a schedule is invalid for this broker (e.g. payload too big).
        """
        self._watch.mark_seen()
        await self._apply(load_schedule_file(self.path))
        self._watch.start()

    async def stop(self) -> None:
        await self._watch.stop()

    def reload(self) -> None:
        """Reload now (SIGHUP), whether or not the file looks changed."""
        self._watch.reload()

    async def _reapply(self) -> None:
        await self._apply(load_schedule_file(self.path))
