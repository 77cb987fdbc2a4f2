"""ScheduleService over a real broker: each RPC's happy path and every status it documents."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import field_mask_pb2, timestamp_pb2

from conveyor.v1 import schedule_service_pb2 as pb2
from conveyor.v1 import schedule_service_pb2_grpc, task_pb2, worker_service_pb2
from tests.rpc.helpers import connect, expect_status, seconds

INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture
def stub(shared_broker) -> Iterator[schedule_service_pb2_grpc.ScheduleServiceStub]:
    channel = grpc.insecure_channel(shared_broker.address)
    yield schedule_service_pb2_grpc.ScheduleServiceStub(channel)
    channel.close()


@pytest.fixture
def name() -> str:
    return f"s-{uuid.uuid4().hex[:10]}"


def schedule(name: str, queue: str = "cron-rpc", **fields) -> pb2.Schedule:
    if "interval" not in fields:
        fields.setdefault("cron", "0 0 1 1 *")
    return pb2.Schedule(
        name=name, task=pb2.TaskTemplate(queue=queue, kind="job", payload=b"{}"), **fields
    )


def create(stub, name: str, **fields) -> pb2.Schedule:
    request = pb2.CreateScheduleRequest(schedule=schedule(name, **fields))
    return stub.CreateSchedule(request).schedule


def test_create_get_list_and_delete(stub, name):
    created = stub.CreateSchedule(
        pb2.CreateScheduleRequest(schedule=schedule(name, timezone="Europe/Berlin"))
    )
    assert created.created
    s = created.schedule
    assert s.source == pb2.SCHEDULE_SOURCE_API
    assert s.HasField("next_fire_time") and not s.HasField("last_fire_time")
    assert s.timezone == "Europe/Berlin"
    got = stub.GetSchedule(pb2.GetScheduleRequest(name=name)).schedule
    assert got == s
    names = [x.name for x in stub.ListSchedules(pb2.ListSchedulesRequest()).schedules]
    assert name in names
    api_only = stub.ListSchedules(pb2.ListSchedulesRequest(source=pb2.SCHEDULE_SOURCE_API))
    assert name in [x.name for x in api_only.schedules]
    stub.DeleteSchedule(pb2.DeleteScheduleRequest(name=name))
    expect_status(grpc.StatusCode.NOT_FOUND, stub.GetSchedule, pb2.GetScheduleRequest(name=name))


def test_every_second_schedule_fires_tasks_a_worker_can_lease(stub, shared_broker, name):
    queue = f"q-{name}"
    create(stub, name, queue=queue, cron="* * * * * *")
    workers = connect(shared_broker.address).workers
    request = worker_service_pb2.LeaseRequest(queues=[queue], max_tasks=10, wait=seconds(5))
    tasks = list(workers.Lease(request).tasks)
    assert tasks and tasks[0].id.startswith(f"schedule:{name}:")
    assert tasks[0].headers["conveyor-schedule"] == name
    got = stub.GetSchedule(pb2.GetScheduleRequest(name=name)).schedule
    assert got.HasField("last_fire_time") and got.last_task_id.startswith(f"schedule:{name}:")
    stub.DeleteSchedule(pb2.DeleteScheduleRequest(name=name))


def test_create_existing_without_upsert_is_already_exists(stub, name):
    create(stub, name)
    request = pb2.CreateScheduleRequest(schedule=schedule(name, cron="@hourly"))
    expect_status(grpc.StatusCode.ALREADY_EXISTS, stub.CreateSchedule, request, match=name)
    request.upsert = True
    response = stub.CreateSchedule(request)
    assert not response.created and response.schedule.cron == "@hourly"


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"cron": "61 * * * *"}, "cron"),
        ({"cron": "not cron"}, "cron"),
        ({"cron": "@fortnightly"}, "cron"),
        ({"cron": ""}, "cron and interval"),
        ({"cron": "* * * * *", "interval": seconds(5)}, "cron and interval"),
        ({"cron": "", "interval": seconds(0.001)}, "interval"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"misfire_policy": 42}, "misfire_policy"),
        ({"overlap_policy": 42}, "overlap_policy"),
        ({"misfire_limit": 100_000}, "misfire_limit"),
        ({"jitter": seconds(-1)}, "jitter"),
        (
            {
                "start_at": timestamp_pb2.Timestamp(seconds=2_000_000_000),
                "end_at": timestamp_pb2.Timestamp(seconds=1_900_000_000),
            },
            "end_at",
        ),
    ],
)
def test_create_with_bad_definition_is_invalid_argument(stub, name, fields, named):
    request = pb2.CreateScheduleRequest(schedule=schedule(name, **fields))
    expect_status(INVALID, stub.CreateSchedule, request, match=named)


@pytest.mark.parametrize("bad_name", ["", "with space", "x" * 65])
def test_bad_names_are_invalid_argument(stub, bad_name):
    request = pb2.CreateScheduleRequest(schedule=schedule(bad_name))
    expect_status(INVALID, stub.CreateSchedule, request, match="name")
    expect_status(INVALID, stub.GetSchedule, pb2.GetScheduleRequest(name=bad_name))
    expect_status(INVALID, stub.DeleteSchedule, pb2.DeleteScheduleRequest(name=bad_name))
    expect_status(INVALID, stub.PauseSchedule, pb2.PauseScheduleRequest(name=bad_name))
    expect_status(INVALID, stub.ResumeSchedule, pb2.ResumeScheduleRequest(name=bad_name))
    expect_status(INVALID, stub.TriggerSchedule, pb2.TriggerScheduleRequest(name=bad_name))


def test_bad_task_template_is_invalid_argument(stub, name):
    s = schedule(name)
    s.task.kind = ""
    expect_status(INVALID, stub.CreateSchedule, pb2.CreateScheduleRequest(schedule=s), match="kind")


def test_missing_schedule_is_not_found_everywhere(stub, name):
    missing = grpc.StatusCode.NOT_FOUND
    expect_status(missing, stub.GetSchedule, pb2.GetScheduleRequest(name=name))
    expect_status(missing, stub.DeleteSchedule, pb2.DeleteScheduleRequest(name=name))
    expect_status(missing, stub.PauseSchedule, pb2.PauseScheduleRequest(name=name))
    expect_status(missing, stub.ResumeSchedule, pb2.ResumeScheduleRequest(name=name))
    expect_status(missing, stub.TriggerSchedule, pb2.TriggerScheduleRequest(name=name))
    request = pb2.UpdateScheduleRequest(schedule=schedule(name))
    expect_status(missing, stub.UpdateSchedule, request)


def test_update_with_mask_changes_only_named_fields(stub, name):
    create(stub, name, timezone="America/New_York")
    request = pb2.UpdateScheduleRequest(
        schedule=pb2.Schedule(name=name, cron="*/5 * * * *"),
        update_mask=field_mask_pb2.FieldMask(paths=["cron"]),
    )
    updated = stub.UpdateSchedule(request).schedule
    assert updated.cron == "*/5 * * * *"
    assert updated.timezone == "America/New_York"
    assert updated.task.kind == "job"


def test_update_with_bad_mask_or_bad_result_is_invalid(stub, name):
    create(stub, name)
    for path in ("source", "next_fire_time", "nonsense"):
        request = pb2.UpdateScheduleRequest(
            schedule=pb2.Schedule(name=name),
            update_mask=field_mask_pb2.FieldMask(paths=[path]),
        )
        expect_status(INVALID, stub.UpdateSchedule, request, match="update_mask")
    request = pb2.UpdateScheduleRequest(
        schedule=pb2.Schedule(name=name, interval=seconds(60)),
        update_mask=field_mask_pb2.FieldMask(paths=["interval"]),
    )
    expect_status(INVALID, stub.UpdateSchedule, request, match="cron and interval")


def test_pause_resume_and_trigger(stub, name):
    create(stub, name, queue=f"q-{name}")
    paused = stub.PauseSchedule(pb2.PauseScheduleRequest(name=name)).schedule
    assert paused.paused and not paused.HasField("next_fire_time")
    triggered = stub.TriggerSchedule(pb2.TriggerScheduleRequest(name=name))
    assert triggered.task.id.startswith(f"schedule:{name}:trigger:")
    assert triggered.task.state == task_pb2.TASK_STATE_READY
    assert triggered.schedule.last_task_id == triggered.task.id
    resumed = stub.ResumeSchedule(pb2.ResumeScheduleRequest(name=name)).schedule
    assert not resumed.paused and resumed.next_fire_time.seconds > time.time()


def test_list_with_unknown_source_is_invalid(stub):
    expect_status(INVALID, stub.ListSchedules, pb2.ListSchedulesRequest(source=9))


def test_file_managed_schedules_refuse_api_changes(broker_factory, tmp_path):
    path = tmp_path / "schedules.toml"
    path.write_text(
        '[schedules.from-file]\ncron = "@daily"\n[schedules.from-file.task]\nkind = "job"\n'
    )
    broker = broker_factory("--schedules", str(path))
    with grpc.insecure_channel(broker.address) as channel:
        stub = schedule_service_pb2_grpc.ScheduleServiceStub(channel)
        s = stub.GetSchedule(pb2.GetScheduleRequest(name="from-file")).schedule
        assert s.source == pb2.SCHEDULE_SOURCE_FILE
        refused = grpc.StatusCode.FAILED_PRECONDITION
        update = pb2.UpdateScheduleRequest(schedule=schedule("from-file"))
        expect_status(refused, stub.UpdateSchedule, update, match="schedules file")
        delete = pb2.DeleteScheduleRequest(name="from-file")
        expect_status(refused, stub.DeleteSchedule, delete, match="schedules file")
        upsert = pb2.CreateScheduleRequest(schedule=schedule("from-file"), upsert=True)
        expect_status(refused, stub.CreateSchedule, upsert)
        upsert.upsert = False
        expect_status(grpc.StatusCode.ALREADY_EXISTS, stub.CreateSchedule, upsert)
        assert stub.PauseSchedule(pb2.PauseScheduleRequest(name="from-file")).schedule.paused


def test_broker_refuses_to_start_with_an_invalid_schedules_file(tmp_path):
    from conveyor_server.testing import BrokerProcess

    path = tmp_path / "bad.toml"
    path.write_text('[schedules.x]\ncron = "61 * * * *"\n[schedules.x.task]\nkind = "job"\n')
    process = BrokerProcess(tmp_path / "data", ["--schedules", str(path)])
    with pytest.raises(RuntimeError, match="cron"):
        process.start(timeout=15)
