"""Core error -> gRPC status: the one table, applied to every Conveyor RPC method.

Each method of a servicer is wrapped once, when the server is built
(`guarded`). The wrapper also refuses new RPCs with UNAVAILABLE once shutdown
began, answers request bytes that did not parse (rpc/wire.py) with
INVALID_ARGUMENT, and turns anything unexpected into INTERNAL, logged once with
its traceback. Health and reflection are not wrapped, so they stay answerable.

Why not a grpc.aio ServerInterceptor: it runs for every call and built the
wrapped handler anew each time, a sizeable share of a cheap call's CPU
(figures: docs/performance.md, "Decisions and their figures").
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor

from conveyor_server.core import errors
from conveyor_server.rpc.wire import Unparsable, check_requests
from conveyor_server.service.load import CallLoad

log = logging.getLogger(__name__)

#: First match wins (subclasses before their bases).
STATUS_TABLE: tuple[tuple[type[errors.ConveyorError], grpc.StatusCode], ...] = (
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (errors.LeaseLost, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.ShuttingDown, grpc.StatusCode.UNAVAILABLE),
)


def status_for(error: errors.ConveyorError) -> tuple[grpc.StatusCode, str]:
    for error_type, code in STATUS_TABLE:
        if isinstance(error, error_type):
            return code, str(error)
    return grpc.StatusCode.INTERNAL, str(error)


def guarded(
    servicer: object,
    service: ServiceDescriptor,
    is_stopping: Callable[[], bool],
    load: CallLoad | None = None,
) -> Any:
    """The servicer's RPC methods for `service`, each wrapped with the error mapping.

    Pass the result to the generated `add_*Servicer_to_server` in place of the
    servicer (a namespace of the wrapped methods; typed Any because the generated
    stubs expect their servicer classes). `load` counts the unary calls in flight.
    """
    load = load if load is not None else CallLoad(lambda: 0)
    methods = {}
    for method in service.methods:
        inner = getattr(servicer, method.name)
        path = f"/{service.full_name}/{method.name}"
        if method.client_streaming and method.server_streaming:
            methods[method.name] = _guard_stream(inner, path, is_stopping)
        elif not method.client_streaming and not method.server_streaming:
            methods[method.name] = _guard_unary(inner, path, is_stopping, load)
        else:
            raise TypeError(f"{path}: only unary and bidirectional methods are wrapped")
    return SimpleNamespace(**methods)


def _guard_unary(inner: Any, method: str, is_stopping: Callable[[], bool], load: CallLoad) -> Any:
    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if is_stopping():
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the broker is shutting down")
        if type(request) is Unparsable:  # see rpc/wire.py
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
        load.active += 1
        try:
            return await inner(request, context)
        except Exception as exc:
            await _abort_with(context, exc, method)
        finally:
            load.active -= 1

    return guarded


def _guard_stream(inner: Any, method: str, is_stopping: Callable[[], bool]) -> Any:
    async def guarded(requests: Any, context: grpc.aio.ServicerContext) -> Any:
        if is_stopping():
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the broker is shutting down")
        try:
            async for response in inner(check_requests(requests, context), context):
                yield response
        except Exception as exc:
            await _abort_with(context, exc, method)

    return guarded


async def _abort_with(context: grpc.aio.ServicerContext, exc: Exception, method: str) -> None:
    """End the call with the status the error maps to (INTERNAL, logged, for the unexpected)."""
    if isinstance(exc, grpc.aio.AbortError):
        raise exc
    if isinstance(exc, errors.ConveyorError):
        code, message = status_for(exc)
        await context.abort(code, message)
    log.error("internal error in %s", method, exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, "internal error; see broker log")
