"""Every task and schedule field, set to a non-default value, survives every codec.

Field lists come from `dataclasses.fields` and the protobuf descriptors, so a
field that a codec forgets (a record tuple, a fast path, a client decoder)
fails here instead of being dropped silently.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from google.protobuf.descriptor import FieldDescriptor

from conveyor import serializer as client_serializer
from conveyor._convert import leased_task_from_pb, task_from_pb
from conveyor.v1 import task_pb2
from conveyor_server.core.model import Task, TaskSpec, TaskState
from conveyor_server.core.schedules.model import Schedule
from conveyor_server.rpc import codec
from conveyor_server.rpc.convert import spec_from_pb
from conveyor_server.rpc.schedule_codec import schedule_from_pb, schedule_to_pb
from conveyor_server.store import record, schedule_record
from tests.parity.builders import non_default

#: Task fields the wire names differently, or not at all (with the reason).
_SERVER_ONLY = {"unique_window"}  # on the wire as unique_window too: checked below
#: Fields a Lease answer leaves out (GetTask shows them): see codec.fill_leased_task.
_LEASE_OMITS = {"retry_policy", "unique_key", "unique_window", "result_retention", "result",
                "updated_at", "finished_at"}  # fmt: skip
#: Fields an Enqueue answer for a new READY task leaves out: see codec.fill_enqueued_task
#: (payload and headers too: an answer must not outgrow its request).
_ENQUEUE_OMITS = {"retry_policy", "unique_window", "result_retention", "result", "finished_at",
                  "attempt", "worker_id", "cancel_requested", "leased_at", "lease_expires_at",
                  "lease_token", "last_error", "deadline",
                  "payload", "headers"}  # fmt: skip


def _is_set(pb: task_pb2.Task, field: FieldDescriptor) -> bool:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        return len(getattr(pb, field.name)) > 0
    if field.message_type is not None:
        return pb.HasField(field.name)
    return getattr(pb, field.name) != field.default_value


def _set_fields(pb: task_pb2.Task) -> set[str]:
    return {f.name for f in pb.DESCRIPTOR.fields if _is_set(pb, f)}


def test_every_model_field_has_a_wire_field():
    model = {f.name for f in dataclasses.fields(Task)}
    wire = {f.name for f in task_pb2.Task.DESCRIPTOR.fields}
    assert model - wire == set(), "model fields with no conveyor.v1.Task field"
    assert wire - model == set(), "conveyor.v1.Task fields the model does not hold"


def test_record_round_trip_keeps_every_field():
    task = non_default(Task)
    assert record.decode(record.encode(task), task.payload) == task


def test_record_of_an_older_shape_decodes_with_defaults():
    """A field added at the end of Task reads as its default from an older record."""
    task = non_default(Task)
    shorter = record._PREFIX + record.marshal.dumps(record._encode_values(task)[:-1], 4)
    last = dataclasses.fields(Task)[-1]  # the newest field (concurrency_key at present)
    expected = dataclasses.replace(task, **{last.name: last.default})
    assert record.decode(shorter, task.payload) == expected


def test_task_to_pb_sets_every_wire_field():
    pb = codec.task_to_pb(non_default(Task), include_lease_token=True)
    unset = {f.name for f in pb.DESCRIPTOR.fields} - _set_fields(pb)
    assert unset == set(), f"task_to_pb leaves {unset} unset"


@pytest.mark.parametrize("repeat", [1, 2], ids=["field-by-field", "merged-template"])
def test_lease_fast_path_matches_the_full_encoding(repeat):
    task = non_default(Task, state=TaskState.LEASED, deadline=None)
    full = codec.task_to_pb(task, include_lease_token=True)
    for name in _LEASE_OMITS | {"deadline"}:
        full.ClearField(name)
    for _ in range(repeat):  # the second call merges the shared fields' cached bytes
        fast = task_pb2.Task()
        codec.fill_leased_task(fast, task)
    assert fast == full


@pytest.mark.parametrize("repeat", [1, 2], ids=["field-by-field", "merged-template"])
def test_enqueue_fast_path_matches_the_full_encoding(repeat):
    task = non_default(
        Task, state=TaskState.READY, deadline=None, attempt=0, worker_id="",
        cancel_requested=False, leased_at=None, lease_expires_at=None, lease_token="",
        last_error=None, finished_at=None, result=None,
    )  # fmt: skip
    full = codec.task_to_pb(task)
    for name in _ENQUEUE_OMITS:
        full.ClearField(name)
    for _ in range(repeat):
        fast = task_pb2.Task()
        codec.fill_enqueued_task(fast, task)
    assert fast == full


def test_client_decoder_fills_every_client_field():
    pb = codec.task_to_pb(non_default(Task), include_lease_token=True)
    decoded = task_from_pb(pb, client_serializer.JsonSerializer(), duplicate=True)
    defaults = {f.name for f in dataclasses.fields(decoded) if f.name != "serializer"}
    empty = {name for name in defaults if getattr(decoded, name) in (None, "", 0, False, {}, b"")}
    assert empty == set(), f"the client leaves {empty} empty"


def test_leased_decoder_agrees_with_the_full_decoder():
    pb = codec.task_to_pb(non_default(Task), include_lease_token=True)
    json = client_serializer.JsonSerializer()
    full, lazy = task_from_pb(pb, json), leased_task_from_pb(pb, json)
    for field in dataclasses.fields(full):
        if field.name in ("result_bytes", "result_content_type"):  # never in a lease
            continue
        assert getattr(lazy, field.name) == getattr(full, field.name), field.name


def test_schedule_record_round_trip_keeps_every_field():
    schedule = non_default(Schedule)
    assert schedule_record.decode(schedule_record.encode(schedule)) == schedule


def test_schedule_protobuf_round_trip_keeps_every_field():
    schedule = non_default(Schedule)
    assert schedule_from_pb(schedule_to_pb(schedule)) == schedule


def _fill(message: Any) -> Any:
    """Set every field of a protobuf message to a value other than its default."""
    for index, field in enumerate(message.DESCRIPTOR.fields, start=1):
        name = field.name
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            getattr(message, name)[f"{name}-key"] = f"{name}-value"
        elif field.message_type is not None:
            sub = getattr(message, name)
            if field.message_type.full_name in ("google.protobuf.Timestamp",):
                sub.seconds = 1_900_000_000 + index
            elif field.message_type.full_name == "google.protobuf.Duration":
                sub.seconds = 5 + index
            else:
                _fill(sub)
        elif field.type == FieldDescriptor.TYPE_STRING:
            setattr(message, name, f"{name}-{index}" if name != "queue" else "q-1")
        elif field.type == FieldDescriptor.TYPE_BYTES:
            setattr(message, name, f"{name}-bytes".encode())
        elif field.type == FieldDescriptor.TYPE_BOOL:
            setattr(message, name, True)
        elif field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
            setattr(message, name, 0.5 + index)
        elif field.enum_type is not None:
            setattr(message, name, field.enum_type.values[-1].number)
        else:
            setattr(message, name, 3 + index)
    return message


def test_every_spec_field_has_a_wire_field_and_back():
    model = {f.name for f in dataclasses.fields(TaskSpec)}
    wire = {f.name for f in task_pb2.TaskSpec.DESCRIPTOR.fields}
    assert model == wire


def test_spec_from_pb_fills_every_model_field():
    spec = spec_from_pb(_fill(task_pb2.TaskSpec()))
    defaults = TaskSpec(kind="")
    same = [f.name for f in dataclasses.fields(TaskSpec) if getattr(spec, f.name) == getattr(
        defaults, f.name)]  # fmt: skip
    assert same == [], f"spec_from_pb leaves {same} at their defaults"


def test_the_parity_check_sees_a_forgotten_field():
    """The check above, against a decoder that drops one field: it must notice."""
    spec = dataclasses.replace(spec_from_pb(_fill(task_pb2.TaskSpec())), unique_key="")
    defaults = TaskSpec(kind="")
    assert [f.name for f in dataclasses.fields(TaskSpec)
            if getattr(spec, f.name) == getattr(defaults, f.name)] == ["unique_key"]  # fmt: skip


#: Task fields added (at the end, with a default) since the release record was written.
ADDED_SINCE_RELEASE = ("concurrency_key",)


def test_a_record_written_by_the_release_decodes_unchanged():
    import binascii

    from tests.parity.release_record import RELEASE_RECORD_HEX

    task = non_default(Task)
    data = binascii.unhexlify(RELEASE_RECORD_HEX)
    # fields added at the end of Task since the release read as their defaults
    added = [f for f in dataclasses.fields(Task) if f.name in ADDED_SINCE_RELEASE]
    released = dataclasses.replace(task, **{f.name: f.default for f in added})
    assert record.decode(data, task.payload) == released
    kept = len(record._encode_values(task)) - len(added)  # the release's fields, in order
    assert data[:1] == record._PREFIX
    assert record.marshal.loads(data[1:]) == record._encode_values(task)[:kept]
