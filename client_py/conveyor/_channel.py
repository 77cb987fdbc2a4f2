"""Connection settings shared by Client and AsyncClient: TLS, token, keepalive, retries."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import grpc

from conveyor._convert import seconds
from conveyor._model import Seconds, Task, TaskState
from conveyor.errors import ResultTimeout, TaskCancelled, TaskExpired, TaskFailed

#: Calls that are safe to repeat, so gRPC retries them on UNAVAILABLE by itself.
IDEMPOTENT_METHODS = {
    "conveyor.v1.TaskService": ("GetTask", "GetResult", "CancelTask"),
    "conveyor.v1.WorkerService": ("ExtendLease",),
}

#: The broker cuts long polls to its --max-wait (60 s by default); asking for less
#: keeps every call well inside the client's deadline.
LONG_POLL_SECONDS = 30.0
#: How much longer than a long poll's wait the call's deadline is.
DEADLINE_MARGIN_SECONDS = 10.0
DEFAULT_TARGET = "127.0.0.1:7470"


def default_target() -> str:
    """$CONVEYOR_TARGET, or the broker's default address."""
    return os.environ.get("CONVEYOR_TARGET", DEFAULT_TARGET)


def _service_config(max_attempts: int) -> str:
    names = [
        {"service": service, "method": method}
        for service, methods in IDEMPOTENT_METHODS.items()
        for method in methods
    ]
    policy = {
        "maxAttempts": max_attempts,
        "initialBackoff": "0.1s",
        "maxBackoff": "2s",
        "backoffMultiplier": 2,
        "retryableStatusCodes": ["UNAVAILABLE"],
    }
    return json.dumps({"methodConfig": [{"name": names, "retryPolicy": policy}]})


def _read(value: bytes | str | os.PathLike[str] | None) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    with open(value, "rb") as f:
        return f.read()


@dataclass(frozen=True, slots=True)
class ChannelSettings:
    """How to reach the broker. Certificates are PEM bytes or paths to PEM files."""

    target: str
    tls: bool = False
    root_certificates: bytes | str | None = None
    client_cert: bytes | str | None = None
    client_key: bytes | str | None = None
    token: str | None = None
    keepalive: Seconds | None = None
    retry_attempts: int = 5
    max_message_bytes: int = 64 << 20

    @property
    def is_secure(self) -> bool:
        return self.tls or self.root_certificates is not None or self.client_cert is not None

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.root_certificates),
            private_key=_read(self.client_key),
            certificate_chain=_read(self.client_cert),
        )

    def open(self, module: Any) -> Any:
        """A channel from `module` (grpc or grpc.aio: they name their functions alike)."""
        if self.is_secure:
            return module.secure_channel(self.target, self.credentials(), self.options())
        return module.insecure_channel(self.target, self.options())

    def options(self) -> list[tuple[str, Any]]:
        options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.enable_retries", 1 if self.retry_attempts > 1 else 0),
        ]
        if self.retry_attempts > 1:
            options.append(("grpc.service_config", _service_config(self.retry_attempts)))
        keepalive = seconds(self.keepalive)
        if keepalive:
            options += [
                ("grpc.keepalive_time_ms", int(keepalive * 1000)),
                ("grpc.keepalive_timeout_ms", 20_000),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.max_pings_without_data", 0),
            ]
        return options

    def metadata(self) -> tuple[tuple[str, str], ...] | None:
        if not self.token:
            return None
        return (("authorization", f"Bearer {self.token}"),)


def call_timeout(value: Seconds | None, default: float | None) -> float | None:
    """A per-call deadline in seconds: the call's own, else the client's default."""
    given = seconds(value)
    return given if given is not None else default


def next_wait(remaining: float | None) -> float:
    """How long the next GetResult call should wait server-side."""
    if remaining is None:
        return LONG_POLL_SECONDS
    return max(0.0, min(remaining, LONG_POLL_SECONDS))


def outcome(task: Task) -> Any:
    """The decoded result of a final task, or the exception its end state stands for."""
    if task.state is TaskState.SUCCEEDED:
        return task.result
    if task.state is TaskState.DEAD:
        raise TaskFailed(task)
    if task.state is TaskState.CANCELLED:
        raise TaskCancelled(f"task {task.id!r} was cancelled", task)
    if task.state is TaskState.EXPIRED:
        raise TaskExpired(f"task {task.id!r} expired before a worker took it", task)
    raise ResultTimeout(f"task {task.id!r} is still {task.state.name}", task)


def timeout_error(task: Task, timeout: float | None) -> ResultTimeout:
    waited = f" after {timeout:g} s" if timeout is not None else ""
    return ResultTimeout(f"task {task.id!r} is still {task.state.name}{waited}", task)


def as_timedelta(value: Seconds | None) -> timedelta | None:
    total = seconds(value)
    return None if total is None else timedelta(seconds=total)
