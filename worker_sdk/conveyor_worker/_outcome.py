"""Turning what a handler did (returned, raised, timed out) into the call to report it."""

from __future__ import annotations

import re
import traceback
from dataclasses import dataclass
from typing import Any

from conveyor import ConveyorError, Task
from conveyor.errors import InvalidArgument
from conveyor_worker._errors import Cancelled, Fatal, Retry

__all__ = ["Outcome", "payload_undecodable", "result_refused"]

#: Free-form details are bounded by the broker (64 KiB); keep the end of a traceback.
_MAX_DETAILS = 60_000
#: How the broker refuses an ack whose result is over --max-payload-bytes.
_RESULT_TOO_LARGE = re.compile(r"result: (\d+) bytes is over the limit of (\d+) bytes")


@dataclass(slots=True)
class Outcome:
    """One of: ack (with result), fail (error fields), release, or drop (lease lost)."""

    action: str
    result: Any = None
    error_type: str = ""
    message: str = ""
    details: str = ""
    retryable: bool = True
    retry_delay: float | None = None

    @property
    def label(self) -> str:
        """The outcome as logged: succeeded, failed, retry, fatal, cancelled, ..."""
        if self.action != "fail":
            return {"ack": "succeeded", "release": "released", "drop": "lease_lost"}[self.action]
        if self.error_type == "Cancelled":
            return "cancelled"
        if self.retry_delay is not None:
            return "retry"
        return "failed" if self.retryable else "fatal"

    @classmethod
    def succeeded(cls, result: Any) -> Outcome:
        return cls("ack", result=result)

    @classmethod
    def cancelled(cls, message: str = "cancelled while running") -> Outcome:
        return cls("fail", error_type="Cancelled", message=message, retryable=False)

    @classmethod
    def from_exception(
        cls, exc: BaseException, non_retryable: tuple[type[BaseException], ...]
    ) -> Outcome:
        details = "".join(traceback.format_exception(exc))[-_MAX_DETAILS:]
        if isinstance(exc, Cancelled):
            return cls.cancelled(str(exc))
        outcome = cls(
            "fail", error_type=type(exc).__name__, message=str(exc)[:60_000], details=details
        )
        if isinstance(exc, Retry):
            outcome.retry_delay = exc.delay_seconds()
        elif isinstance(exc, Fatal) or (non_retryable and isinstance(exc, non_retryable)):
            outcome.retryable = False
        return outcome


def payload_undecodable(task: Task, exc: Exception) -> Outcome:
    """A payload the serializer cannot decode: the same bytes fail every attempt."""
    return Outcome(
        "fail",
        error_type="PayloadDecodeError",
        message=f"payload of {len(task.payload_bytes)} bytes with content type "
        f"{task.content_type!r} could not be decoded: {type(exc).__name__}: {exc}"[:60_000],
        details="".join(traceback.format_exception(exc))[-_MAX_DETAILS:],
        retryable=False,
    )


def result_refused(error: ConveyorError | None) -> Outcome | None:
    """The failure to report for an ack the broker refused because its result is too big.

    No RPC tells a client the broker's --max-payload-bytes, so the worker learns it
    from the refusal; the task keeps its lease meanwhile. The same handler would
    return the same result again, so the failure is not retried.
    """
    if not isinstance(error, InvalidArgument):
        return None
    match = _RESULT_TOO_LARGE.search(str(error))
    if match is None:
        return None
    size, limit = match.groups()
    return Outcome(
        "fail",
        error_type="ResultTooLarge",
        message=f"the handler's result is {size} bytes, over the broker's limit of "
        f"{limit} bytes (conveyor serve --max-payload-bytes)",
        retryable=False,
    )
