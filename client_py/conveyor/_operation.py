"""One definition per client method, run blocking by Client and awaited by AsyncClient.

A method of the shared core is written once as a generator of *steps*: it yields
a `Call` (one RPC), `Parallel` (RPCs that may run concurrently) or `Sleep`, and
gets the response back (or the mapped `ConveyorError` thrown in). It never does
I/O itself, so the same code serves both clients: `Client._run` performs each step
blocking (`_perform`), AsyncClient awaits it (`_start`). `@operation` marks such a method; each
client class turns it into an ordinary method of its kind when the class is made
(`install`), so a call costs one generator, not a descriptor lookup.

The overloads tell type checkers what the method is on each client: `R` on Client,
a coroutine of `R` on AsyncClient, with the generator's own parameters.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Coroutine, Generator, Sequence
from typing import (
    TYPE_CHECKING,
    Any,
    Concatenate,
    Generic,
    NamedTuple,
    ParamSpec,
    TypeVar,
    overload,
)

from conveyor.errors import ConveyorError

if TYPE_CHECKING:
    from conveyor._aio import AsyncClient
    from conveyor._client import Client

__all__ = ["Call", "Op", "Parallel", "Performed", "Sleep", "Step", "install", "operation"]

P = ParamSpec("P")
R = TypeVar("R")


class Call(NamedTuple):
    """One RPC: a stub method of the running client, its request and deadline."""

    method: Any
    request: Any
    timeout: float | None
    #: Map FAILED_PRECONDITION to LeaseLost (Ack, Fail, Release, ExtendLease).
    is_lease_call: bool = False
    #: AsyncClient may send it inside a shared EnqueueBatch (see _coalesce).
    is_coalescable: bool = False


class Parallel(NamedTuple):
    """RPCs whose responses come back as a list, in order; AsyncClient runs them at once."""

    calls: Sequence[Call]


class Sleep(NamedTuple):
    """Wait this long (time.sleep or asyncio.sleep)."""

    seconds: float


Step = Call | Parallel | Sleep
#: What a core method returns: a generator of steps whose return value is the result.
Op = Generator[Step, Any, R]
#: What performing a step gave: its reply, or the error to throw into the operation.
Performed = tuple[Any, ConveyorError | None]


def resume(op: Op[Any], reply: Any, error: ConveyorError | None) -> Step | StopIteration:
    """Hand the operation what its last step gave; its next step, or how it returned."""
    try:
        return op.send(reply) if error is None else op.throw(error)
    except StopIteration as stop:
        return stop


class operation(Generic[P, R]):
    """Marks a core method written as a generator of steps (see the module docstring)."""

    def __init__(self, fn: Callable[Concatenate[Any, P], Op[R]]) -> None:
        self.fn = fn
        self.__doc__ = fn.__doc__
        self.__name__ = fn.__name__

    if TYPE_CHECKING:

        @overload
        def __get__(self, obj: None, owner: type) -> operation[P, R]: ...
        @overload
        def __get__(self, obj: AsyncClient, owner: type) -> Callable[P, Coroutine[Any, Any, R]]: ...
        @overload
        def __get__(self, obj: Client, owner: type) -> Callable[P, R]: ...
        def __get__(self, obj: Any, owner: type) -> Any: ...


def install(cls: type, *, is_async: bool) -> None:
    """Give `cls` a real method for every operation it inherits and does not override."""
    for name in dir(cls):
        found = inspect.getattr_static(cls, name)
        if isinstance(found, operation):
            method = _awaitable(found.fn) if is_async else _blocking(found.fn)
            method.__qualname__ = f"{cls.__qualname__}.{name}"
            setattr(cls, name, method)


def _blocking(fn: Callable[..., Op[Any]]) -> Callable[..., Any]:
    """Client's method: `self._perform(step)` gives each step's (reply, error)."""

    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        op = fn(self, *args, **kwargs)
        step = resume(op, None, None)
        while not isinstance(step, StopIteration):
            step = resume(op, *self._perform(step))
        return step.value

    return _describe(method, fn)


def _awaitable(fn: Callable[..., Op[Any]]) -> Callable[..., Any]:
    """AsyncClient's method: `self._start(step)` gives an awaitable of each step's reply.

    The steps are driven right here, not in a coroutine per step: enqueue is a hot path.
    """

    async def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        op = fn(self, *args, **kwargs)
        step = resume(op, None, None)
        while not isinstance(step, StopIteration):
            try:
                reply = await self._start(step)
            except ConveyorError as exc:
                step = resume(op, None, exc)
            else:
                step = resume(op, reply, None)
        return step.value

    return _describe(method, fn)


def _describe(method: Callable[..., Any], fn: Callable[..., Any]) -> Callable[..., Any]:
    """The name, docstring and signature of `fn`, returning what the generator returns."""
    functools.update_wrapper(method, fn, assigned=("__module__", "__name__", "__doc__"))
    del method.__wrapped__  # type: ignore[attr-defined]  # the signature is set below
    annotations = dict(fn.__annotations__)
    returned = annotations.get("return")
    if isinstance(returned, str) and returned.startswith("Op[") and returned.endswith("]"):
        annotations["return"] = returned[3:-1]
    method.__annotations__ = annotations
    signature = inspect.signature(fn)
    method.__signature__ = signature.replace(  # type: ignore[attr-defined]
        return_annotation=annotations.get("return", inspect.Signature.empty)
    )
    return method
