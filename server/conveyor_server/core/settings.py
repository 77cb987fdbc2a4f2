"""Broker defaults and limits: what a task gets when its spec is silent, and what is too big."""

from __future__ import annotations

from dataclasses import dataclass, field

from conveyor_server.core.model import RetryPolicy

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class BrokerSettings:
    """Defaults applied at enqueue and the bounds every request is checked against."""

    default_max_attempts: int = 3
    default_retry_policy: RetryPolicy = field(default_factory=RetryPolicy)
    default_lease_duration: float = 30.0
    default_result_retention: float = 24 * 3600.0
    max_payload_bytes: int = 1 * MIB
    max_batch: int = 1000
    max_wait: float = 60.0
    max_lease_duration: float = 24 * 3600.0
    min_lease_duration: float = 0.001
    max_attempts_limit: int = 1000
    min_priority: int = -100
    max_priority: int = 100
    max_headers: int = 64
    max_name_length: int = 128
    max_worker_id_length: int = 256
    max_error_text: int = 64 * 1024
    max_queues_per_lease: int = 64
    tick_batch: int = 1000
    #: The largest message the broker sends or receives (the gRPC limit it serves with).
    #: Lease and StreamWork answers hand out what fits; see core/sizes.py.
    max_message_bytes: int = 64 * MIB
