"""The hot-path encodings (shared pre-encoded times) give the same messages as field by field."""

from __future__ import annotations

import pytest

from conveyor.v1 import task_pb2
from conveyor_server.core.model import RetryPolicy, Task, TaskError, TaskState
from conveyor_server.core.transitions import start_lease
from conveyor_server.rpc.codec import fill_enqueued_task, fill_leased_task, set_time, task_to_pb

NOW = 1_790_000_000.123456


def _task(**fields) -> Task:
    base = dict(
        id="01TASK",
        queue="q",
        kind="k",
        payload=b'{"n": 1}',
        content_type="application/json",
        headers={"h": "v"},
        priority=3,
        run_at=NOW,
        deadline=None,
        max_attempts=3,
        retry_policy=RetryPolicy(),
        lease_duration=30.0,
        unique_key="u",
        unique_window=0.0,
        result_retention=3600.0,
        state=TaskState.READY,
        sequence=7,
        created_at=NOW,
        updated_at=NOW,
    )
    base.update(fields)
    return Task(**base)  # type: ignore[arg-type]


def _expected(task: Task, *, leased: bool) -> task_pb2.Task:
    """The whole message with the fields each encoding leaves out cleared."""
    full = task_to_pb(task, include_lease_token=leased)
    for name in ("retry_policy", "unique_window", "result_retention", "result", "finished_at"):
        full.ClearField(name)
    if leased:
        full.ClearField("updated_at")
        full.ClearField("unique_key")
    else:  # an Enqueue answer does not echo what the producer sent (its size)
        full.ClearField("payload")
        full.ClearField("headers")
    return full


@pytest.mark.parametrize(
    "task",
    [
        _task(),
        _task(id="02", sequence=8, priority=0, headers={}),  # same times: the cached bytes
        _task(created_at=NOW + 1, run_at=NOW + 1, updated_at=NOW + 1, lease_duration=12.5),
        _task(state=TaskState.SCHEDULED, run_at=NOW + 60),
        _task(deadline=NOW + 600),
    ],
)
def test_enqueued_task_encoding_matches_the_full_one(task):
    pb = task_pb2.Task()
    fill_enqueued_task(pb, task)
    assert pb == _expected(task, leased=False)


@pytest.mark.parametrize("attempt_error", [None, TaskError("E", "m", "d", 1, NOW - 5)])
@pytest.mark.parametrize("duration", [None, 7.25])
def test_leased_task_encoding_matches_the_full_one(attempt_error, duration):
    tasks = [_task(id=f"t{i}", sequence=i, last_error=attempt_error) for i in range(3)]
    tasks.append(_task(id="late", deadline=NOW + 600))
    for task in tasks:
        start_lease(task, NOW + 2, duration, "w1")
        pb = task_pb2.Task()
        fill_leased_task(pb, task)
        assert pb == _expected(task, leased=True)
        assert pb.lease_token == task.lease_token and pb.leased_at.seconds == int(NOW + 2)


def test_set_time_keeps_microseconds():
    ts = task_pb2.Task().created_at
    set_time(ts, NOW)
    assert abs(ts.seconds + ts.nanos / 1e9 - NOW) < 1e-6


def test_times_and_durations_round_to_what_they_stand_for():
    from datetime import timedelta

    from google.protobuf import duration_pb2, timestamp_pb2

    from conveyor_server.rpc.codec import set_duration, set_time

    duration = duration_pb2.Duration()
    set_duration(duration, 2.3)
    assert (duration.seconds, duration.nanos) == (2, 300_000_000)  # not 2.299999999
    set_duration(duration, 90.1)
    assert duration.ToTimedelta() == timedelta(seconds=90, microseconds=100_000)
    set_duration(duration, 0.9999999999)
    assert (duration.seconds, duration.nanos) == (1, 0)
    for value in (-0.25, -1.5, -0.9999999999, 59.999999999):
        expected = duration_pb2.Duration()
        expected.FromNanoseconds(round(value * 1e9))
        set_duration(duration, value)
        assert (duration.seconds, duration.nanos) == (expected.seconds, expected.nanos), value
    stamp = timestamp_pb2.Timestamp()
    wrong = 0
    for micros in range(1000):  # microsecond-precise times, as the store keeps them
        seconds = 1_790_000_000 + (micros * 1_003 % 1_000_000) / 1e6
        set_time(stamp, seconds)
        wrong += stamp.nanos != round(seconds % 1 * 1e6) * 1000
    assert wrong == 0
