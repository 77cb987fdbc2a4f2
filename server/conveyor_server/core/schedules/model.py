"""Schedules: the model, its validation, and the pure decision of which ticks fire.

Nothing here touches the store or reads a clock: `plan_fires` takes "now" and the
time the scheduler came online, and answers which ticks to fire and which to drop.
`core/schedule_book.py` applies the plan inside one store write.

Ticks and the cursor:
    * ``next_fire_time`` is the cursor: the first tick not yet handled (fired or
      dropped). Every tick before it is handled, none after it is.
    * A tick at or before ``online_since`` fell while the broker was down (or before
      this process started): it is a *misfire* and the misfire policy decides.
      Every later tick is fired, however late the scheduler gets to it.
    * Ticks while paused are dropped: resuming restarts the series after "now".
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

from conveyor_server.core import validation
from conveyor_server.core.errors import InvalidArgument
from conveyor_server.core.model import RetryPolicy, TaskSpec
from conveyor_server.core.schedules.cron import (
    ScheduleSpec,
    latest_tick_at_or_before,
    next_fire_time,
    ticks_between,
    validate_schedule_spec,
)
from conveyor_server.core.settings import BrokerSettings

_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
#: Half the smallest tick spacing we allow is far above float resolution at epoch ~2e9.
_EPSILON = 1e-6
MIN_INTERVAL_SECONDS = 0.1
MAX_JITTER_SECONDS = 24 * 3600.0
DEFAULT_MISFIRE_LIMIT = 100
MAX_MISFIRE_LIMIT = 10_000
#: How many dropped misfires one pass counts at most (a metric, not a promise).
MISFIRE_COUNT_LIMIT = 1000
#: Most on-time ticks one pass of one schedule fires; the rest wait for the next pass.
ON_TIME_BATCH = 100
#: Headers the broker adds to every task a schedule enqueues.
SCHEDULE_HEADER = "conveyor-schedule"
TICK_HEADER = "conveyor-tick"


class MisfirePolicy(enum.IntEnum):
    """Ticks missed while the broker was down (numbers match conveyor.v1.MisfirePolicy)."""

    SKIP = 1
    ONCE = 2
    ALL = 3


class OverlapPolicy(enum.IntEnum):
    """Fire while the previous task is unfinished? (numbers match conveyor.v1.OverlapPolicy)."""

    ALLOW = 1
    SKIP_IF_RUNNING = 2


class ScheduleSource(enum.IntEnum):
    """Who manages a schedule (numbers match conveyor.v1.ScheduleSource)."""

    API = 1
    FILE = 2


@dataclass(slots=True)
class TaskTemplate:
    """The task each tick enqueues. None means the broker default; `deadline` is relative."""

    kind: str
    queue: str = "default"
    payload: bytes = b""
    content_type: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    priority: int = 0
    max_attempts: int | None = None
    retry_policy: RetryPolicy | None = None
    deadline: float | None = None
    lease_duration: float | None = None
    result_retention: float | None = None


#: Fields of Schedule that say when and what it fires (the rest is state).
DEFINITION_FIELDS = (
    "cron",
    "interval_seconds",
    "timezone",
    "template",
    "misfire_policy",
    "misfire_limit",
    "overlap_policy",
    "jitter_seconds",
    "start_at",
    "end_at",
    "paused",
)
#: Definition fields whose change restarts the series from now.
TIMING_FIELDS = ("cron", "interval_seconds", "timezone", "start_at", "end_at")


@dataclass(slots=True)
class Schedule:
    """A periodic task: a definition plus the state the scheduler keeps (times in epoch s)."""

    name: str
    template: TaskTemplate
    cron: str | None = None
    interval_seconds: float | None = None
    timezone: str = "UTC"
    misfire_policy: MisfirePolicy = MisfirePolicy.ONCE
    misfire_limit: int = DEFAULT_MISFIRE_LIMIT
    overlap_policy: OverlapPolicy = OverlapPolicy.ALLOW
    jitter_seconds: float = 0.0
    start_at: float | None = None
    end_at: float | None = None
    paused: bool = False
    source: ScheduleSource = ScheduleSource.API
    next_fire_time: float | None = None
    last_fire_time: float | None = None
    last_task_id: str = ""
    created_at: float = 0.0
    updated_at: float = 0.0

    @property
    def spec(self) -> ScheduleSpec:
        return ScheduleSpec(
            cron=self.cron,
            interval_seconds=self.interval_seconds,
            timezone=self.timezone or "UTC",
            start_at=self.start_at,
            end_at=self.end_at,
        )

    @property
    def is_active(self) -> bool:
        """Whether the scheduler has a tick to wait for."""
        return not self.paused and self.next_fire_time is not None

    def has_same_timing(self, other: Schedule) -> bool:
        return all(getattr(self, n) == getattr(other, n) for n in TIMING_FIELDS)


@dataclass(slots=True)
class FirePlan:
    """What one pass does for one schedule: ticks to fire, dropped misfires, the new cursor."""

    ticks: list[float] = field(default_factory=list)
    misfires_skipped: int = 0
    next_fire_time: float | None = None


def check_name(name: str, field_name: str = "name") -> None:
    """Raises InvalidArgument unless `name` is 1-64 characters of [A-Za-z0-9_.-]."""
    if not _NAME.fullmatch(name):
        raise InvalidArgument(
            f"{field_name}: {validation.quote(name)} must be 1-64 characters of letters, digits "
            "and _ . -"
        )


def check_schedule(schedule: Schedule, settings: BrokerSettings) -> None:
    """Validate a schedule's definition before it is stored.

    Raises:
        InvalidArgument: the message names the offending field.
    """
    check_name(schedule.name)
    if (schedule.cron is None) == (schedule.interval_seconds is None):
        raise InvalidArgument("cron and interval: set exactly one")
    if schedule.interval_seconds is not None and not (
        math.isfinite(schedule.interval_seconds)
        and schedule.interval_seconds >= MIN_INTERVAL_SECONDS
    ):
        raise InvalidArgument(f"interval: must be at least {MIN_INTERVAL_SECONDS:g} seconds")
    try:
        validate_schedule_spec(schedule.spec)
    except ValueError as exc:
        raise InvalidArgument(_api_field_names(str(exc))) from None
    if schedule.misfire_policy not in MisfirePolicy.__members__.values():
        raise InvalidArgument(f"misfire_policy: unknown value {schedule.misfire_policy!r}")
    if schedule.overlap_policy not in OverlapPolicy.__members__.values():
        raise InvalidArgument(f"overlap_policy: unknown value {schedule.overlap_policy!r}")
    if not 1 <= schedule.misfire_limit <= MAX_MISFIRE_LIMIT:
        raise InvalidArgument(f"misfire_limit: must be between 1 and {MAX_MISFIRE_LIMIT}")
    validation.check_duration(schedule.jitter_seconds, "jitter", maximum=MAX_JITTER_SECONDS)
    _check_template(schedule.template, settings)


def _api_field_names(message: str) -> str:
    """cron.py names its fields after ScheduleSpec; the API calls interval_seconds "interval"."""
    return message.replace("interval_seconds", "interval")


def _check_template(template: TaskTemplate, settings: BrokerSettings) -> None:
    if template.deadline is not None and not (
        math.isfinite(template.deadline) and template.deadline > 0
    ):
        raise InvalidArgument("task.deadline: must be positive")
    if len(template.headers) > settings.max_headers - 2:
        raise InvalidArgument(f"task.headers: more than {settings.max_headers - 2} entries")
    for reserved in (SCHEDULE_HEADER, TICK_HEADER):
        if reserved in template.headers:
            raise InvalidArgument(f"task.headers: {reserved!r} is set by the broker")
    probe = task_spec(template, "probe", 0.0, 0.0, "x", 0.0)
    validation.check_spec(probe, settings, 0.0, prefix="task.")


def tick_task_id(name: str, tick: float) -> str:
    """The id of the task a tick enqueues: the same tick always yields the same id."""
    return f"schedule:{name}:{format_tick(tick)}"


def trigger_task_id(name: str, ulid: str) -> str:
    return f"schedule:{name}:trigger:{ulid}"


def format_tick(tick: float) -> str:
    """RFC 3339 UTC, with microseconds only when the tick has a fraction."""
    moment = datetime.fromtimestamp(round(tick, 6), UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond:06d}"
    return text + "Z"


def jitter_offset(name: str, tick: float, jitter_seconds: float) -> float:
    """A delay in [0, jitter_seconds) derived from name and tick: stable across restarts."""
    if jitter_seconds <= 0:
        return 0.0
    digest = hashlib.blake2b(f"{name}\x00{format_tick(tick)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 * jitter_seconds


def task_spec(
    template: TaskTemplate, name: str, tick: float, now: float, task_id: str, jitter: float
) -> TaskSpec:
    """The TaskSpec for one fire: runs at tick + jitter (or now, if that is past)."""
    run_at = tick + jitter
    start = max(run_at, now)
    headers = dict(template.headers)
    headers[SCHEDULE_HEADER] = name
    headers[TICK_HEADER] = format_tick(tick)
    return TaskSpec(
        kind=template.kind,
        queue=template.queue or "default",
        payload=template.payload,
        content_type=template.content_type,
        headers=headers,
        priority=template.priority,
        id=task_id,
        run_at=run_at if run_at > now else None,
        deadline=start + template.deadline if template.deadline is not None else None,
        max_attempts=template.max_attempts,
        retry_policy=template.retry_policy,
        lease_duration=template.lease_duration,
        result_retention=template.result_retention,
    )


def first_fire_time(schedule: Schedule, now: float) -> float | None:
    """The cursor of a schedule whose series (re)starts at `now`: its first tick after now."""
    return next_fire_time(schedule.spec, now)


def plan_fires(schedule: Schedule, now: float, online_since: float) -> FirePlan:
    """Decide which of the schedule's due ticks fire and where its cursor moves.

    Ticks in [cursor, online_since] are misfires, handled by the misfire policy; ticks
    in (online_since, now] all fire (at most ON_TIME_BATCH per pass).
    """
    cursor = schedule.next_fire_time
    plan = FirePlan(next_fire_time=cursor)
    if schedule.paused or cursor is None or cursor > now:
        return plan
    spec = schedule.spec
    after = cursor - _EPSILON
    if cursor <= online_since:
        missed_until = min(online_since, now)
        plan.ticks, plan.misfires_skipped = _plan_misfires(schedule, after, missed_until)
        after = max(after, missed_until)
    on_time = ticks_between(spec, after, now, ON_TIME_BATCH)
    plan.ticks.extend(on_time)
    last_handled = on_time[-1] if len(on_time) == ON_TIME_BATCH else now
    plan.next_fire_time = next_fire_time(spec, max(last_handled, after))
    return plan


def _plan_misfires(schedule: Schedule, after: float, until: float) -> tuple[list[float], int]:
    """The missed ticks in (after, until] to fire, and how many are dropped."""
    spec = schedule.spec
    policy = schedule.misfire_policy
    keep = {MisfirePolicy.SKIP: 0, MisfirePolicy.ONCE: 1}.get(policy, schedule.misfire_limit)
    fired = _latest_ticks(spec, after, until, keep)
    dropped_until = fired[0] - _EPSILON if fired else until
    dropped = len(ticks_between(spec, after, dropped_until, MISFIRE_COUNT_LIMIT))
    return fired, dropped


def _latest_ticks(spec: ScheduleSpec, after: float, until: float, count: int) -> list[float]:
    """The latest `count` ticks in (after, until], oldest first, found stepping backwards."""
    ticks: list[float] = []
    at = until
    while len(ticks) < count:
        tick = latest_tick_at_or_before(spec, at, after)
        if tick is None:
            break
        ticks.append(tick)
        at = tick - _EPSILON
    ticks.reverse()
    return ticks


def merge_definition(current: Schedule, new: Schedule, fields: tuple[str, ...] | None) -> Schedule:
    """`current` with the definition fields of `new` (all, or only `fields`) and its state."""
    names = DEFINITION_FIELDS if fields is None else fields
    unknown = [name for name in names if name not in DEFINITION_FIELDS]
    if unknown:
        raise InvalidArgument(f"update_mask: cannot change {', '.join(unknown)}")
    return dataclasses.replace(current, **{name: getattr(new, name) for name in names})
