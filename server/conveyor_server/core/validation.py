"""Request validation: every bad field becomes InvalidArgument with a message naming it."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from conveyor_server.core.errors import InvalidArgument
from conveyor_server.core.model import RetryPolicy, TaskSpec
from conveyor_server.core.settings import BrokerSettings

_NAME = re.compile(r"[A-Za-z0-9_.:/\-]+")
#: Times and durations stay inside the range of google.protobuf.Timestamp and Duration
#: (the record format); that also keeps every index time (a time plus a duration) inside
#: the u64 microsecond keys, so no stored task can make a later write or tick fail.
MAX_TIME = 253_402_300_799.0  # 9999-12-31T23:59:59Z
MAX_DURATION = 315_576_000_000.0  # 10,000 years
_TASK_ID = re.compile(r"[A-Za-z0-9_.:@/+=\-]+")
#: Characters of client input an error message quotes: a status message travels in the
#: trailers, whose size a client limits (8 KiB by default), so a long id must not be echoed.
QUOTE_LIMIT = 40


def quote(value: str, limit: int = QUOTE_LIMIT) -> str:
    """`repr(value)`, cut to its first `limit` characters: for client input in messages."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value)} characters)"


def check_name(value: str, field: str, settings: BrokerSettings, prefix: str = "") -> None:
    """Queue and kind names: 1..max_name_length characters of [A-Za-z0-9_.:/-].

    `prefix` names the item in a batch ("tasks[3]."); like every checker here it is
    joined to `field` only when raising, since these run per task on the hot path.
    """
    if len(value) <= settings.max_name_length and _NAME.fullmatch(value):
        return
    field = prefix + field
    if not value:
        raise InvalidArgument(f"{field}: must not be empty")
    if len(value) > settings.max_name_length:
        raise InvalidArgument(f"{field}: longer than {settings.max_name_length} characters")
    if not _NAME.fullmatch(value):
        raise InvalidArgument(f"{field}: {quote(value)} may only use letters, digits and _ . : / -")


def check_task_id(value: str, field: str, settings: BrokerSettings) -> None:
    """Task ids: 1..max_name_length characters of [A-Za-z0-9_.:@/+=-]."""
    if not value:
        raise InvalidArgument(f"{field}: must not be empty")
    if len(value) > settings.max_name_length or not _TASK_ID.fullmatch(value):
        raise InvalidArgument(
            f"{field}: {quote(value)} must be 1-{settings.max_name_length} characters "
            "of letters, digits and _ . : @ / + = -"
        )


def check_duration(
    value: float | None, field: str, *, maximum: float = MAX_DURATION, prefix: str = ""
) -> None:
    """Durations are finite, not negative and not over `maximum`."""
    if value is None:
        return
    field = prefix + field
    if not math.isfinite(value) or value < 0:
        raise InvalidArgument(f"{field}: must not be negative")
    if value > maximum:
        raise InvalidArgument(f"{field}: must be at most {maximum:g} seconds")


def check_time(value: float | None, field: str, prefix: str = "") -> None:
    """Times are finite, from the Unix epoch up to the end of year 9999."""
    if value is not None and not (math.isfinite(value) and 0 <= value <= MAX_TIME):
        raise InvalidArgument(f"{prefix}{field}: must be a time between 1970 and 9999")


def check_text(value: str, field: str, limit: int, prefix: str = "") -> None:
    if len(value) * 4 > limit and len(value.encode()) > limit:  # UTF-8: at most 4 bytes a char
        raise InvalidArgument(f"{prefix}{field}: longer than {limit} bytes")


def check_retry_policy(policy: RetryPolicy, field: str) -> None:
    check_duration(policy.initial_backoff, f"{field}.initial_backoff")
    check_duration(policy.max_backoff, f"{field}.max_backoff")
    if not math.isfinite(policy.multiplier) or policy.multiplier < 1 or policy.multiplier > 100:
        raise InvalidArgument(f"{field}.multiplier: must be between 1 and 100")
    if not 0 <= policy.jitter <= 1:
        raise InvalidArgument(f"{field}.jitter: must be between 0 and 1")
    if policy.max_backoff < policy.initial_backoff:
        raise InvalidArgument(f"{field}.max_backoff: must not be less than initial_backoff")


def check_spec(spec: TaskSpec, settings: BrokerSettings, now: float, prefix: str = "") -> None:
    """Check one TaskSpec; `prefix` names it inside a batch ("tasks[3].")."""
    check_name(spec.queue, "queue", settings, prefix)
    check_name(spec.kind, "kind", settings, prefix)
    if spec.id:
        check_task_id(spec.id, f"{prefix}id", settings)
    if len(spec.payload) > settings.max_payload_bytes:
        raise InvalidArgument(
            f"{prefix}payload: {len(spec.payload)} bytes is over the limit of "
            f"{settings.max_payload_bytes} bytes"
        )
    check_text(spec.content_type, "content_type", settings.max_name_length, prefix)
    if spec.headers:
        _check_headers(spec.headers, f"{prefix}headers", settings)
    if not settings.min_priority <= spec.priority <= settings.max_priority:
        raise InvalidArgument(
            f"{prefix}priority: {spec.priority} is outside "
            f"[{settings.min_priority}, {settings.max_priority}]"
        )
    if spec.run_at is not None and spec.delay is not None:
        raise InvalidArgument(f"{prefix}run_at and {prefix}delay: set at most one")
    check_time(spec.run_at, "run_at", prefix)
    check_duration(spec.delay, "delay", prefix=prefix)
    check_time(spec.deadline, "deadline", prefix)
    if spec.deadline is not None and spec.deadline <= now:
        raise InvalidArgument(f"{prefix}deadline: must be in the future")
    if spec.max_attempts is not None and not 1 <= spec.max_attempts <= settings.max_attempts_limit:
        raise InvalidArgument(
            f"{prefix}max_attempts: must be between 1 and {settings.max_attempts_limit}"
        )
    if spec.retry_policy is not None:
        check_retry_policy(spec.retry_policy, f"{prefix}retry_policy")
    if spec.lease_duration is not None:
        check_lease_duration(spec.lease_duration, f"{prefix}lease_duration", settings)
    if spec.unique_key:
        check_text(spec.unique_key, "unique_key", settings.max_name_length * 2, prefix)
    check_duration(spec.unique_window, "unique_window", prefix=prefix)
    check_duration(spec.result_retention, "result_retention", prefix=prefix)
    if spec.concurrency_key:
        check_concurrency_key(spec.concurrency_key, settings, prefix)


def check_concurrency_key(value: str, settings: BrokerSettings, prefix: str = "") -> None:
    """At most max_name_length characters, no NUL (the KV index ends a key with one)."""
    if len(value) > settings.max_name_length:
        raise InvalidArgument(
            f"{prefix}concurrency_key: longer than {settings.max_name_length} characters"
        )
    if "\x00" in value:
        raise InvalidArgument(f"{prefix}concurrency_key: must not contain NUL characters")


def check_lease_duration(value: float | None, field: str, settings: BrokerSettings) -> None:
    check_duration(value, field, maximum=settings.max_lease_duration)
    if value is not None and value < settings.min_lease_duration:
        raise InvalidArgument(f"{field}: must be at least {settings.min_lease_duration:g} seconds")


def _check_headers(headers: dict[str, str], field: str, settings: BrokerSettings) -> None:
    if len(headers) > settings.max_headers:
        raise InvalidArgument(f"{field}: more than {settings.max_headers} entries")
    for key, value in headers.items():
        if not key:
            raise InvalidArgument(f"{field}: empty header name")
        check_text(key, f"{field}[{quote(key)}]", settings.max_name_length)
        check_text(value, f"{field}[{quote(key)}]", settings.max_error_text)


def check_lease_request(
    queues: Sequence[str],
    max_tasks: int,
    lease_duration: float | None,
    worker_id: str,
    settings: BrokerSettings,
) -> None:
    """A Lease (or a StreamWork `open`): queues, batch size, lease length, worker id."""
    if not queues:
        raise InvalidArgument("queues: name at least one queue")
    if len(queues) > settings.max_queues_per_lease:
        raise InvalidArgument(f"queues: more than {settings.max_queues_per_lease} queues")
    for index, queue in enumerate(queues):
        check_name(queue, f"queues[{index}]", settings)
    if not 1 <= max_tasks <= settings.max_batch:
        raise InvalidArgument(f"max_tasks: must be between 1 and {settings.max_batch}")
    check_lease_duration(lease_duration, "lease_duration", settings)
    check_text(worker_id, "worker_id", settings.max_worker_id_length)
