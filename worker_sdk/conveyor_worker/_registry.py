"""Handlers: the user's functions, keyed by task kind, with their per-kind options."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from conveyor import Client, TaskFunction

if TYPE_CHECKING:
    from conveyor_worker._worker import Worker

__all__ = ["Handler"]


class Handler(TaskFunction[..., Any]):
    """A registered handler. Call it like the function, or `.enqueue(payload)` its kind.

    `timeout` bounds one run; exceptions in `non_retryable` make the task DEAD at once.
    Async handlers are cancelled (asyncio) when a cancel request arrives, if
    `cancel_on_request`; sync handlers read `ctx.is_cancelled`.

    `inline=True` (sync handlers only) calls the function on the worker's event loop
    instead of the thread pool: no thread hop, but while it runs nothing else does
    (no heartbeats, no other task), and `timeout` cannot interrupt it. Only for
    trivial handlers that return in microseconds and never block.
    """

    def __init__(
        self,
        worker: Worker,
        fn: Callable[..., Any],
        kind: str,
        *,
        timeout: timedelta | float | None = None,
        non_retryable: tuple[type[BaseException], ...] = (),
        cancel_on_request: bool = True,
        inline: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(fn, kind, **options)
        self.worker = worker
        self.timeout_seconds = (
            timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
        )
        self.non_retryable = tuple(non_retryable)
        self.cancel_on_request = cancel_on_request
        self.is_async = inspect.iscoroutinefunction(fn)
        if inline and self.is_async:
            raise ValueError(f"{kind}: inline=True is for sync handlers; async ones use the loop")
        self.inline = inline
        self.takes_context = _takes_two_arguments(fn)

    def _producer_client(self) -> Client:
        return self.worker.producer_client()

    def enqueue(self, payload: Any = None, *, client: Client | None = None, **options: Any):  # type: ignore[no-untyped-def]
        """Enqueue this kind (default queue: the handler's, else the worker's first).

        Raises:
            ConveyorError: as `Client.enqueue`.
        """
        options.setdefault("queue", self.options.get("queue") or self.worker.queues[0])
        return super().enqueue(payload, client=client, **options)


def _takes_two_arguments(fn: Callable[..., Any]) -> bool:
    """Handlers are `fn(payload, ctx)`; a one-argument `fn(payload)` is allowed too."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return True
    positional = [
        p
        for p in params
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
    ]
    return len(positional) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in positional)
