"""rpc/errors.guarded on every RPC of the three services (in-process, no network).

Every method refuses with UNAVAILABLE once shutdown began, maps each core error
to its status, and turns anything unexpected into INTERNAL without details.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from conveyor.v1 import schedule_service_pb2, task_service_pb2, worker_service_pb2
from conveyor_server.core import errors
from conveyor_server.rpc.errors import STATUS_TABLE, guarded

SERVICES = [
    task_service_pb2.DESCRIPTOR.services_by_name["TaskService"],
    worker_service_pb2.DESCRIPTOR.services_by_name["WorkerService"],
    schedule_service_pb2.DESCRIPTOR.services_by_name["ScheduleService"],
]
METHODS = [(service, method) for service in SERVICES for method in service.methods]


class Context:
    """The part of grpc.aio.ServicerContext the wrapper uses."""

    def __init__(self) -> None:
        self.status: tuple[grpc.StatusCode, str] | None = None

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.status = (code, details)
        raise grpc.aio.AbortError()


class Raising:
    """A servicer whose every method raises `error` (or records that it ran)."""

    def __init__(self, error: BaseException | None) -> None:
        self.error = error
        self.ran = False

    def __getattr__(self, name: str) -> Any:
        async def unary(request: Any, context: Any) -> Any:
            self.ran = True
            if self.error is not None:
                raise self.error
            return "answer"

        return unary


async def _call(servicer: Any, service: Any, method: Any, is_stopping: bool) -> Context:
    context = Context()
    handler = getattr(guarded(servicer, service, lambda: is_stopping), method.name)
    try:
        if method.client_streaming:

            async def no_requests() -> Any:
                return
                yield

            async for _ in handler(no_requests(), context):
                pass
        else:
            await handler(object(), context)
    except grpc.aio.AbortError:
        pass
    return context


def _stream_of(error: BaseException | None) -> Any:
    class Streaming(Raising):
        def __getattr__(self, name: str) -> Any:
            async def stream(requests: Any, context: Any) -> Any:
                self.ran = True
                if self.error is not None:
                    raise self.error
                yield "answer"

            return stream

    return Streaming(error)


def _servicer(method: Any, error: BaseException | None) -> Raising:
    return _stream_of(error) if method.client_streaming else Raising(error)


@pytest.mark.parametrize(("service", "method"), METHODS, ids=lambda m: getattr(m, "name", ""))
def test_every_rpc_is_unavailable_once_shutdown_began(service, method):
    servicer = _servicer(method, None)
    context = asyncio.run(_call(servicer, service, method, is_stopping=True))
    assert context.status is not None
    assert context.status[0] == grpc.StatusCode.UNAVAILABLE
    assert "shutting down" in context.status[1]
    assert not servicer.ran


#: The documented mapping (docs/protocol.md), written out here rather than read from the
#: table under test, so that a wrong row in STATUS_TABLE fails.
DOCUMENTED_STATUS = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.LeaseLost: grpc.StatusCode.FAILED_PRECONDITION,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.ShuttingDown: grpc.StatusCode.UNAVAILABLE,
    errors.StoreUnavailable: grpc.StatusCode.UNAVAILABLE,
    errors.WriteConflict: grpc.StatusCode.ABORTED,
}


def test_the_status_table_is_the_documented_mapping():
    assert dict(STATUS_TABLE) == DOCUMENTED_STATUS


@pytest.mark.parametrize(("service", "method"), METHODS, ids=lambda m: getattr(m, "name", ""))
def test_every_rpc_maps_core_errors_and_hides_unexpected_ones(service, method):
    for error_type, code in DOCUMENTED_STATUS.items():
        context = asyncio.run(
            _call(_servicer(method, error_type("what went wrong")), service, method, False)
        )
        assert context.status == (code, "what went wrong")
    context = asyncio.run(_call(_servicer(method, KeyError("secret")), service, method, False))
    assert context.status == (grpc.StatusCode.INTERNAL, "internal error; see broker log")


def test_status_table_lists_subclasses_before_their_bases():
    seen: list[type[errors.ConveyorError]] = []
    for error_type, _ in STATUS_TABLE:
        assert not any(issubclass(error_type, earlier) for earlier in seen), error_type
        seen.append(error_type)
