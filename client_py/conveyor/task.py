"""Celery-style producer convenience: name the function, not a string, when enqueueing."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, ParamSpec, TypeVar, Unpack, overload

from conveyor._aio import AsyncClient
from conveyor._channel import default_target
from conveyor._client import Client
from conveyor._model import Task, TaskOptions

__all__ = ["TaskFunction", "set_default_client", "task"]

P = ParamSpec("P")
R = TypeVar("R")

_default_client: Client | None = None
_default_lock = threading.Lock()


def set_default_client(client: Client | None) -> None:
    """The client `TaskFunction.enqueue` uses when given none (else $CONVEYOR_TARGET)."""
    global _default_client
    with _default_lock:
        _default_client = client


def default_client() -> Client:
    global _default_client
    with _default_lock:
        if _default_client is None:
            _default_client = Client(default_target())
        return _default_client


class TaskFunction(Generic[P, R]):
    """A function bound to a task kind: call it locally, or `.enqueue(payload)` it.

    `options` (queue, priority, max_attempts, ...) are defaults for every enqueue.
    """

    def __init__(
        self,
        fn: Callable[P, R],
        kind: str,
        *,
        client: Client | None = None,
        **options: Unpack[TaskOptions],
    ) -> None:
        self.fn = fn
        self.kind = kind
        self.client = client
        self.options: dict[str, Any] = dict(options)
        self.__doc__ = fn.__doc__
        self.__name__ = getattr(fn, "__name__", kind)
        self.__wrapped__ = fn

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<TaskFunction {self.kind!r} -> {self.fn!r}>"

    def _producer_client(self) -> Client:
        return self.client or default_client()

    def enqueue(self, payload: Any = None, *, client: Client | None = None, **options: Any) -> Task:
        """Enqueue this kind with a blocking client; keyword options override the defaults.

        Raises:
            ConveyorError: as `Client.enqueue`.
        """
        target = client or self._producer_client()
        return target.enqueue(self.kind, payload, **{**self.options, **options})

    async def enqueue_async(
        self, payload: Any = None, *, client: AsyncClient, **options: Any
    ) -> Task:
        """Enqueue this kind with an AsyncClient.

        Raises:
            ConveyorError: as `AsyncClient.enqueue`.
        """
        return await client.enqueue(self.kind, payload, **{**self.options, **options})


@overload
def task(fn: Callable[P, R], /) -> TaskFunction[P, R]: ...


@overload
def task(
    kind: str | None = None, /, *, client: Client | None = None, **options: Unpack[TaskOptions]
) -> Callable[[Callable[P, R]], TaskFunction[P, R]]: ...


def task(fn_or_kind: Any = None, /, *, client: Client | None = None, **options: Any) -> Any:
    """Decorator: `@task("thumbnails.make", queue="images")` or bare `@task`.

    Bare, the kind is "module.function". A Worker can run the function as its handler
    (`worker.register(fn)`), and producers call `fn.enqueue(payload)`.
    """
    if callable(fn_or_kind):
        return TaskFunction(fn_or_kind, _kind_of(fn_or_kind))

    def wrap(fn: Callable[P, R]) -> TaskFunction[P, R]:
        return TaskFunction(fn, fn_or_kind or _kind_of(fn), client=client, **options)

    return wrap


def _kind_of(fn: Callable[..., Any]) -> str:
    return f"{fn.__module__}.{fn.__qualname__}".replace("<", "").replace(">", "")
