"""Wiring only: open the store, build the core, start gRPC (+ health, reflection), timer, cron,
and /metrics."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

from conveyor.v1 import (
    queue_service_pb2,
    queue_service_pb2_grpc,
    schedule_service_pb2,
    schedule_service_pb2_grpc,
    task_service_pb2,
    task_service_pb2_grpc,
    worker_service_pb2,
    worker_service_pb2_grpc,
)
from conveyor_server import __version__
from conveyor_server.config import ServeConfig
from conveyor_server.core.broker import Broker
from conveyor_server.core.clock import SystemClock
from conveyor_server.core.errors import ConveyorError
from conveyor_server.core.schedules.book import ScheduleBook
from conveyor_server.core.schedules.model import Schedule
from conveyor_server.core.sizes import check_fits
from conveyor_server.rpc.errors import guarded
from conveyor_server.rpc.queue_service import QueueServicer
from conveyor_server.rpc.schedule_codec import schedule_from_pb, schedule_to_pb
from conveyor_server.rpc.schedule_service import ScheduleServicer
from conveyor_server.rpc.security import TokenGate, authorized, server_credentials
from conveyor_server.rpc.services import TaskServicer, WorkerServicer
from conveyor_server.rpc.token_file import Grants, TokenFileWatcher, flag_grants
from conveyor_server.rpc.wire import HandlerRegistry
from conveyor_server.service.engine import Engine
from conveyor_server.service.metrics import Metrics
from conveyor_server.service.metrics.exporter import ConveyorCollector, MetricsServer, Sources
from conveyor_server.service.metrics.flow import limit_values
from conveyor_server.service.queue_file import QueueFileApplier, QueueFileWatcher
from conveyor_server.service.queue_ops import QueueOps
from conveyor_server.service.schedule_file import ScheduleFileWatcher
from conveyor_server.service.scheduler import CronScheduler
from conveyor_server.store.lmdb_store import LmdbStore
from conveyor_server.upgrades import LMDB_UPGRADES

log = logging.getLogger("conveyor")

SERVICE_NAMES = (
    task_service_pb2.DESCRIPTOR.services_by_name["TaskService"].full_name,
    worker_service_pb2.DESCRIPTOR.services_by_name["WorkerService"].full_name,
    schedule_service_pb2.DESCRIPTOR.services_by_name["ScheduleService"].full_name,
    queue_service_pb2.DESCRIPTOR.services_by_name["QueueService"].full_name,
)
#: gRPC core cancels calls that arrive while more than 1,000 wait to be picked up
#: by the event loop (CANCELLED, nothing logged); one async client with a few
#: thousand calls in flight hits that. Allow bursts of this many instead.
_MAX_PENDING_CALLS = 20_000
_REFUSAL_WINDOW_SECONDS = 0.25


class _HealthServicer(HealthServicer):
    """grpcio's health servicer, plus List (added to health.proto in 2024), which it leaves
    UNIMPLEMENTED: probes that list services then see the same statuses Check gives."""

    async def List(
        self, request: health_pb2.HealthListRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> health_pb2.HealthListResponse:
        response = health_pb2.HealthListResponse()
        for name, status in self._server_status.items():
            response.statuses[name].status = status
        return response


class StartupRefused(ConveyorError):
    """The broker cannot start as configured (e.g. its port is taken)."""


#: How long a broker started while PostgreSQL is down keeps trying before it exits 2.
PG_CONNECT_SECONDS = 30.0


def open_pg_store(url: str) -> Any:
    """Open the PostgreSQL store, retrying for PG_CONNECT_SECONDS while it is unreachable
    (a broker and its database started together); then StoreUnavailable (exit 2)."""
    import time

    from conveyor_server.core.errors import StoreUnavailable
    from conveyor_server.store.pg_store import PgStore

    give_up = time.monotonic() + PG_CONNECT_SECONDS
    while True:
        try:
            return PgStore(url)
        except StoreUnavailable:
            if time.monotonic() > give_up:
                raise
            log.warning("PostgreSQL is unreachable; trying again")
            time.sleep(1.0)


async def serve(config: ServeConfig) -> None:
    """Run the broker until SIGTERM/SIGINT, then shut down gracefully."""
    try:  # before the store opens: a limit no answer can meet is a configuration error
        check_fits(config.broker)
    except ValueError as exc:
        raise StartupRefused(str(exc)) from None
    credentials = None
    if config.tls_cert:  # read first: a missing file is not a reason to open the store
        try:
            credentials = server_credentials(config.tls_cert, config.tls_key, config.tls_client_ca)
        except OSError as exc:
            raise StartupRefused(f"cannot read the TLS files: {exc}") from None
    token_watcher = None
    grants: Grants | None = None  # None: no token auth
    if config.auth_tokens or config.auth_tokens_file:
        grants = flag_grants(config.auth_tokens)
        if config.auth_tokens_file:  # read first: a bad file is not a reason to open the store
            token_watcher = TokenFileWatcher(config.auth_tokens_file, grants)
            grants = token_watcher.load()
    store: Any
    if config.database_url:
        store = open_pg_store(config.database_url)
        where = "PostgreSQL"
    else:
        store = LmdbStore(
            config.data_dir,
            durable=config.is_durable,
            max_bytes=config.max_store_bytes,
            upgrades=LMDB_UPGRADES,
        )
        where = str(store.path)
    metrics = Metrics() if config.metrics_listen else None
    engine = Engine(
        Broker(store, SystemClock(), config.broker),
        config.max_waiters,
        metrics.tasks if metrics is not None else None,
    )
    rpc_metrics = metrics.rpc if metrics is not None else None
    if metrics is not None:
        store.committer.on_commit = metrics.commits.committed
        engine.on_throttled = metrics.tasks.throttled
    gate = None if grants is None else TokenGate(grants, _queue_reader(engine))
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", config.broker.max_message_bytes),
            ("grpc.max_send_message_length", config.broker.max_message_bytes),
            ("grpc.server.max_pending_requests", _MAX_PENDING_CALLS),
            ("grpc.server.max_pending_requests_hard_limit", _MAX_PENDING_CALLS),
            # grpcio turns SO_REUSEPORT on by default: a second broker on a busy port
            # would start and share it with the first. A busy port must be an error.
            ("grpc.so_reuseport", 0),
        ],
    )

    def is_stopping() -> bool:
        return engine.is_stopping

    registry = HandlerRegistry(server, is_checked=True)  # guarded() answers bad bytes

    def served(servicer: object, module: Any, name: str) -> Any:
        """The servicer with the token check (if any), then the error mapping."""
        descriptor = module.DESCRIPTOR.services_by_name[name]
        if gate is not None:
            servicer = authorized(servicer, descriptor, gate)
        return guarded(servicer, descriptor, is_stopping, rpc_metrics)

    task_service_pb2_grpc.add_TaskServiceServicer_to_server(
        served(TaskServicer(engine), task_service_pb2, "TaskService"), registry
    )
    worker_service_pb2_grpc.add_WorkerServiceServicer_to_server(
        served(WorkerServicer(engine), worker_service_pb2, "WorkerService"), registry
    )
    scheduler = CronScheduler(
        ScheduleBook(engine.broker),
        engine.notify_written,
        metrics.schedules if metrics is not None else None,
    )
    schedule_service_pb2_grpc.add_ScheduleServiceServicer_to_server(
        served(ScheduleServicer(scheduler), schedule_service_pb2, "ScheduleService"), registry
    )
    queue_ops = QueueOps(engine)
    queue_service_pb2_grpc.add_QueueServiceServicer_to_server(
        served(QueueServicer(queue_ops), queue_service_pb2, "QueueService"), registry
    )
    health = _HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, HandlerRegistry(server, is_checked=False))
    reflected = (
        *SERVICE_NAMES,
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        reflection.SERVICE_NAME,
    )
    reflection_servicer: Any = reflection.aio.ReflectionServicer(reflected)
    if gate is not None:  # reflection is for admin tokens only
        reflection_servicer = authorized(
            reflection_servicer,
            reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"],
            gate,
        )
    # Reflection keeps its registered method: with none registered at all, raw unary
    # Enqueue was slower (figures: docs/performance.md, "Decisions and their figures").
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
        reflection_servicer, HandlerRegistry(server, is_checked=False, keep_registered=True)
    )
    watcher = None
    if config.schedules_file:
        watcher = ScheduleFileWatcher(config.schedules_file, _reconciler(scheduler))
    queue_watcher = None
    if config.queues_file:
        applier = QueueFileApplier(queue_ops)
        queue_watcher = QueueFileWatcher(config.queues_file, applier, config.broker)
    for file_watcher in (watcher, queue_watcher):
        try:
            if file_watcher is not None:
                await file_watcher.start()
        except BaseException:
            if watcher is not None:
                await watcher.stop()
            store.close()
            raise
    try:
        if credentials is not None:
            port = server.add_secure_port(config.listen, credentials)
        else:
            port = server.add_insecure_port(config.listen)
    except (RuntimeError, OSError) as exc:
        store.close()
        raise StartupRefused(
            f"cannot listen on {config.listen}: the address is in use or not available here"
        ) from exc
    requested = int(config.listen.rsplit(":", 1)[1])
    if port == 0 or requested not in (0, port):
        store.close()
        raise StartupRefused(f"cannot listen on {config.listen}: the address is in use or invalid")
    exporter = None
    if metrics is not None:
        exporter = _start_metrics(metrics, engine, store, config.metrics_listen)
        if exporter is None:
            store.close()
            raise StartupRefused(
                f"cannot serve metrics on {config.metrics_listen}: the address is in use or "
                "not available here (--metrics-listen; empty turns metrics off)"
            )
    await server.start()
    await engine.start()
    scheduler.start()
    if token_watcher is not None and gate is not None:
        token_watcher.start(gate.replace)
    for name in ("", *SERVICE_NAMES):
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    host = config.listen.rsplit(":", 1)[0]
    log.info(
        "conveyor serving on %s:%d, data in %s (durability %s, tls %s, token auth %s)",
        host,
        port,
        where,
        config.durability,
        "mutual" if config.tls_client_ca else "on" if config.tls_cert else "off",
        "off" if grants is None else f"on, {len(grants)} tokens",
    )
    serving = f"conveyor serving on {host}:{port}"
    if exporter is not None:
        metrics_host = config.metrics_listen.rsplit(":", 1)[0]
        log.info("metrics on http://%s:%d/metrics", metrics_host, exporter.port)
        serving += f", metrics on {metrics_host}:{exporter.port}"
    print(serving, file=sys.stdout, flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reloaders = [w.reload for w in (watcher, queue_watcher, token_watcher) if w is not None]
    if reloaders:
        loop.add_signal_handler(signal.SIGHUP, lambda: [reload() for reload in reloaders])
    await stop.wait()

    log.info("shutting down: refusing new calls, finishing in-flight ones")
    await health.enter_graceful_shutdown()
    if watcher is not None:
        await watcher.stop()
    if queue_watcher is not None:
        await queue_watcher.stop()
    if token_watcher is not None:
        await token_watcher.stop()
    await scheduler.stop()
    await engine.stop()
    # A short window in which new calls get a clear UNAVAILABLE from guarded();
    # once server.stop() begins, gRPC itself may answer late arrivals with CANCELLED.
    await asyncio.sleep(min(_REFUSAL_WINDOW_SECONDS, config.shutdown_grace))
    await server.stop(config.shutdown_grace)
    if exporter is not None:
        exporter.stop()
    store.close()
    log.info("stopped cleanly")


def _start_metrics(
    metrics: Metrics, engine: Engine, store: Any, listen: str
) -> MetricsServer | None:
    """Serve /metrics on `listen`; None if the address is taken or not available."""
    sources = Sources(
        depths=lambda: store.read(lambda txn: txn.queue_depths()),
        parked=lambda: engine.waiters.parked,
        store_usage=store.usage,
        version=__version__,
        limits=lambda: store.read(
            lambda txn: {name: limit_values(f.limits) for name, f in txn.queue_flows().items()}
        ),
    )
    exporter = MetricsServer(ConveyorCollector(metrics, sources))
    try:
        exporter.start(listen)
    except OSError:
        return None
    return exporter


def _queue_reader(engine: Engine) -> Callable[[str], str | None]:
    """The queue of an existing task, for the token check of queue-limited tokens."""

    def queue_of(task_id: str) -> str | None:
        try:
            return engine.get_task(task_id).queue
        except ConveyorError:  # no such task (or a malformed id): the RPC itself answers
            return None

    return queue_of


def _reconciler(scheduler: CronScheduler) -> Callable[[Sequence[Schedule]], Awaitable[None]]:
    """Apply the schedules file and say what changed."""

    async def apply(declared: Sequence[Schedule]) -> None:
        # At the API's precision (times in whole microseconds), as schedules made through
        # the API are, so that comparing the file with the store finds no false changes.
        outcome = await scheduler.reconcile([schedule_from_pb(schedule_to_pb(s)) for s in declared])
        if outcome.added or outcome.updated or outcome.removed:
            log.info(
                "schedules file applied: added %s, updated %s, removed %s",
                outcome.added,
                outcome.updated,
                outcome.removed,
            )
        if outcome.conflicts:
            log.warning(
                "schedules file: %s already exist as API schedules; left as they are",
                outcome.conflicts,
            )

    return apply
