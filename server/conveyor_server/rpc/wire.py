"""Request bytes that do not parse: INVALID_ARGUMENT with a plain message, on every method.

grpcio answers a deserializer's exception with UNKNOWN and the exception's class
in the message (INTERNAL on a stream). Every method is registered here instead,
with a deserializer that returns an `Unparsable` marker for bad bytes; the
method's wrapper (rpc/errors.py `guarded` for Conveyor's services, `_checked_*`
below for health and reflection) answers it.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import grpc
from google.protobuf.message import DecodeError


class Unparsable:
    """Stands for a request whose bytes are not a valid message of the method's type."""

    __slots__ = ("message",)

    def __init__(self, type_name: str) -> None:
        self.message = f"the request is not a valid {type_name} message"


def tolerant_deserializer(parse: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    """`parse`, returning an Unparsable instead of raising for bytes that do not parse."""
    descriptor = getattr(getattr(parse, "__self__", None), "DESCRIPTOR", None)
    marker = Unparsable(descriptor.full_name if descriptor is not None else "request")

    def parse_or_mark(data: bytes) -> Any:
        try:
            return parse(data)
        except DecodeError:
            return marker

    return parse_or_mark


async def check_requests(requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
    """The requests of a stream; an Unparsable one ends the call with INVALID_ARGUMENT."""
    async for request in requests:
        if type(request) is Unparsable:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
        yield request


class HandlerRegistry:
    """The server as the generated `add_*Servicer_to_server` functions see it.

    Each method is served by a generic handler with a tolerant deserializer.
    `is_checked` says the servicer's methods answer an Unparsable themselves
    (`guarded`); otherwise (health, reflection) each is wrapped to answer it.

    `keep_registered` False skips grpcio's "registered methods": its aio server
    keeps one pending request per registered method (24 here) and, for every call
    that arrives, waits on all of them again (`asyncio.wait(..., FIRST_COMPLETED)`:
    a done-callback added to and removed from each). Routing calls through generic
    handlers serves the same methods with a pending request or two. Faster per unary
    call: docs/performance.md, "Decisions and their figures".
    """

    def __init__(
        self, server: grpc.aio.Server, *, is_checked: bool, keep_registered: bool = False
    ) -> None:
        self._server = server
        self._is_checked = is_checked
        self._keep_registered = keep_registered

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        """Skipped: add_registered_method_handlers serves the same methods, tolerantly."""

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        tolerant = {name: self._tolerant(handler) for name, handler in handlers.items()}
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, tolerant),)
        )
        if self._keep_registered:
            self._server.add_registered_method_handlers(service, tolerant)

    def _tolerant(self, handler: Any) -> Any:
        changes: dict[str, Any] = {
            "request_deserializer": tolerant_deserializer(handler.request_deserializer)
        }
        if not self._is_checked:
            for kind in ("unary_unary", "unary_stream", "stream_stream"):
                behaviour = getattr(handler, kind)
                if behaviour is not None:
                    changes[kind] = _CHECKED[kind](behaviour)
        return handler._replace(**changes)


def _checked_unary_unary(inner: Any) -> Any:
    async def checked(request: Any, context: Any) -> Any:
        if type(request) is Unparsable:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
        try:
            return await inner(request, context)
        except NotImplementedError:  # a generated stub's (Health.List): no traceback logged
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "method not implemented")

    return checked


def _checked_unary_stream(inner: Any) -> Any:
    async def checked(request: Any, context: Any) -> None:
        if type(request) is Unparsable:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
        await _respond(inner(request, context), context)

    return checked


def _checked_stream_stream(inner: Any) -> Any:
    async def checked(requests: Any, context: Any) -> None:
        await _respond(inner(check_requests(requests, context), context), context)

    return checked


async def _respond(result: Any, context: Any) -> None:
    """Run a streaming behaviour of either style: an async generator, or one that writes."""
    if inspect.isasyncgen(result):
        async for response in result:
            await context.write(response)
    else:
        await result


_CHECKED = {
    "unary_unary": _checked_unary_unary,
    "unary_stream": _checked_unary_stream,
    "stream_stream": _checked_stream_stream,
}
