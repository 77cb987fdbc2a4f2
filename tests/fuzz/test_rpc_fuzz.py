"""Fuzz every RPC of a real broker: generated messages and wire garbage, unary and streamed.

Every answer must be a status the protocol documents: never INTERNAL or UNKNOWN, never a
hang (each call has a deadline), and a plain enqueue -> lease -> ack still works after
each round. CI runs a small size; CONVEYOR_LONG_TESTS=1 runs many more examples.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor
from grpc_health.v1 import health_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conveyor.v1 import (
    schedule_service_pb2,
    task_pb2,
    task_service_pb2,
    worker_service_pb2,
)
from conveyor_server.testing import BrokerProcess
from tests.fuzz.strategies import garbage, messages

IS_LONG = os.environ.get("CONVEYOR_LONG_TESTS") == "1"
EXAMPLES = 400 if IS_LONG else 12
STREAM_EXAMPLES = 300 if IS_LONG else 15
CALL_TIMEOUT = 10.0
#: Codes a broker bug shows up as; DEADLINE_EXCEEDED is a hang (every wait is bounded below).
FORBIDDEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED}
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=not IS_LONG,  # CI: the same examples every run; long runs explore
)

_SERVICES = [
    task_service_pb2.DESCRIPTOR.services_by_name["TaskService"],
    worker_service_pb2.DESCRIPTOR.services_by_name["WorkerService"],
    schedule_service_pb2.DESCRIPTOR.services_by_name["ScheduleService"],
    health_pb2.DESCRIPTOR.services_by_name["Health"],
]
UNARY: list[MethodDescriptor] = [
    m
    for service in _SERVICES
    for m in service.methods
    if not m.client_streaming and not m.server_streaming
]


def _path(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


def _bounded(request: object) -> object:
    """Long-poll waits kept short, so that a deadline means a hang."""
    if request.DESCRIPTOR.fields_by_name.get("wait") is not None and request.HasField("wait"):  # type: ignore[attr-defined]
        request.wait.seconds = min(abs(request.wait.seconds), 1)  # type: ignore[attr-defined]
        request.wait.nanos = 0  # type: ignore[attr-defined]
    return request


@pytest.fixture(scope="module")
def fuzz_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    process = BrokerProcess(tmp_path_factory.mktemp("fuzz-data"))
    process.start()
    yield process
    log = process.log
    process.kill()
    assert "internal error" not in log, log[-5000:]
    assert "Traceback" not in log, log[-5000:]


@pytest.fixture(scope="module")
def channel(fuzz_broker: BrokerProcess) -> Iterator[grpc.Channel]:
    options = [
        ("grpc.max_receive_message_length", 64 << 20),
        ("grpc.max_send_message_length", 64 << 20),
    ]
    with grpc.insecure_channel(fuzz_broker.address, options=options) as ch:
        yield ch


def _raw_call(channel: grpc.Channel, method: MethodDescriptor, data: bytes) -> grpc.StatusCode:
    call = channel.unary_unary(_path(method), request_serializer=None, response_deserializer=None)
    try:
        call(data, timeout=CALL_TIMEOUT)
    except grpc.RpcError as exc:
        assert exc.code() not in FORBIDDEN, f"{_path(method)}: {exc.code()} {exc.details()}"
        assert len(exc.details() or "") < 2000
        return exc.code()
    return grpc.StatusCode.OK


def _round_trip_works(channel: grpc.Channel) -> None:
    """A plain enqueue -> lease -> ack, on a queue of its own."""
    queue = f"fuzz-check-{uuid.uuid4().hex[:8]}"
    enqueue = channel.unary_unary(
        "/conveyor.v1.TaskService/Enqueue",
        request_serializer=task_service_pb2.EnqueueRequest.SerializeToString,
        response_deserializer=task_service_pb2.EnqueueResponse.FromString,
    )
    lease = channel.unary_unary(
        "/conveyor.v1.WorkerService/Lease",
        request_serializer=worker_service_pb2.LeaseRequest.SerializeToString,
        response_deserializer=worker_service_pb2.LeaseResponse.FromString,
    )
    ack = channel.unary_unary(
        "/conveyor.v1.WorkerService/Ack",
        request_serializer=worker_service_pb2.AckRequest.SerializeToString,
        response_deserializer=worker_service_pb2.AckResponse.FromString,
    )
    spec = task_pb2.TaskSpec(queue=queue, kind="check", payload=b"{}")
    task_id = enqueue(task_service_pb2.EnqueueRequest(task=spec), timeout=CALL_TIMEOUT).task.id
    [task] = lease(worker_service_pb2.LeaseRequest(queues=[queue]), timeout=CALL_TIMEOUT).tasks
    assert task.id == task_id
    ref = worker_service_pb2.LeaseRef(task_id=task.id, lease_token=task.lease_token)
    [outcome] = ack(
        worker_service_pb2.AckRequest(acks=[worker_service_pb2.AckItem(lease=ref)]),
        timeout=CALL_TIMEOUT,
    ).outcomes
    assert outcome.code == 0


def _request_class(method: MethodDescriptor) -> type:
    return message_factory.GetMessageClass(method.input_type)


@pytest.mark.parametrize("method", UNARY, ids=_path)
def test_generated_messages_get_documented_statuses(channel, method):
    @FUZZ_SETTINGS
    @given(messages(method.input_type))
    def run(request: object) -> None:
        _raw_call(channel, method, _bounded(request).SerializeToString())  # type: ignore[attr-defined]

    run()
    _round_trip_works(channel)


@pytest.mark.parametrize("method", UNARY, ids=_path)
def test_wire_garbage_gets_documented_statuses(channel, method):
    @FUZZ_SETTINGS
    @given(st.data())
    def run(data: st.DataObject) -> None:
        valid = _bounded(data.draw(messages(method.input_type)))
        _raw_call(channel, method, data.draw(garbage(valid.SerializeToString())))  # type: ignore[attr-defined]

    run()
    _round_trip_works(channel)


_STREAM_REQUEST = worker_service_pb2.StreamWorkRequest


def _stream_messages() -> st.SearchStrategy[list[bytes]]:
    """A StreamWork conversation: an opening (often valid), then generated or garbage bytes."""
    opening = st.one_of(
        st.builds(
            lambda q: _STREAM_REQUEST(
                open=worker_service_pb2.StreamWorkOpen(queues=[q]), credits=2
            ),
            st.sampled_from(["fuzz-stream", "fuzz-stream-2"]),
        ),
        messages(_STREAM_REQUEST.DESCRIPTOR),
    ).map(lambda m: m.SerializeToString())
    later = messages(_STREAM_REQUEST.DESCRIPTOR).map(lambda m: m.SerializeToString())
    wire = later.flatmap(garbage)
    return st.tuples(opening, st.lists(st.one_of(later, wire), max_size=4)).map(
        lambda parts: [parts[0], *parts[1]]
    )


def test_stream_work_conversations_end_with_documented_statuses(channel):
    call = channel.stream_stream(
        "/conveyor.v1.WorkerService/StreamWork", request_serializer=None, response_deserializer=None
    )
    enqueue = channel.unary_unary(
        "/conveyor.v1.TaskService/EnqueueBatch",
        request_serializer=task_service_pb2.EnqueueBatchRequest.SerializeToString,
        response_deserializer=task_service_pb2.EnqueueBatchResponse.FromString,
    )
    specs = [task_pb2.TaskSpec(queue="fuzz-stream", kind="k") for _ in range(50)]
    enqueue(task_service_pb2.EnqueueBatchRequest(tasks=specs), timeout=CALL_TIMEOUT)

    @settings(FUZZ_SETTINGS, max_examples=STREAM_EXAMPLES)
    @given(_stream_messages())
    def run(conversation: list[bytes]) -> None:
        try:
            for response in call(iter(conversation), timeout=CALL_TIMEOUT):
                assert isinstance(response, bytes)
        except grpc.RpcError as exc:
            assert exc.code() not in FORBIDDEN, f"StreamWork: {exc.code()} {exc.details()}"

    run()
    _round_trip_works(channel)


def test_reflection_garbage_gets_invalid_argument(channel):
    call = channel.stream_stream(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        request_serializer=None,
        response_deserializer=None,
    )
    with pytest.raises(grpc.RpcError) as info:
        list(call(iter([b"\x0a\xff\xff\xff\x0f\x01"]), timeout=CALL_TIMEOUT))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()


def test_the_fuzzer_sees_a_planted_internal_error(channel):
    """A check must be seen to fail: an INTERNAL answer fails _raw_call."""
    method = worker_service_pb2.DESCRIPTOR.services_by_name["WorkerService"].methods_by_name["Ack"]

    class Planted(grpc.RpcError):
        def code(self) -> grpc.StatusCode:
            return grpc.StatusCode.INTERNAL

        def details(self) -> str:
            return "planted"

    class Raising:
        def unary_unary(self, *args: object, **kwargs: object):
            def call(*a: object, **k: object) -> None:
                raise Planted()

            return call

    with pytest.raises(AssertionError, match="planted"):
        _raw_call(Raising(), method, b"")  # type: ignore[arg-type]
