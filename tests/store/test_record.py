"""Task records survive an encode/decode round trip with every field set."""

from __future__ import annotations

import pytest

from conveyor_server.core.model import RetryPolicy, Task, TaskError, TaskResult, TaskState
from conveyor_server.store import record


def full_task() -> Task:
    return Task(
        id="t-1", queue="images", kind="thumbnails.make", payload=b"{}",
        content_type="application/json", headers={"trace": "x"}, priority=-7,
        run_at=1_800_000_000.25, deadline=1_800_000_100.5, max_attempts=4,
        retry_policy=RetryPolicy(0.5, 3.0, 60.0, 0.1), lease_duration=12.5,
        unique_key="u", unique_window=30.0, result_retention=0.0, state=TaskState.DEAD,
        sequence=99, created_at=1.0, updated_at=2.0, attempt=4, leased_at=3.0,
        lease_expires_at=4.0, lease_token="tok", worker_id="w", cancel_requested=True,
        finished_at=5.0, last_error=TaskError("E", "m", "d", 4, 6.0),
        result=TaskResult(b"r", "text/plain"),
    )  # fmt: skip


def test_round_trip_keeps_every_field():
    task = full_task()
    assert record.decode(record.encode(task), task.payload) == task


def test_payload_is_not_in_the_record():
    task = full_task()
    task.payload = b"P" * 1000
    assert b"P" * 1000 not in record.encode(task)


def test_unknown_record_version_is_refused():
    with pytest.raises(ValueError, match="record version"):
        record.decode(b"\x09" + record.encode(full_task())[1:], b"")
