"""Core error -> gRPC status: the one table, applied to every Conveyor RPC method.

Each method of a servicer is wrapped once, when the server is built
(`guarded`). The wrapper also refuses new RPCs with UNAVAILABLE once shutdown
began, answers request bytes that did not parse (rpc/wire.py) with
INVALID_ARGUMENT, and turns anything unexpected into INTERNAL, logged once with
its traceback. Health and reflection are not wrapped, so they stay answerable.
Given an RpcMetrics, it also counts each call by its status code and times it
(two clock reads and a dict update per call; a call the token check refuses counts
under its code).

Why not a grpc.aio ServerInterceptor: it runs for every call and built the
wrapped handler anew each time, a sizeable share of a cheap call's CPU
(figures: docs/performance.md, "Decisions and their figures").
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor

from conveyor_server.core import errors
from conveyor_server.rpc.wire import Unparsable, check_requests
from conveyor_server.service.metrics.rpc import MethodStats, RpcMetrics

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
    (errors.StoreUnavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.WriteConflict, grpc.StatusCode.ABORTED),
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
    metrics: RpcMetrics | None = None,
) -> Any:
    """The servicer's RPC methods for `service`, each wrapped with the error mapping.

    Pass the result to the generated `add_*Servicer_to_server` in place of the
    servicer (a namespace of the wrapped methods; typed Any because the generated
    stubs expect their servicer classes). `metrics` counts and times every call.
    """
    methods = {}
    for method in service.methods:
        inner = getattr(servicer, method.name)
        path = f"/{service.full_name}/{method.name}"
        if method.client_streaming and method.server_streaming:
            stats = _stats(metrics, service, method.name, "bidi_stream")
            methods[method.name] = _guard_stream(inner, path, is_stopping, stats)
        elif not method.client_streaming and not method.server_streaming:
            stats = _stats(metrics, service, method.name, "unary")
            methods[method.name] = _guard_unary(inner, path, is_stopping, stats)
        else:
            raise TypeError(f"{path}: only unary and bidirectional methods are wrapped")
    return SimpleNamespace(**methods)


def _stats(
    metrics: RpcMetrics | None, service: ServiceDescriptor, method: str, rpc_type: str
) -> MethodStats | None:
    return None if metrics is None else metrics.method(service.full_name, method, rpc_type)


def _guard_unary(
    inner: Any, method: str, is_stopping: Callable[[], bool], stats: MethodStats | None
) -> Any:
    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if is_stopping():
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the broker is shutting down")
        if type(request) is Unparsable:  # see rpc/wire.py
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
        try:
            return await inner(request, context)
        except Exception as exc:
            await _abort_with(context, exc, method)

    if stats is None:
        return guarded
    counted = guarded

    async def guarded_and_counted(request: Any, context: grpc.aio.ServicerContext) -> Any:
        stats.start()
        started = time.perf_counter()
        code = "OK"
        try:
            return await counted(request, context)
        except BaseException as exc:
            code = _code_name(exc, context)
            raise
        finally:
            stats.finish(code, time.perf_counter() - started)

    return guarded_and_counted


def _guard_stream(
    inner: Any, method: str, is_stopping: Callable[[], bool], stats: MethodStats | None
) -> Any:
    async def guarded(requests: Any, context: grpc.aio.ServicerContext) -> Any:
        if is_stopping():
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the broker is shutting down")
        if stats is not None:
            stats.start()
        started = time.perf_counter()
        code = "OK"
        try:
            async for response in inner(check_requests(requests, context), context):
                yield response
        except BaseException as exc:
            code = _code_name(exc, context)
            if not isinstance(exc, Exception):
                raise
            await _abort_with(context, exc, method)
        finally:
            if stats is not None:
                stats.finish(code, time.perf_counter() - started)

    return guarded


def _code_name(exc: BaseException, context: grpc.aio.ServicerContext) -> str:
    """The status code a call that raised `exc` ends with, as Prometheus labels it."""
    if isinstance(exc, grpc.aio.AbortError):
        code = context.code()
        return code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
    if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):  # the client went away
        return "CANCELLED"
    if isinstance(exc, errors.ConveyorError):
        return status_for(exc)[0].name
    return "INTERNAL"


async def _abort_with(context: grpc.aio.ServicerContext, exc: Exception, method: str) -> None:
    """End the call with the status the error maps to (INTERNAL, logged, for the unexpected)."""
    if isinstance(exc, grpc.aio.AbortError):
        raise exc
    if isinstance(exc, errors.ConveyorError):
        code, message = status_for(exc)
        await context.abort(code, message)
    log.error("internal error in %s", method, exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, "internal error; see broker log")
