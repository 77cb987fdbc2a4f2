"""Hot-path conversions: lazily decoded leased tasks and the JSON fast path give the same values."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta

import pytest

from conveyor import Task
from conveyor._convert import leased_task_from_pb, task_from_pb
from conveyor.serializer import JsonSerializer
from conveyor.v1 import task_pb2


def leased_pb() -> task_pb2.Task:
    pb = task_pb2.Task(
        id="t1",
        queue="q",
        kind="k",
        payload=b'{"a": [1, 2]}',
        content_type="application/json",
        state=task_pb2.TASK_STATE_LEASED,
        attempt=2,
        max_attempts=3,
        lease_token="tok",
        headers={"h": "v"},
    )
    pb.created_at.FromDatetime(datetime(2026, 1, 2, 3, 4, 5, 678901))
    pb.leased_at.FromDatetime(datetime(2026, 1, 2, 3, 4, 6))
    pb.lease_expires_at.FromDatetime(datetime(2026, 1, 2, 3, 4, 36, 500000))
    pb.last_error.type = "E"
    pb.last_error.failed_at.FromDatetime(datetime(2026, 1, 2, 3, 4, 5))
    return pb


def test_a_leased_task_reads_like_an_eager_one():
    serializer = JsonSerializer()
    eager = task_from_pb(leased_pb(), serializer)
    lazy = leased_task_from_pb(leased_pb(), serializer)
    assert isinstance(lazy, Task)
    for field in dataclasses.fields(Task):
        assert getattr(lazy, field.name) == getattr(eager, field.name), field.name
    assert lazy.created_at == datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    assert lazy.deadline is None and lazy.payload == {"a": [1, 2]}
    assert lazy.lease_seconds == pytest.approx(30.5) == eager.lease_seconds
    lazy.run_at = None  # still assignable
    assert lazy.run_at is None
    copy = dataclasses.replace(lazy, attempt=3)
    assert copy.attempt == 3 and copy.lease_seconds == pytest.approx(30.5)
    fresh = leased_task_from_pb(leased_pb(), serializer)
    fresh.lease_expires_at = fresh.leased_at + timedelta(seconds=10)  # assigned, not decoded
    assert fresh.lease_seconds == pytest.approx(10)


@pytest.mark.parametrize("value", [{"a": "é😀"}, [1, 2], "x", None, 1.5, " x"])
@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-32"])
def test_json_payloads_decode_as_json_loads_does(value, encoding):
    data = json.dumps(value, ensure_ascii=False).encode(encoding)
    assert JsonSerializer().loads(data, "application/json") == json.loads(data) == value


def test_malformed_json_still_raises():
    with pytest.raises(json.JSONDecodeError):
        JsonSerializer().loads(b"{bad", "application/json")


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "APPLICATION/JSON",
        " Application/Json ;charset=UTF-8",
        "application/vnd.api+json",
        "application/problem+JSON; charset=utf-8",
    ],
)
def test_json_media_types_decode_whatever_their_case_and_parameters(content_type):
    assert JsonSerializer().loads(b'{"a": 1}', content_type) == {"a": 1}


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("", b'{"a": 1}'),  # no type: a foreign worker's bare bytes stay bytes
        ("application/octet-stream", b'{"a": 1}'),
        ("application/jsonx", b'{"a": 1}'),
        ("text/plain; charset=utf-8", '{"a": 1}'),
        ("Text/Plain", '{"a": 1}'),
    ],
)
def test_other_media_types_are_not_parsed_as_json(content_type, expected):
    assert JsonSerializer().loads(b'{"a": 1}', content_type) == expected
