"""Schedule time arithmetic: when a cron or interval schedule ticks, as pure functions of time.

Nothing here reads the clock or does I/O; every function takes the reference time
(epoch seconds, float) as an argument, so the scheduler and the tests decide what "now" is.
Cron expressions are parsed and stepped by `cronsim`; this module adds aliases, time
zones with an explicit daylight-saving rule, start/end windows and fixed-rate intervals.

Cron syntax:
    * 5 fields: ``minute hour day-of-month month day-of-week`` (standard cron).
    * 6 fields: ``second minute hour day-of-month month day-of-week``; the seconds field
      comes first, so ``"*/10 * * * * *"`` ticks every 10 seconds.
    * Aliases: ``@yearly`` = ``@annually`` = ``0 0 1 1 *``, ``@monthly`` = ``0 0 1 * *``,
      ``@weekly`` = ``0 0 * * 0``, ``@daily`` = ``@midnight`` = ``0 0 * * *``,
      ``@hourly`` = ``0 * * * *``.
    * cronsim extensions are accepted too: ``L``, ``LW``, ``5L``, ``MON#2``; names
      ``JAN``..``DEC`` and ``SUN``..``SAT``. Day-of-month and day-of-week combine as
      in Vixie/Debian cron (OR when both are restricted, AND when either starts with ``*``).

Time zones and daylight saving (the rule, decided once per expression):
    * A *wall-clock* expression restricts both the minute and the hour field (neither
      starts with ``*``), e.g. ``30 2 * * *`` or ``0 30 2 * * *``. It names times on the
      local clock. A wall time that does not exist (spring-forward gap) fires once, at
      the first instant after the gap: ``30 2 * * *`` in Europe/Berlin on 2026-03-29
      fires at 03:00 CEST (01:00 UTC); several gap times collapse into that one tick.
      A wall time that occurs twice (fall-back overlap) fires once, at its first
      occurrence. This is Debian cron's rule for jobs "at a specific time".
    * Every other expression (minute or hour field starting with ``*``: ``* * * * *``,
      ``*/10 * * * * *``, ``15 * * * *``, ``@hourly``) is a *real-time* expression: it
      ticks at every real instant whose local wall time matches, so during a fall-back
      overlap ``@hourly`` fires at both 02:00 CEST and 02:00 CET (one real hour apart)
      and in a spring-forward gap the missing wall times simply do not occur. No real
      instant ever ticks twice and the spacing in real time stays regular.
    * The split is syntactic, as in Debian cron: ``0 */2 * * *`` is real-time.
    * cronsim only ever steps naive wall time; this module maps it to instants (cronsim's
      own zone stepping skips ticks when an offset moves by 30 minutes, Lord Howe).
    * Cron ticks fall on whole seconds.

Windows and intervals:
    * ``start_at`` and ``end_at`` bound the series inclusively: no tick before
      ``start_at``, none after ``end_at``.
    * An interval schedule ticks at ``anchor + k * interval_seconds`` (k >= 0 when
      ``start_at`` is set), where the anchor is ``start_at`` or else epoch 0. The ticks
      depend only on the spec, so they are the same across broker restarts.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from conveyor_server.core.validation import MAX_TIME, quote

_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_ONE_SECOND = timedelta(seconds=1)
_NAIVE_EPOCH = datetime(1970, 1, 1)
_OFFSET_PROBE_SECONDS = 86_400
#: The longest zone name accepted (the database's longest is 32 characters).
MAX_ZONE_NAME = 64
#: The longest interval: a century. Ticks are times up to the end of year 9999 (MAX_TIME);
#: a series whose next tick would be later has ended.
MAX_INTERVAL_SECONDS = 100 * 365.25 * 86_400


@dataclass(frozen=True)
class ScheduleSpec:
    """When a schedule ticks: exactly one of `cron` and `interval_seconds`, plus a window.

    Construction does not validate; call `validate_schedule_spec` on input from users.
    """

    cron: str | None = None
    interval_seconds: float | None = None
    timezone: str = "UTC"
    start_at: float | None = None
    end_at: float | None = None


def validate_schedule_spec(spec: ScheduleSpec) -> None:
    """Check a spec before it is stored, so bad input fails at the API, not in the scheduler.

    Raises:
        ValueError: the message starts with the offending field, e.g.
            ``"timezone: unknown time zone 'Mars/Base'"``.
    """
    if (spec.cron is None) == (spec.interval_seconds is None):
        raise ValueError("cron and interval_seconds: set exactly one")
    _zone(spec.timezone)
    if spec.cron is not None:
        _cron_expression(spec.cron)
    if spec.interval_seconds is not None and not (
        math.isfinite(spec.interval_seconds) and 0 < spec.interval_seconds <= MAX_INTERVAL_SECONDS
    ):
        raise ValueError(
            f"interval_seconds: must be > 0 and at most {MAX_INTERVAL_SECONDS:g} seconds"
        )
    for name in ("start_at", "end_at"):
        value = getattr(spec, name)
        if value is not None and not (math.isfinite(value) and 0 <= value <= MAX_TIME):
            raise ValueError(f"{name}: must be a time between 1970 and 9999")
    if spec.start_at is not None and spec.end_at is not None and spec.end_at < spec.start_at:
        raise ValueError(f"end_at: {spec.end_at!r} is before start_at {spec.start_at!r}")


def next_fire_time(spec: ScheduleSpec, after: float) -> float | None:
    """Return the first tick strictly after `after`, or None when the series has ended.

    Raises:
        ValueError: the spec is invalid (see `validate_schedule_spec`).
    """
    return next(_ticks_after(spec, after), None)


def ticks_between(spec: ScheduleSpec, after: float, until: float, limit: int) -> list[float]:
    """Return the earliest ticks in (after, until], at most `limit` of them.

    The limit bounds the work a caller can ask for (a year of every-second ticks).

    Raises:
        ValueError: the spec is invalid, or `limit` is negative.
    """
    if limit < 0:
        raise ValueError(f"limit: must be >= 0, got {limit!r}")
    ticks: list[float] = []
    if limit == 0:
        return ticks
    for tick in _ticks_after(spec, after):
        if tick > until:
            break
        ticks.append(tick)
        if len(ticks) == limit:
            break
    return ticks


def latest_tick_at_or_before(spec: ScheduleSpec, at: float, after: float) -> float | None:
    """Return the latest tick in (after, at], or None if there is none.

    Misfire handling uses this to find the one tick to run after a long downtime, so it
    costs the same for a ten-day gap as for a ten-second one: intervals are computed
    arithmetically and cron is stepped backwards from `at`.

    Raises:
        ValueError: the spec is invalid (see `validate_schedule_spec`).
    """
    validate_schedule_spec(spec)
    upper = at if spec.end_at is None else min(at, spec.end_at)
    if spec.interval_seconds is not None:
        tick = _interval_tick_at_or_before(spec, upper)
    else:
        assert spec.cron is not None
        tick = _cron_tick_at_or_before(spec.cron, _zone(spec.timezone), upper, after)
    if tick is None or tick <= after:
        return None
    if spec.start_at is not None and tick < spec.start_at:
        return None
    return tick


def _zone(name: str) -> tzinfo:
    """Resolve an IANA time zone name, naming the field when it is unknown."""
    try:
        if len(name) > MAX_ZONE_NAME:
            raise ValueError(name)
        return ZoneInfo(name)
    # OSError: a directory of the database ("Europe"), or a name the file system refuses.
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"timezone: unknown time zone {quote(name)}") from None


def _cron_expression(cron: str) -> str:
    """Expand aliases and check the syntax; return the 5- or 6-field expression."""
    text = cron.strip()
    expr = _ALIASES.get(text.lower(), text)
    if expr.startswith("@"):
        raise ValueError(f"cron: bad expression {quote(cron)}: unknown alias")
    try:
        CronSim(expr, datetime(2000, 1, 1))
    except CronSimError as exc:
        raise ValueError(f"cron: bad expression {quote(cron)}: {exc}") from None
    return expr


def _is_wall_clock(expr: str) -> bool:
    """Whether DST is resolved on the local clock (fixed minute and hour) or in real time."""
    fields = expr.split()
    minute, hour = fields[-5], fields[-4]
    return not minute.startswith("*") and not hour.startswith("*")


def _ticks_after(spec: ScheduleSpec, after: float) -> Iterator[float]:
    """Yield ticks strictly after `after` in increasing order, within the spec's window."""
    validate_schedule_spec(spec)
    if spec.interval_seconds is not None:
        ticks = _interval_ticks_after(spec, after)
    else:
        assert spec.cron is not None
        if spec.start_at is not None:
            # Cron ticks are whole seconds, so "> ceil(start_at) - 1" means ">= start_at".
            after = max(after, math.ceil(spec.start_at) - 1)
        ticks = _cron_ticks_after(spec.cron, _zone(spec.timezone), after)
    for tick in ticks:
        if (spec.end_at is not None and tick > spec.end_at) or tick > MAX_TIME:
            return
        if spec.start_at is None or tick >= spec.start_at:
            yield tick


def _interval_ticks_after(spec: ScheduleSpec, after: float) -> Iterator[float]:
    """Yield anchored interval ticks after `after`; the index keeps floats from drifting."""
    assert spec.interval_seconds is not None
    anchor = spec.start_at if spec.start_at is not None else 0.0
    step = spec.interval_seconds
    k = math.floor((after - anchor) / step) + 1
    # Division can be off by one either way in floating point; settle on the exact index.
    while anchor + (k - 1) * step > after:
        k -= 1
    while anchor + k * step <= after:
        k += 1
    if spec.start_at is not None:
        k = max(k, 0)
    while True:
        yield anchor + k * step
        k += 1


def _interval_tick_at_or_before(spec: ScheduleSpec, at: float) -> float | None:
    """Return the latest anchored interval tick at or before `at`."""
    assert spec.interval_seconds is not None
    anchor = spec.start_at if spec.start_at is not None else 0.0
    step = spec.interval_seconds
    k = math.floor((at - anchor) / step)
    while anchor + k * step > at:
        k -= 1
    while anchor + (k + 1) * step <= at:
        k += 1
    if spec.start_at is not None and k < 0:
        return None
    return anchor + k * step


def _cron_ticks_after(cron: str, zone: tzinfo, after: float) -> Iterator[float]:
    """Yield cron ticks strictly after `after`, applying the module's DST rule."""
    expr = _cron_expression(cron)
    if _is_wall_clock(expr):
        yield from _wall_clock_ticks_after(expr, zone, after)
    else:
        yield from _real_time_ticks_after(expr, zone, math.floor(after))


def _wall_clock_ticks_after(expr: str, zone: tzinfo, after: float) -> Iterator[float]:
    """Step the local clock and map each matching wall time to its instant.

    The mapping is monotonic but not strictly so (a gap collapses into one instant, an
    overlap's second pass maps onto the first), hence the "> last" filter.
    """
    last = after
    wall_after = datetime.fromtimestamp(math.floor(after), zone).replace(tzinfo=None)
    for wall in _iterate(CronSim(expr, wall_after)):
        tick = _wall_to_instant(wall, zone)
        if tick > last:
            last = tick
            yield tick


def _real_time_ticks_after(expr: str, zone: tzinfo, after: int) -> Iterator[float]:
    """Yield every instant after `after` whose local wall time matches, in order.

    Within a span of constant UTC offset, wall time is the instant shifted by that offset,
    so cronsim steps naive wall time; at each offset change the search restarts.
    """
    while True:
        start = after + 1
        offset = _offset_seconds(zone, start)
        for wall in _iterate(CronSim(expr, _naive(after + offset))):
            tick = _epoch(wall) - offset
            change = _offset_change(zone, start, tick)
            if change is not None:
                after = change - 1
                break
            yield float(tick)
            start = tick
        else:
            return


def _cron_tick_at_or_before(cron: str, zone: tzinfo, at: float, after: float) -> float | None:
    """Return the latest cron tick in (after, at], stepping backwards from `at`."""
    expr = _cron_expression(cron)
    if _is_wall_clock(expr):
        tick = _wall_clock_tick_at_or_before(expr, zone, math.floor(at), after)
    else:
        tick = _real_time_tick_at_or_before(expr, zone, math.floor(at), after)
    return None if tick is None or tick <= after else tick


def _wall_clock_tick_at_or_before(expr: str, zone: tzinfo, at: int, after: float) -> float | None:
    """Return the latest wall-clock tick at or before `at` (None if none after `after`)."""
    local_at = datetime.fromtimestamp(at, zone)
    wall_at = local_at.replace(tzinfo=None)
    if local_at.fold:
        # `at` is in an overlap's second pass, whose wall times all ticked during the
        # first pass, up to the end of the overlap: start from there.
        wall_at += timedelta(seconds=_offset_seconds(zone, at, fold=0) - _offset_seconds(zone, at))
    # cronsim's reverse iteration starts strictly before its start, so start one second late.
    for wall in _iterate(CronSim(expr, wall_at + _ONE_SECOND, reverse=True)):
        tick = _wall_to_instant(wall, zone)
        if tick <= after:
            return None
        if tick <= at:
            return tick
    return None


def _real_time_tick_at_or_before(expr: str, zone: tzinfo, at: int, after: float) -> float | None:
    """Return the latest instant at or before `at` whose local wall time matches."""
    while at > after:
        offset = _offset_seconds(zone, at)
        wall = next(_iterate(CronSim(expr, _naive(at + 1 + offset), reverse=True)), None)
        if wall is None:
            return None
        tick = _epoch(wall) - offset
        change = _offset_change(zone, at, max(tick, math.floor(after)))
        if change is None:
            return float(tick)
        at = change
    return None


def _offset_seconds(zone: tzinfo, epoch: int, fold: int | None = None) -> int:
    """Return the zone's UTC offset at an instant (or, with `fold`, at its wall time)."""
    local = datetime.fromtimestamp(epoch, zone)
    if fold is not None:
        local = local.replace(fold=fold)
    offset = local.utcoffset()
    assert offset is not None
    return int(offset.total_seconds())


def _offset_change(zone: tzinfo, start: int, stop: int) -> int | None:
    """Return the instant nearest `start`, up to `stop` (either side), with another offset.

    Probes a day at a time, then bisects: tzdata never changes a zone's offset twice
    within one day (the closest pair since 1900 is four days apart).
    """
    base = _offset_seconds(zone, start)
    step = _OFFSET_PROBE_SECONDS if stop >= start else -_OFFSET_PROBE_SECONDS
    inside = start
    while inside != stop:
        probe = min(inside + step, stop) if step > 0 else max(inside + step, stop)
        if _offset_seconds(zone, probe) != base:
            while abs(probe - inside) > 1:
                middle = (inside + probe) // 2
                if _offset_seconds(zone, middle) == base:
                    inside = middle
                else:
                    probe = middle
            return probe
        inside = probe
    return None


def _naive(epoch: int) -> datetime:
    """Return the naive datetime `epoch` seconds after 1970-01-01T00:00 (any offset applied)."""
    return _NAIVE_EPOCH + timedelta(seconds=epoch)


def _epoch(naive: datetime) -> int:
    """Invert `_naive`."""
    return (naive - _NAIVE_EPOCH) // _ONE_SECOND


def _iterate(sim: CronSim) -> Iterator[datetime]:
    """Yield cronsim's matches; it stops by itself after 50 years without one, and at the
    end of year 9999 (past which datetime cannot count)."""
    while True:
        try:
            yield next(sim)
        except (StopIteration, OverflowError, ValueError):
            return


def _wall_to_instant(wall: datetime, zone: tzinfo) -> float:
    """Map a naive local time to epoch seconds: first occurrence, or the end of a gap."""
    first = wall.replace(tzinfo=zone, fold=0)
    instant = first.timestamp()
    if datetime.fromtimestamp(instant, zone).replace(tzinfo=None) == wall:
        return float(instant)
    # `wall` is in a gap. fold=1 reads it with the post-gap offset (an instant before the
    # gap), fold=0 with the pre-gap offset (an instant after it); the gap ends between.
    before_gap = int(wall.replace(tzinfo=zone, fold=1).timestamp())
    gap_end = _offset_change(zone, before_gap, int(instant))
    assert gap_end is not None
    return float(gap_end)
