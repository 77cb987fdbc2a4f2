"""Core error -> gRPC status: the one table, applied by one interceptor.

The interceptor also refuses new RPCs with UNAVAILABLE once shutdown began
(health and reflection stay answerable) and turns anything unexpected into
INTERNAL, logged once with its traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from conveyor_server.core import errors

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

_ALWAYS_SERVED = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def status_for(error: errors.ConveyorError) -> tuple[grpc.StatusCode, str]:
    for error_type, code in STATUS_TABLE:
        if isinstance(error, error_type):
            return code, str(error)
    return grpc.StatusCode.INTERNAL, str(error)


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Maps core errors to statuses for every unary RPC; refuses work while stopping."""

    def __init__(self, is_stopping: Callable[[], bool]) -> None:
        self._is_stopping = is_stopping

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(_ALWAYS_SERVED):
            return handler
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._guard_unary(handler.unary_unary, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                self._guard_stream(handler.stream_stream, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    def _guard_unary(self, inner: Any, method: str) -> Any:
        is_stopping = self._is_stopping

        async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if is_stopping():
                await context.abort(grpc.StatusCode.UNAVAILABLE, "the broker is shutting down")
            try:
                return await inner(request, context)
            except Exception as exc:
                await _abort_with(context, exc, method)

        return guarded

    def _guard_stream(self, inner: Any, method: str) -> Any:
        is_stopping = self._is_stopping

        async def guarded(requests: Any, context: grpc.aio.ServicerContext) -> Any:
            if is_stopping():
                await context.abort(grpc.StatusCode.UNAVAILABLE, "the broker is shutting down")
            try:
                async for response in inner(requests, context):
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
