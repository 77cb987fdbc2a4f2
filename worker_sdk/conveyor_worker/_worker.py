"""The Worker: lease as many tasks as there are idle slots, run handlers, report outcomes."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any, Literal, TypeVar

from conveyor import AsyncClient, Client, TaskFunction
from conveyor.serializer import JsonSerializer, Serializer
from conveyor_worker._registry import Handler
from conveyor_worker._runner import HandlerPool
from conveyor_worker._session import Session, UnarySession
from conveyor_worker._streaming import StreamSession

__all__ = ["Worker"]

log = logging.getLogger("conveyor.worker")

Transport = Literal["auto", "stream", "unary"]

F = TypeVar("F", bound=Callable[..., Any])
Seconds = timedelta | float


def _seconds(value: Seconds | None) -> float | None:
    if value is None:
        return None
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


#: Without an explicit `prefetch`, each slot has this many more tasks leased ahead ...
PREFETCH_PER_SLOT = 64
#: ... up to this many in all, so a wide worker does not sit on thousands of leases.
MAX_DEFAULT_PREFETCH = 512


def default_prefetch(concurrency: int) -> int:
    """The prefetch a Worker uses when none is given: 64 per slot, at most 512.

    With tasks leased ahead the broker leases the next ones while these run, instead of
    the two taking turns (docs/worker.md, "Prefetch").
    """
    return min(concurrency * PREFETCH_PER_SLOT, MAX_DEFAULT_PREFETCH)


def _check_prefetch(prefetch: int | None) -> None:
    if prefetch is None:
        return
    if not isinstance(prefetch, int) or isinstance(prefetch, bool) or prefetch < 0:
        raise ValueError(f"prefetch: expected a whole number of 0 or more, got {prefetch!r}")


def _check_concurrency(concurrency: int) -> None:
    """No slots would mean a worker that never takes a task: refuse it."""
    if not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"concurrency: expected a whole number of 1 or more, got {concurrency!r}")


class Worker:
    """Runs handlers for tasks leased from some queues.

    Args:
        target: broker address "host:port".
        queues: queue names, leased from in this order (a "a,b" string works too).
        concurrency: handlers running at once (1 or more); also how many tasks it leases
            at most.
        lease_duration: lease asked for; None uses each task's own (30 s default).
        heartbeat: longest gap between lease extensions (cancel requests arrive with them).
        poll_wait: how long one Lease call long-polls when the queues are empty (unary).
        grace_period: on shutdown, how long running handlers may take to finish.
        prefetch: tasks leased beyond the idle slots, waiting in a local buffer with
            their leases kept alive. None (default): `default_prefetch(concurrency)`,
            64 per slot up to 512. 0: lease only for idle slots. Buffered tasks are
            leased, so they count against the broker's concurrency limits.
        transport: "auto" (default) takes tasks on one StreamWork stream and falls back
            to Lease/Ack calls if the broker has no StreamWork; "stream" or "unary" force one.
        client_options: Client/AsyncClient keywords (tls, token, ...).
    """

    def __init__(
        self,
        target: str = "127.0.0.1:7470",
        *,
        queues: Sequence[str] | str = ("default",),
        concurrency: int = 8,
        lease_duration: Seconds | None = None,
        heartbeat: Seconds = timedelta(seconds=2),
        poll_wait: Seconds = timedelta(seconds=20),
        grace_period: Seconds = timedelta(seconds=30),
        prefetch: int | None = None,
        round_robin: bool = False,
        worker_id: str | None = None,
        serializer: Serializer | None = None,
        client_options: dict[str, Any] | None = None,
        transport: Transport = "auto",
    ) -> None:
        if transport not in ("auto", "stream", "unary"):
            raise ValueError(f"transport: expected auto, stream or unary, got {transport!r}")
        _check_concurrency(concurrency)
        _check_prefetch(prefetch)
        self.transport: Transport = transport
        self.target = target
        self.queues = (
            [q for q in queues.split(",") if q] if isinstance(queues, str) else list(queues)
        )
        self.concurrency = concurrency
        self.lease_duration = _seconds(lease_duration)
        self.heartbeat = _seconds(heartbeat) or 2.0
        self.poll_wait = _seconds(poll_wait) or 0.0
        self.grace_period = _seconds(grace_period) or 0.0
        self._prefetch = prefetch
        self.round_robin = round_robin
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self.serializer = serializer or JsonSerializer()
        self.client_options = dict(client_options or {})
        self.handlers: dict[str, Handler] = {}
        self._producer: Client | None = None
        self._producer_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._is_stop_requested = False
        self._signals = 0

    @property
    def prefetch(self) -> int:
        """Tasks leased beyond the idle slots; derived from `concurrency` unless set."""
        if self._prefetch is None:
            return default_prefetch(self.concurrency)
        return self._prefetch

    @prefetch.setter
    def prefetch(self, value: int | None) -> None:
        _check_prefetch(value)
        self._prefetch = value

    # -- registration ----------------------------------------------------------

    def handler(
        self,
        kind: str | None = None,
        *,
        timeout: Seconds | None = None,
        non_retryable: Sequence[type[BaseException]] = (),
        cancel_on_request: bool = True,
        inline: bool = False,
        **options: Any,
    ) -> Callable[[Callable[..., Any]], Handler]:
        """Decorator registering `fn(payload, ctx)` (sync or async) for a task kind.

        The returned Handler is still callable and has `.enqueue(payload, **options)`.
        `options` (queue, priority, ...) are defaults for that enqueue. `inline=True`
        runs a trivial sync handler on the event loop instead of the thread pool (see
        Handler and docs/worker.md: no timeout, nothing else runs meanwhile).
        """

        def register(fn: Callable[..., Any]) -> Handler:
            return self.register(
                fn,
                kind,
                timeout=timeout,
                non_retryable=non_retryable,
                cancel_on_request=cancel_on_request,
                inline=inline,
                **options,
            )

        return register

    def register(self, fn: Callable[..., Any], kind: str | None = None, **settings: Any) -> Handler:
        """Register a function or a `conveyor.task` TaskFunction; returns the Handler."""
        options: dict[str, Any] = {}
        if isinstance(fn, TaskFunction):
            kind = kind or fn.kind
            options = dict(fn.options)
            fn = fn.fn
        if kind is None:
            kind = f"{fn.__module__}.{fn.__qualname__}"
        non_retryable = tuple(settings.pop("non_retryable", ()) or ())
        handler = Handler(self, fn, kind, non_retryable=non_retryable, **{**options, **settings})
        self.handlers[kind] = handler
        return handler

    def producer_client(self) -> Client:
        """A blocking client to the same broker, for `handler.enqueue`."""
        with self._producer_lock:
            if self._producer is None:
                self._producer = Client(
                    self.target, serializer=self.serializer, **self.client_options
                )
            return self._producer

    # -- running -----------------------------------------------------------------

    def run(self) -> None:
        """Run until SIGTERM/SIGINT (or `stop()`), then shut down gracefully.

        A second signal exits the process at once (exit code 1).

        Raises:
            InvalidArgument, Unauthenticated, PermissionDenied: the broker refused for
                good to hand out tasks (a bad queue name, max tasks over its --max-batch,
                a wrong token); the worker stops instead of retrying for ever.
            ValueError: no queues, or concurrency below 1.
        """
        asyncio.run(self.run_async(install_signal_handlers=True))

    def stop(self) -> None:
        """Ask a running worker to shut down gracefully; safe from any thread."""
        self._is_stop_requested = True
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            loop.call_soon_threadsafe(stop.set)

    async def run_async(self, *, install_signal_handlers: bool = False) -> None:
        """Run on the current event loop until `stop()`; async handlers share this loop.

        Raises: as `run`.
        """
        if not self.queues:
            raise ValueError("a worker needs at least one queue")
        _check_concurrency(self.concurrency)  # it may have been set after __init__
        self._stop = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        if self._is_stop_requested:  # stop() came before the loop existed
            self._stop.set()
        if install_signal_handlers and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._loop.add_signal_handler(sig, self._on_signal, sig)
        client = AsyncClient(self.target, serializer=self.serializer, **self.client_options)
        pool = HandlerPool(self.concurrency, self._loop, "conveyor-handler")
        try:
            session: Session
            if self.transport == "unary":
                session = UnarySession(self, client, pool)
                await session.run(self._stop)
            else:
                session = StreamSession(self, client, pool)
                if await session.run(self._stop) and self.transport == "auto":
                    session = UnarySession(self, client, pool)
                    await session.run(self._stop)
            log.info(
                "worker %s stopped (%d released unstarted)",
                self.worker_id,
                session.released_unstarted,
            )
            if session.refusal is not None:
                raise session.refusal
        finally:
            await client.close()
            pool.shutdown()
            if install_signal_handlers and threading.current_thread() is threading.main_thread():
                for sig in (signal.SIGTERM, signal.SIGINT):
                    self._loop.remove_signal_handler(sig)
            self._loop = None
            self._is_stop_requested = False

    def _on_signal(self, sig: signal.Signals) -> None:
        self._signals += 1
        if self._signals > 1:
            log.warning("second %s: exiting at once", sig.name)
            logging.shutdown()
            os._exit(1)
        log.info("%s: shutting down gracefully (grace period %g s)", sig.name, self.grace_period)
        if self._stop is not None:
            self._stop.set()
