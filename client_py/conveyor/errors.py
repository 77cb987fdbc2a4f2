"""The client's exceptions: one class per gRPC status, plus task outcomes seen by `result()`.

Users catch these, never `grpc.RpcError`. Every class derives from `ConveyorError`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc

if TYPE_CHECKING:
    from conveyor._model import Task

__all__ = [
    "Aborted",
    "AlreadyExists",
    "Cancelled",
    "ConveyorError",
    "DataLoss",
    "DeadlineExceeded",
    "FailedPrecondition",
    "Internal",
    "InvalidArgument",
    "LeaseLost",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "ResourceExhausted",
    "ResultTimeout",
    "TaskCancelled",
    "TaskExpired",
    "TaskFailed",
    "TaskNotFinished",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "Unknown",
    "error_for_code",
]


class ConveyorError(Exception):
    """Base of every error the client raises. `code` is the gRPC status (None if local)."""

    code: grpc.StatusCode | None = None

    def __init__(self, message: str = "", *, details: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details if details is not None else message


class InvalidArgument(ConveyorError, ValueError):
    """The request was malformed; the message names the field."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(ConveyorError, LookupError):
    """No such task (or it was removed after its retention)."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(ConveyorError):
    """A duplicate task, when `reject_duplicate=True` asked to be told."""

    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(ConveyorError):
    """The task's state forbids the call, e.g. cancelling a task that already succeeded."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class LeaseLost(FailedPrecondition):
    """The lease token is stale: the lease expired, the task was re-leased or it finished.

    Raised by the worker calls (extend, ack, fail, release). The outcome of this
    attempt was not recorded; another attempt owns the task now.
    """


class ResourceExhausted(ConveyorError):
    """The broker is out of something bounded: store space or long-poll slots."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(ConveyorError, ConnectionError):
    """The broker cannot be reached or is shutting down; idempotent calls were retried."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(ConveyorError, TimeoutError):
    """The call's deadline passed before the broker answered."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Cancelled(ConveyorError):
    """The call was cancelled (by the client, or the channel closed)."""

    code = grpc.StatusCode.CANCELLED


class Unauthenticated(ConveyorError):
    """The broker refused the credentials (bearer token or client certificate)."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(ConveyorError):
    """The credentials are valid but may not make this call."""

    code = grpc.StatusCode.PERMISSION_DENIED


class Unimplemented(ConveyorError):
    """The broker does not offer this call (an older broker)."""

    code = grpc.StatusCode.UNIMPLEMENTED


class Internal(ConveyorError):
    """The broker failed unexpectedly; its log has the traceback."""

    code = grpc.StatusCode.INTERNAL


class Unknown(ConveyorError):
    """A status the broker never sends on purpose."""

    code = grpc.StatusCode.UNKNOWN


class Aborted(ConveyorError):
    """The call was aborted, typically by a concurrency conflict."""

    code = grpc.StatusCode.ABORTED


class OutOfRange(ConveyorError):
    """A value was past the valid range."""

    code = grpc.StatusCode.OUT_OF_RANGE


class DataLoss(ConveyorError):
    """Unrecoverable data loss or corruption."""

    code = grpc.StatusCode.DATA_LOSS


# -- outcomes of waiting for a result -----------------------------------------


class TaskNotFinished(ConveyorError):
    """Base of the exceptions `result()` raises when a task has no successful result."""

    def __init__(self, message: str, task: Task | None = None) -> None:
        super().__init__(message)
        self.task = task


class TaskFailed(TaskNotFinished):
    """The task ended DEAD. `error_type`, `error_message`, `error_details` are the remote error."""

    def __init__(self, task: Task) -> None:
        error = task.last_error
        self.error_type = error.type if error else ""
        self.error_message = error.message if error else ""
        self.error_details = error.details if error else ""
        text = f"task {task.id!r} failed: {self.error_type}: {self.error_message}"
        super().__init__(text, task)


class TaskCancelled(TaskNotFinished):
    """The task ended CANCELLED."""


class TaskExpired(TaskNotFinished):
    """The task ended EXPIRED: its deadline passed before a worker took it."""


class ResultTimeout(TaskNotFinished, TimeoutError):
    """`result()` stopped waiting before the task finished; the task carries on."""


_BY_CODE: dict[grpc.StatusCode, type[ConveyorError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        ResourceExhausted,
        Unavailable,
        DeadlineExceeded,
        Cancelled,
        Unauthenticated,
        PermissionDenied,
        Unimplemented,
        Internal,
        Unknown,
        Aborted,
        OutOfRange,
        DataLoss,
    )
    if cls.code is not None
}


def error_for_code(
    code: grpc.StatusCode | int, message: str = "", *, is_lease_call: bool = False
) -> ConveyorError:
    """The exception for a status code (an enum or its number, as in ItemOutcome.code).

    On the worker calls FAILED_PRECONDITION means a stale lease, so it becomes LeaseLost.
    """
    if isinstance(code, int):
        code = _CODE_BY_NUMBER.get(code, grpc.StatusCode.UNKNOWN)
    if is_lease_call and code is grpc.StatusCode.FAILED_PRECONDITION:
        return LeaseLost(message)
    return _BY_CODE.get(code, Unknown)(message)


def error_from_rpc(error: Any, *, is_lease_call: bool = False) -> ConveyorError:
    """Translate a grpc.RpcError (sync or aio) into our exception."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = error.details() if hasattr(error, "details") else str(error)
    return error_for_code(
        code or grpc.StatusCode.UNKNOWN, details or "", is_lease_call=is_lease_call
    )


_CODE_BY_NUMBER: dict[int, grpc.StatusCode] = {c.value[0]: c for c in grpc.StatusCode}
