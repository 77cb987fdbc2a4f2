"""Hostile and malformed input: each gets INVALID_ARGUMENT (or its documented status), never
INTERNAL or UNKNOWN, with a plain message of bounded size."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import duration_pb2, timestamp_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conveyor.v1 import (
    schedule_service_pb2,
    schedule_service_pb2_grpc,
    task_pb2,
    task_service_pb2,
    worker_service_pb2,
)
from tests.rpc.helpers import Feed, enqueue, expect_status, lease, ref

INVALID = grpc.StatusCode.INVALID_ARGUMENT
WS = worker_service_pb2
TS = task_service_pb2
SS = schedule_service_pb2

#: Bytes that no protobuf message parses: field 1 as a length-delimited value that runs
#: past the end of the input.
GARBAGE = b"\x0a\xff\xff\xff\x0f\x01"

UNARY_METHODS = [
    "/conveyor.v1.TaskService/Enqueue",
    "/conveyor.v1.TaskService/EnqueueBatch",
    "/conveyor.v1.TaskService/GetTask",
    "/conveyor.v1.TaskService/GetResult",
    "/conveyor.v1.TaskService/CancelTask",
    "/conveyor.v1.WorkerService/Lease",
    "/conveyor.v1.WorkerService/ExtendLease",
    "/conveyor.v1.WorkerService/Ack",
    "/conveyor.v1.WorkerService/Fail",
    "/conveyor.v1.WorkerService/Release",
    "/conveyor.v1.ScheduleService/CreateSchedule",
    "/conveyor.v1.ScheduleService/GetSchedule",
    "/grpc.health.v1.Health/Check",
]


def _empty_items(kind: str, good: WS.LeaseRef) -> tuple[object, ...]:
    """A request for `kind` with an item that names no lease, between two that do."""
    empty = WS.LeaseRef()
    if kind == "ack":
        return (WS.AckItem(lease=good), WS.AckItem(), WS.AckItem(lease=empty))
    if kind == "fail":
        return (WS.FailItem(lease=good), WS.FailItem(), WS.FailItem(lease=empty))
    if kind == "release":
        return (good, WS.LeaseRef(), WS.LeaseRef(lease_token="t"))
    return (WS.LeaseExtension(lease=good), WS.LeaseExtension(), WS.LeaseExtension(lease=empty))


def _call(stubs, kind: str, items: tuple[object, ...]) -> list[WS.ItemOutcome]:
    if kind == "ack":
        return list(stubs.workers.Ack(WS.AckRequest(acks=items)).outcomes)
    if kind == "fail":
        return list(stubs.workers.Fail(WS.FailRequest(failures=items)).outcomes)
    if kind == "release":
        return list(stubs.workers.Release(WS.ReleaseRequest(leases=items)).outcomes)
    results = stubs.workers.ExtendLease(WS.ExtendLeaseRequest(leases=items)).results
    return [r.outcome for r in results]


@pytest.mark.parametrize("kind", ["ack", "fail", "release", "extend"])
def test_an_item_without_its_lease_fails_alone(stubs, queue, kind):
    enqueue(stubs, queue)
    [task] = lease(stubs, queue)
    outcomes = _call(stubs, kind, _empty_items(kind, ref(task)))
    assert [o.code for o in outcomes] == [0, INVALID.value[0], INVALID.value[0]]
    assert "task_id: must not be empty" in outcomes[1].message


@pytest.mark.parametrize("kind", ["ack", "fail", "release", "extend"])
def test_a_lone_item_without_its_lease_is_invalid_argument(stubs, kind):
    call = {
        "ack": lambda: stubs.workers.Ack(WS.AckRequest(acks=[WS.AckItem()])),
        "fail": lambda: stubs.workers.Fail(WS.FailRequest(failures=[WS.FailItem()])),
        "release": lambda: stubs.workers.Release(WS.ReleaseRequest(leases=[WS.LeaseRef()])),
        "extend": lambda: stubs.workers.ExtendLease(
            WS.ExtendLeaseRequest(leases=[WS.LeaseExtension()])
        ),
    }[kind]
    expect_status(INVALID, call, match="task_id: must not be empty")


def test_a_stream_item_without_its_lease_gets_an_outcome_and_the_stream_goes_on(stubs, queue):
    enqueue(stubs, queue)
    enqueue(stubs, queue)
    opening = WS.StreamWorkRequest(open=WS.StreamWorkOpen(queues=[queue]), credits=1)
    requests = Feed(opening)
    responses = stubs.workers.StreamWork(iter(requests), timeout=20)
    first = next(responses).tasks[0]
    requests.put(WS.StreamWorkRequest(acks=[WS.AckItem(), WS.AckItem(lease=ref(first))]))
    requests.put(WS.StreamWorkRequest(credits=1))
    outcomes: list[WS.ItemOutcome] = []
    second = None
    for response in responses:
        outcomes += response.ack_outcomes
        if response.tasks:
            second = response.tasks[0]
        if second is not None and len(outcomes) == 2:
            break
    assert [o.code for o in outcomes] == [INVALID.value[0], 0]
    assert second is not None and second.id != first.id
    requests.close()
    responses.cancel()


@pytest.mark.parametrize("method", UNARY_METHODS)
def test_request_bytes_that_do_not_parse_are_invalid_argument(shared_broker, method):
    with grpc.insecure_channel(shared_broker.address) as channel:
        call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.RpcError) as info:
            call(GARBAGE, timeout=10)
    assert info.value.code() == INVALID, info.value.details()
    assert "not a valid" in info.value.details()
    assert "<class" not in info.value.details() and "Error" not in info.value.details()


@pytest.mark.parametrize("position", ["open", "later"])
def test_stream_request_bytes_that_do_not_parse_end_the_stream_invalid_argument(
    shared_broker, queue, position
):
    opening = WS.StreamWorkRequest(open=WS.StreamWorkOpen(queues=[queue])).SerializeToString()
    messages = [GARBAGE] if position == "open" else [opening, GARBAGE]
    with grpc.insecure_channel(shared_broker.address) as channel:
        call = channel.stream_stream(
            "/conveyor.v1.WorkerService/StreamWork",
            request_serializer=None,
            response_deserializer=None,
        )
        with pytest.raises(grpc.RpcError) as info:
            list(call(iter(messages), timeout=10))
    assert info.value.code() == INVALID, info.value.details()
    assert "not a valid" in info.value.details()


def test_health_still_answers_after_garbage(shared_broker):
    with grpc.insecure_channel(shared_broker.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        assert stub.Check(health_pb2.HealthCheckRequest()).status == 1


def _schedule(**fields: object) -> SS.Schedule:
    base: dict[str, object] = {
        "name": "bad-schedule",
        "task": SS.TaskTemplate(queue="q-sched", kind="k"),
    }
    base.update(fields)
    return SS.Schedule(**base)


@pytest.mark.parametrize(
    ("fields", "field_name"),
    [
        ({"cron": "* * * * *", "timezone": "Europe"}, "timezone"),
        ({"cron": "* * * * *", "timezone": "America"}, "timezone"),
        ({"cron": "* * * * *", "timezone": "Europe/" + "x" * 5000}, "timezone"),
        ({"cron": "* * * * *", "timezone": "Europe/\x00Paris"}, "timezone"),
        ({"interval": duration_pb2.Duration(seconds=2**62)}, "interval"),
        (
            {"cron": "* * * * *", "start_at": timestamp_pb2.Timestamp(seconds=2**40)},
            "start_at",
        ),
        (
            {"cron": "* * * * *", "end_at": timestamp_pb2.Timestamp(seconds=2**40)},
            "end_at",
        ),
        (
            {
                "interval": duration_pb2.Duration(seconds=60),
                "start_at": timestamp_pb2.Timestamp(seconds=2**40),
            },
            "start_at",
        ),
    ],
)
def test_out_of_range_schedules_are_invalid_argument_naming_the_field(
    shared_broker, fields, field_name
):
    with grpc.insecure_channel(shared_broker.address) as channel:
        stub = schedule_service_pb2_grpc.ScheduleServiceStub(channel)
        request = SS.CreateScheduleRequest(schedule=_schedule(**fields))
        details = expect_status(INVALID, stub.CreateSchedule, request)
    assert details.startswith(f"{field_name}: ")
    assert len(details) < 300


LONG_ID = "x" * 20_000


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.tasks.GetTask(TS.GetTaskRequest(task_id=LONG_ID)),
        lambda s: s.tasks.GetResult(TS.GetResultRequest(task_id=LONG_ID)),
        lambda s: s.tasks.CancelTask(TS.CancelTaskRequest(task_id=LONG_ID)),
        lambda s: s.tasks.Enqueue(
            TS.EnqueueRequest(task=task_pb2.TaskSpec(kind="k", queue="q", id=LONG_ID))
        ),
        lambda s: s.tasks.Enqueue(TS.EnqueueRequest(task=task_pb2.TaskSpec(kind=LONG_ID))),
        lambda s: s.tasks.Enqueue(
            TS.EnqueueRequest(task=task_pb2.TaskSpec(kind="k", headers={LONG_ID: "v"}))
        ),
        lambda s: s.workers.Ack(
            WS.AckRequest(acks=[WS.AckItem(lease=WS.LeaseRef(task_id=LONG_ID))])
        ),
        lambda s: s.workers.Lease(WS.LeaseRequest(queues=[LONG_ID])),
        lambda s: schedule_service_pb2_grpc.ScheduleServiceStub(s.channel).GetSchedule(
            SS.GetScheduleRequest(name=LONG_ID)
        ),
        lambda s: schedule_service_pb2_grpc.ScheduleServiceStub(s.channel).CreateSchedule(
            SS.CreateScheduleRequest(schedule=_schedule(cron=LONG_ID))
        ),
        lambda s: schedule_service_pb2_grpc.ScheduleServiceStub(s.channel).CreateSchedule(
            SS.CreateScheduleRequest(schedule=_schedule(cron="* * * * *", timezone=LONG_ID))
        ),
    ],
)
def test_error_messages_quote_a_bounded_prefix_of_long_input(stubs, call):
    with pytest.raises(grpc.RpcError) as info:
        call(stubs)
    assert info.value.code() in (INVALID, grpc.StatusCode.NOT_FOUND), info.value.details()
    assert len(info.value.details()) < 400
