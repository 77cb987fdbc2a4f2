"""Table-driven tests for schedule time arithmetic (conveyor_server.core.schedules.cron)."""

from __future__ import annotations

import itertools
import re
from datetime import datetime

import pytest

from conveyor_server.core.schedules.cron import (
    MAX_INTERVAL_SECONDS,
    ScheduleSpec,
    latest_tick_at_or_before,
    next_fire_time,
    ticks_between,
    validate_schedule_spec,
)


def ts(iso: str) -> float:
    """Epoch seconds of an ISO time that carries its UTC offset."""
    parsed = datetime.fromisoformat(iso)
    assert parsed.tzinfo is not None, iso
    return parsed.timestamp()


def iso_or_none(iso: str | None) -> float | None:
    return None if iso is None else ts(iso)


# (expr, tz, after, expected): expected is written in the schedule's local time.
NEXT_CRON_CASES = [
    # Plain UTC schedules.
    ("* * * * *", "UTC", "2026-01-01T00:00:00+00:00", "2026-01-01T00:01:00+00:00"),
    ("* * * * *", "UTC", "2026-01-01T00:00:30.5+00:00", "2026-01-01T00:01:00+00:00"),
    ("* * * * *", "UTC", "2026-12-31T23:59:59.999+00:00", "2027-01-01T00:00:00+00:00"),
    ("*/10 * * * * *", "UTC", "2026-01-01T00:00:00+00:00", "2026-01-01T00:00:10+00:00"),
    ("*/10 * * * * *", "UTC", "2026-01-01T00:00:55+00:00", "2026-01-01T00:01:00+00:00"),
    ("30 15 10 * * *", "UTC", "2026-01-01T10:15:30+00:00", "2026-01-02T10:15:30+00:00"),
    ("@hourly", "UTC", "2026-01-01T00:59:59+00:00", "2026-01-01T01:00:00+00:00"),
    ("@hourly", "UTC", "2026-01-01T01:00:00+00:00", "2026-01-01T02:00:00+00:00"),
    ("@daily", "UTC", "2026-01-01T00:00:00+00:00", "2026-01-02T00:00:00+00:00"),
    ("@midnight", "UTC", "2026-01-01T12:00:00+00:00", "2026-01-02T00:00:00+00:00"),
    ("@weekly", "UTC", "2026-01-01T00:00:00+00:00", "2026-01-04T00:00:00+00:00"),  # a Sunday
    ("@monthly", "UTC", "2026-01-15T00:00:00+00:00", "2026-02-01T00:00:00+00:00"),
    ("@yearly", "UTC", "2026-01-01T00:00:00+00:00", "2027-01-01T00:00:00+00:00"),
    ("@ANNUALLY", "UTC", "2026-06-01T00:00:00+00:00", "2027-01-01T00:00:00+00:00"),
    # Weekdays only: Friday 09:00 -> Monday 09:00.
    ("0 9 * * 1-5", "UTC", "2026-01-02T09:00:00+00:00", "2026-01-05T09:00:00+00:00"),
    ("0 9 * * MON-FRI", "UTC", "2026-01-03T12:00:00+00:00", "2026-01-05T09:00:00+00:00"),
    # Day 31 skips February and April.
    ("0 0 31 * *", "UTC", "2026-01-31T00:00:00+00:00", "2026-03-31T00:00:00+00:00"),
    ("0 0 31 * *", "UTC", "2026-03-31T00:00:00+00:00", "2026-05-31T00:00:00+00:00"),
    ("0 0 29 2 *", "UTC", "2026-01-01T00:00:00+00:00", "2028-02-29T00:00:00+00:00"),
    # Non-UTC zone without a transition nearby.
    ("0 9 * * *", "Asia/Tokyo", "2025-12-31T12:00:00+00:00", "2026-01-01T09:00:00+09:00"),
    # Europe/Berlin spring forward, 2026-03-29 02:00 CET -> 03:00 CEST.
    # Wall-clock times in the gap fire once, at the first instant after it.
    ("30 2 * * *", "Europe/Berlin", "2026-03-28T12:00:00+00:00", "2026-03-29T03:00:00+02:00"),
    ("30 2 * * *", "Europe/Berlin", "2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"),
    ("0,30 2 * * *", "Europe/Berlin", "2026-03-29T03:00:00+02:00", "2026-03-30T02:00:00+02:00"),
    ("0 30 2 * * *", "Europe/Berlin", "2026-03-28T12:00:00+00:00", "2026-03-29T03:00:00+02:00"),
    ("0 3 * * *", "Europe/Berlin", "2026-03-29T01:59:00+01:00", "2026-03-29T03:00:00+02:00"),
    # Real-time schedules skip the missing wall times and keep their real spacing.
    ("@hourly", "Europe/Berlin", "2026-03-29T01:00:00+01:00", "2026-03-29T03:00:00+02:00"),
    ("*/30 * * * *", "Europe/Berlin", "2026-03-29T01:30:00+01:00", "2026-03-29T03:00:00+02:00"),
    ("* * * * *", "Europe/Berlin", "2026-03-29T01:59:00+01:00", "2026-03-29T03:00:00+02:00"),
    # Europe/Berlin fall back, 2026-10-25 03:00 CEST -> 02:00 CET (02:xx happens twice).
    # Wall-clock times in the overlap fire once, at their first occurrence.
    ("30 2 * * *", "Europe/Berlin", "2026-10-25T02:00:00+02:00", "2026-10-25T02:30:00+02:00"),
    ("30 2 * * *", "Europe/Berlin", "2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"),
    ("30 2 * * *", "Europe/Berlin", "2026-10-25T02:10:00+01:00", "2026-10-26T02:30:00+01:00"),
    # Real-time schedules tick in both passes: each real hour once.
    ("@hourly", "Europe/Berlin", "2026-10-25T02:00:00+02:00", "2026-10-25T02:00:00+01:00"),
    ("@hourly", "Europe/Berlin", "2026-10-25T02:00:00+01:00", "2026-10-25T03:00:00+01:00"),
    ("15 * * * *", "Europe/Berlin", "2026-10-25T02:15:00+02:00", "2026-10-25T02:15:00+01:00"),
    ("* * * * *", "Europe/Berlin", "2026-10-25T02:59:00+02:00", "2026-10-25T02:00:00+01:00"),
    # America/New_York spring forward, 2026-03-08 02:00 EST -> 03:00 EDT.
    ("30 2 * * *", "America/New_York", "2026-03-08T01:59:00-05:00", "2026-03-08T03:00:00-04:00"),
    ("30 2 * * *", "America/New_York", "2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"),
    ("*/15 * * * *", "America/New_York", "2026-03-08T01:45:00-05:00", "2026-03-08T03:00:00-04:00"),
    ("@daily", "America/New_York", "2026-03-07T12:00:00-05:00", "2026-03-08T00:00:00-05:00"),
    # America/New_York fall back, 2026-11-01 02:00 EDT -> 01:00 EST (01:xx happens twice).
    ("30 1 * * *", "America/New_York", "2026-11-01T00:00:00-04:00", "2026-11-01T01:30:00-04:00"),
    ("30 1 * * *", "America/New_York", "2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"),
    ("0 * * * *", "America/New_York", "2026-11-01T01:00:00-04:00", "2026-11-01T01:00:00-05:00"),
    ("0 * * * *", "America/New_York", "2026-11-01T01:00:00-05:00", "2026-11-01T02:00:00-05:00"),
    # Lord Howe falls back by 30 minutes (02:00 +11:00 -> 01:30 +10:30): 02:00 still ticks once.
    (
        "0 */2 * * *",
        "Australia/Lord_Howe",
        "2026-04-05T00:00:00+11:00",
        "2026-04-05T02:00:00+10:30",
    ),
]


@pytest.mark.parametrize(("expr", "tz", "after", "expected"), NEXT_CRON_CASES)
def test_next_fire_time_of_cron(expr: str, tz: str, after: str, expected: str) -> None:
    spec = ScheduleSpec(cron=expr, timezone=tz)
    assert next_fire_time(spec, ts(after)) == ts(expected)


# (spec, after, expected)
WINDOW_CASES = [
    # Intervals are anchored at epoch 0 without start_at: multiples of 60 s.
    (ScheduleSpec(interval_seconds=60), "2026-01-01T00:00:30+00:00", "2026-01-01T00:01:00+00:00"),
    (ScheduleSpec(interval_seconds=60), "2026-01-01T00:01:00+00:00", "2026-01-01T00:02:00+00:00"),
    (
        ScheduleSpec(interval_seconds=0.25),
        "2026-01-01T00:00:00.1+00:00",
        "2026-01-01T00:00:00.25+00:00",
    ),
    # With start_at the anchor is start_at, and start_at itself is the first tick.
    (
        ScheduleSpec(interval_seconds=90, start_at=ts("2026-01-01T00:00:10+00:00")),
        "2025-12-31T00:00:00+00:00",
        "2026-01-01T00:00:10+00:00",
    ),
    (
        ScheduleSpec(interval_seconds=90, start_at=ts("2026-01-01T00:00:10+00:00")),
        "2026-01-01T00:00:10+00:00",
        "2026-01-01T00:01:40+00:00",
    ),
    (
        ScheduleSpec(interval_seconds=90, start_at=ts("2026-01-01T00:00:10+00:00")),
        "2026-01-01T00:10:00+00:00",
        "2026-01-01T00:10:40+00:00",
    ),
    # end_at is inclusive; after it the series is over.
    (
        ScheduleSpec(interval_seconds=3600, end_at=ts("2026-01-01T02:00:00+00:00")),
        "2026-01-01T01:00:00+00:00",
        "2026-01-01T02:00:00+00:00",
    ),
    (
        ScheduleSpec(interval_seconds=3600, end_at=ts("2026-01-01T02:00:00+00:00")),
        "2026-01-01T02:00:00+00:00",
        None,
    ),
    (
        ScheduleSpec(interval_seconds=3600, end_at=ts("2026-01-01T02:30:00+00:00")),
        "2026-01-01T02:00:00+00:00",
        None,
    ),
    # start_at delays a cron schedule; a tick exactly at start_at counts.
    (
        ScheduleSpec(cron="@hourly", start_at=ts("2026-01-01T05:30:00+00:00")),
        "2026-01-01T00:00:00+00:00",
        "2026-01-01T06:00:00+00:00",
    ),
    (
        ScheduleSpec(cron="@hourly", start_at=ts("2026-01-01T06:00:00+00:00")),
        "2026-01-01T00:00:00+00:00",
        "2026-01-01T06:00:00+00:00",
    ),
    (
        ScheduleSpec(cron="@hourly", start_at=ts("2026-01-01T05:59:59.5+00:00")),
        "2026-01-01T00:00:00+00:00",
        "2026-01-01T06:00:00+00:00",
    ),
    (
        ScheduleSpec(cron="@daily", end_at=ts("2026-01-03T00:00:00+00:00")),
        "2026-01-02T00:00:00+00:00",
        "2026-01-03T00:00:00+00:00",
    ),
    (
        ScheduleSpec(cron="@daily", end_at=ts("2026-01-03T00:00:00+00:00")),
        "2026-01-03T00:00:00+00:00",
        None,
    ),
]


@pytest.mark.parametrize(("spec", "after", "expected"), WINDOW_CASES)
def test_next_fire_time_of_intervals_and_windows(
    spec: ScheduleSpec, after: str, expected: str | None
) -> None:
    assert next_fire_time(spec, ts(after)) == iso_or_none(expected)


def test_interval_ticks_do_not_drift() -> None:
    spec = ScheduleSpec(interval_seconds=0.1)
    ticks = ticks_between(spec, 1_000_000.0, 1_000_100.0, 1000)
    assert len(ticks) == 1000
    assert ticks[0] > 1_000_000.0
    assert all(b > a for a, b in itertools.pairwise(ticks))
    assert ticks[-1] == pytest.approx(1_000_100.0)


# (spec, after, until, limit, expected)
BETWEEN_CASES = [
    (
        ScheduleSpec(cron="* * * * *"),
        "2026-01-01T00:00:00+00:00",
        "2026-01-01T01:00:00+00:00",
        3,
        ["2026-01-01T00:01:00+00:00", "2026-01-01T00:02:00+00:00", "2026-01-01T00:03:00+00:00"],
    ),
    (
        ScheduleSpec(cron="* * * * *"),
        "2026-01-01T00:00:00+00:00",
        "2026-01-01T00:02:00+00:00",
        100,
        ["2026-01-01T00:01:00+00:00", "2026-01-01T00:02:00+00:00"],
    ),
    (
        ScheduleSpec(cron="* * * * *"),
        "2026-01-01T00:00:00+00:00",
        "2026-01-01T01:00:00+00:00",
        0,
        [],
    ),
    (
        ScheduleSpec(cron="@daily"),
        "2026-01-01T00:00:00+00:00",
        "2026-01-01T23:59:59+00:00",
        10,
        [],
    ),
    (
        ScheduleSpec(interval_seconds=60, end_at=ts("2026-01-01T00:02:30+00:00")),
        "2026-01-01T00:00:00+00:00",
        "2026-01-01T01:00:00+00:00",
        10,
        ["2026-01-01T00:01:00+00:00", "2026-01-01T00:02:00+00:00"],
    ),
    # Berlin spring forward: 02:00 local does not exist; hourly ticks stay an hour apart.
    (
        ScheduleSpec(cron="@hourly", timezone="Europe/Berlin"),
        "2026-03-29T00:30:00+01:00",
        "2026-03-29T04:00:00+02:00",
        10,
        ["2026-03-29T01:00:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-29T04:00:00+02:00"],
    ),
    # Berlin fall back: 02:00 local happens twice, an hour apart; hourly ticks both.
    (
        ScheduleSpec(cron="@hourly", timezone="Europe/Berlin"),
        "2026-10-25T00:30:00+02:00",
        "2026-10-25T03:00:00+01:00",
        10,
        [
            "2026-10-25T01:00:00+02:00",
            "2026-10-25T02:00:00+02:00",
            "2026-10-25T02:00:00+01:00",
            "2026-10-25T03:00:00+01:00",
        ],
    ),
]


@pytest.mark.parametrize(("spec", "after", "until", "limit", "expected"), BETWEEN_CASES)
def test_ticks_between(
    spec: ScheduleSpec, after: str, until: str, limit: int, expected: list[str]
) -> None:
    assert ticks_between(spec, ts(after), ts(until), limit) == [ts(e) for e in expected]


@pytest.mark.parametrize(
    ("tz", "start", "end"),
    [
        ("Europe/Berlin", "2026-10-25T00:00:00+00:00", "2026-10-25T02:00:00+00:00"),
        ("America/New_York", "2026-11-01T05:00:00+00:00", "2026-11-01T07:00:00+00:00"),
        ("Europe/Berlin", "2026-03-29T00:00:00+00:00", "2026-03-29T02:00:00+00:00"),
    ],
)
def test_every_minute_ticks_each_real_minute_across_transitions(
    tz: str, start: str, end: str
) -> None:
    spec = ScheduleSpec(cron="* * * * *", timezone=tz)
    ticks = ticks_between(spec, ts(start), ts(end), 1000)
    assert ticks == [ts(start) + 60 * i for i in range(1, 121)]


# (spec, at, after, expected): the latest tick in (after, at].
LATEST_CASES = [
    (
        ScheduleSpec(cron="@hourly"),
        "2026-01-01T05:30:00+00:00",
        "2026-01-01T00:00:00+00:00",
        "2026-01-01T05:00:00+00:00",
    ),
    (
        ScheduleSpec(cron="@hourly"),
        "2026-01-01T05:00:00+00:00",
        "2026-01-01T00:00:00+00:00",
        "2026-01-01T05:00:00+00:00",
    ),
    (ScheduleSpec(cron="@hourly"), "2026-01-01T05:30:00+00:00", "2026-01-01T05:00:00+00:00", None),
    (
        ScheduleSpec(cron="0 0 31 * *"),
        "2026-05-01T00:00:00+00:00",
        "2026-01-01T00:00:00+00:00",
        "2026-03-31T00:00:00+00:00",
    ),
    # Ten days of downtime for an every-second schedule: one step back, not 864,000.
    (
        ScheduleSpec(cron="* * * * * *"),
        "2026-01-11T00:00:00.5+00:00",
        "2026-01-01T00:00:00+00:00",
        "2026-01-11T00:00:00+00:00",
    ),
    (
        ScheduleSpec(cron="* * * * * *", timezone="Europe/Berlin"),
        "2026-10-25T02:30:00.5+01:00",
        "2026-10-15T00:00:00+00:00",
        "2026-10-25T02:30:00+01:00",
    ),
    (
        ScheduleSpec(interval_seconds=1),
        "2026-01-11T00:00:00.5+00:00",
        "2026-01-01T00:00:00+00:00",
        "2026-01-11T00:00:00+00:00",
    ),
    (
        ScheduleSpec(interval_seconds=90, start_at=ts("2026-01-01T00:00:10+00:00")),
        "2026-01-01T00:10:00+00:00",
        "2025-01-01T00:00:00+00:00",
        "2026-01-01T00:09:10+00:00",
    ),
    (
        ScheduleSpec(interval_seconds=90, start_at=ts("2026-01-01T00:00:10+00:00")),
        "2026-01-01T00:00:09+00:00",
        "2025-01-01T00:00:00+00:00",
        None,
    ),
    # end_at caps the search; start_at bounds it from below.
    (
        ScheduleSpec(cron="@hourly", end_at=ts("2026-01-01T03:30:00+00:00")),
        "2026-01-05T00:00:00+00:00",
        "2026-01-01T00:00:00+00:00",
        "2026-01-01T03:00:00+00:00",
    ),
    (
        ScheduleSpec(cron="@daily", start_at=ts("2026-01-01T12:00:00+00:00")),
        "2026-01-01T18:00:00+00:00",
        "2025-12-01T00:00:00+00:00",
        None,
    ),
    # In the second pass of an overlap, the wall-clock tick already happened in the first.
    (
        ScheduleSpec(cron="30 2 * * *", timezone="Europe/Berlin"),
        "2026-10-25T02:10:00+01:00",
        "2026-10-24T12:00:00+00:00",
        "2026-10-25T02:30:00+02:00",
    ),
    (
        ScheduleSpec(cron="30 2 * * *", timezone="Europe/Berlin"),
        "2026-03-29T03:00:00+02:00",
        "2026-03-28T12:00:00+00:00",
        "2026-03-29T03:00:00+02:00",
    ),
    (
        ScheduleSpec(cron="0 * * * *", timezone="America/New_York"),
        "2026-11-01T01:30:00-05:00",
        "2026-11-01T00:00:00-04:00",
        "2026-11-01T01:00:00-05:00",
    ),
]


@pytest.mark.timeout(2)
@pytest.mark.parametrize(("spec", "at", "after", "expected"), LATEST_CASES)
def test_latest_tick_at_or_before(
    spec: ScheduleSpec, at: str, after: str, expected: str | None
) -> None:
    assert latest_tick_at_or_before(spec, ts(at), ts(after)) == iso_or_none(expected)


@pytest.mark.parametrize(
    ("expr", "tz", "start"),
    [
        ("*/20 * * * *", "Europe/Berlin", "2026-10-24T22:00:00+00:00"),
        ("30 2 * * *", "Europe/Berlin", "2026-03-27T22:00:00+00:00"),
        ("0,30 1-3 * * *", "America/New_York", "2026-10-31T22:00:00+00:00"),
        ("0 */2 * * *", "Australia/Lord_Howe", "2026-04-04T00:00:00+00:00"),
        ("*/7 * * * * *", "America/New_York", "2026-03-08T06:50:00+00:00"),
    ],
)
def test_forward_and_backward_agree_across_transitions(expr: str, tz: str, start: str) -> None:
    spec = ScheduleSpec(cron=expr, timezone=tz)
    after = ts(start)
    ticks = ticks_between(spec, after, after + 3 * 86_400, 1000)
    assert ticks == sorted(set(ticks))
    previous = after
    for tick in ticks:
        assert next_fire_time(spec, previous) == tick
        assert latest_tick_at_or_before(spec, tick, after) == tick
        assert latest_tick_at_or_before(spec, tick + 0.5, after) == tick
        assert latest_tick_at_or_before(spec, tick - 0.5, after) == (
            None if previous == after else previous
        )
        previous = tick


# (spec, message regex)
INVALID_CASES = [
    (ScheduleSpec(cron="* * *"), r"^cron: bad expression '\* \* \*': "),
    (ScheduleSpec(cron="61 * * * *"), r"^cron: bad expression '61 \* \* \* \*': Bad minute"),
    (ScheduleSpec(cron="* * * * * * *"), r"^cron: bad expression "),
    (ScheduleSpec(cron="0 0 30 2 *"), r"^cron: bad expression '0 0 30 2 \*': "),
    (ScheduleSpec(cron="@reboot"), r"^cron: bad expression '@reboot': unknown alias"),
    (ScheduleSpec(cron=""), r"^cron: bad expression '': "),
    (
        ScheduleSpec(cron="* * * * *", timezone="Mars/Base"),
        r"^timezone: unknown time zone 'Mars/Base'$",
    ),
    (ScheduleSpec(cron="* * * * *", timezone=""), r"^timezone: unknown time zone ''$"),
    (ScheduleSpec(interval_seconds=5, timezone="../etc/passwd"), r"^timezone: unknown time zone"),
    (
        ScheduleSpec(cron="* * * * *", interval_seconds=5),
        r"^cron and interval_seconds: set exactly one$",
    ),
    (ScheduleSpec(), r"^cron and interval_seconds: set exactly one$"),
    (ScheduleSpec(interval_seconds=0), r"^interval_seconds: must be > 0"),
    (ScheduleSpec(interval_seconds=-5), r"^interval_seconds: must be > 0"),
    (ScheduleSpec(interval_seconds=float("nan")), r"^interval_seconds: must be > 0"),
    (ScheduleSpec(interval_seconds=float("inf")), r"^interval_seconds: must be > 0"),
    (ScheduleSpec(interval_seconds=5, start_at=float("nan")), r"^start_at: must be a time"),
    (ScheduleSpec(cron="* * * * *", timezone="Europe"), r"^timezone: unknown time zone 'Europe'$"),
    (ScheduleSpec(cron="* * * * *", timezone="x" * 5000), r"^timezone: unknown .*5000 characters"),
    (ScheduleSpec(interval_seconds=2.0**62), r"^interval_seconds: must be > 0 and at most"),
    (ScheduleSpec(cron="* * * * *", start_at=2.0**40), r"^start_at: must be a time"),
    (ScheduleSpec(cron="* * * * *", end_at=-1.0), r"^end_at: must be a time"),
    (
        ScheduleSpec(interval_seconds=5, start_at=10.0, end_at=5.0),
        r"^end_at: 5.0 is before start_at",
    ),
]


@pytest.mark.parametrize(("spec", "message"), INVALID_CASES)
def test_invalid_spec_is_rejected_naming_the_field(spec: ScheduleSpec, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_schedule_spec(spec)
    with pytest.raises(ValueError, match=message):
        next_fire_time(spec, 0.0)
    with pytest.raises(ValueError, match=message):
        latest_tick_at_or_before(spec, 100.0, 0.0)


@pytest.mark.parametrize(
    "spec",
    [
        ScheduleSpec(cron="*/10 * * * * *"),
        ScheduleSpec(cron="@weekly", timezone="America/New_York"),
        ScheduleSpec(cron="0 0 L * *"),
        ScheduleSpec(interval_seconds=0.5, start_at=0.0, end_at=0.0),
    ],
)
def test_valid_spec_passes(spec: ScheduleSpec) -> None:
    validate_schedule_spec(spec)


def test_ticks_between_rejects_negative_limit() -> None:
    with pytest.raises(ValueError, match=re.escape("limit: must be >= 0")):
        ticks_between(ScheduleSpec(cron="@daily"), 0.0, 1e9, -1)


@pytest.mark.parametrize(
    "spec",
    [
        ScheduleSpec(cron="0 0 29 2 *", start_at=253_370_764_800.0),  # 9998-12-31: no leap day
        ScheduleSpec(interval_seconds=MAX_INTERVAL_SECONDS, start_at=253_370_764_800.0),
    ],
)
def test_a_series_ends_at_the_end_of_year_9999(spec):
    assert next_fire_time(spec, 253_370_764_800.0) is None
