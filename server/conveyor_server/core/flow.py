"""Flow control: a queue's limits, their validation, and the token bucket of its rate limit.

Pure: no store, no clock of its own (every function takes `now`). The broker reads a
queue's QueueFlow inside its lease transaction, asks how many tasks it may take
(`tokens_now`), and writes the bucket back after `take` (docs/flow-control.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from conveyor_server.core.errors import InvalidArgument

#: Largest rate accepted (tasks per second): far above what one broker leases, and
#: small enough that the bucket arithmetic in float seconds stays exact enough.
MAX_RATE = 1e9
#: uint32 on the wire (QueueLimits.burst, concurrency, key_concurrency).
MAX_COUNT = 2**32 - 1
#: The fields of QueueLimits, as UpdateQueue's mask names them after "limits.".
LIMIT_FIELDS = ("rate", "burst", "concurrency", "key_concurrency")
#: Throttle reasons a lease reports (LeaseBatch.throttled).
THROTTLE_REASONS = ("rate", "concurrency", "key_concurrency")


@dataclass(frozen=True, slots=True)
class QueueLimits:
    """A queue's limits; 0 in any field means "no limit" (see QueueLimits in the proto)."""

    rate: float = 0.0
    burst: int = 0
    concurrency: int = 0
    key_concurrency: int = 0

    @property
    def is_limited(self) -> bool:
        """Whether any limit is set (burst alone limits nothing)."""
        return bool(self.rate or self.concurrency or self.key_concurrency)

    @property
    def bucket_size(self) -> float:
        """The most tokens the bucket holds: burst, or max(1, ceil(rate)) when burst is 0."""
        return float(self.burst) if self.burst else float(max(1, math.ceil(self.rate)))


@dataclass(slots=True)
class QueueFlow:
    """A queue's stored flow state: its limits and its token bucket (tokens at tokens_at)."""

    limits: QueueLimits
    tokens: float = 0.0
    tokens_at: float = 0.0


def check_limits(limits: QueueLimits, prefix: str = "limits.") -> None:
    """Raise InvalidArgument naming the first bad field."""
    rate = limits.rate
    if not math.isfinite(rate) or rate < 0:
        raise InvalidArgument(f"{prefix}rate: {rate!r} must be a finite number, not negative")
    if rate > MAX_RATE:
        raise InvalidArgument(f"{prefix}rate: {rate:g} is over the limit of {MAX_RATE:g}")
    for name in LIMIT_FIELDS[1:]:
        value = getattr(limits, name)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
            raise InvalidArgument(f"{prefix}{name}: {value!r} must be a whole number 0-{MAX_COUNT}")


def new_flow(limits: QueueLimits, now: float) -> QueueFlow:
    """A queue's first flow: the bucket starts full."""
    return QueueFlow(limits, limits.bucket_size, now)


def with_limits(flow: QueueFlow | None, limits: QueueLimits, now: float) -> QueueFlow:
    """The flow after an UpdateQueue: new limits, the bucket refilled to now under the old
    rate and cut to the new size (a flow without a rate starts full)."""
    if flow is None or not flow.limits.rate:
        return new_flow(limits, now)
    tokens = min(tokens_now(flow, now), limits.bucket_size)
    return QueueFlow(limits, tokens, now)


def tokens_now(flow: QueueFlow, now: float) -> float:
    """Tokens in the bucket at `now`: refilled at `rate` per second since tokens_at, capped
    at the bucket size. A flow without a rate limit has no bucket: infinite tokens."""
    rate = flow.limits.rate
    if not rate:
        return math.inf
    elapsed = max(now - flow.tokens_at, 0.0)  # a clock step back never removes tokens
    return min(flow.limits.bucket_size, flow.tokens + rate * elapsed)


def whole_tokens(flow: QueueFlow, now: float) -> int | None:
    """How many tasks the bucket allows now (None: no rate limit)."""
    if not flow.limits.rate:
        return None
    return math.floor(tokens_now(flow, now) + 1e-9)


def rebased(flow: QueueFlow, now: float) -> QueueFlow:
    """The flow with its bucket time moved back to `now` if the clock stepped back past
    it (NTP step, VM restore, a broker whose clock is behind the last one's): otherwise
    nothing would refill until the clock caught up with tokens_at again. Keeps the tokens."""
    if not flow.limits.rate or flow.tokens_at <= now:
        return flow
    return replace(flow, tokens_at=now)


def take(flow: QueueFlow, now: float, count: int) -> QueueFlow:
    """The flow after leasing `count` tasks at `now` (tokens may not go below zero)."""
    if not flow.limits.rate or count <= 0:
        return flow
    tokens = max(tokens_now(flow, now) - count, 0.0)
    return replace(flow, tokens=tokens, tokens_at=now)


def next_token_at(flow: QueueFlow, now: float) -> float | None:
    """When the bucket next holds a whole token (now if it does; None: no rate limit)."""
    rate = flow.limits.rate
    if not rate:
        return None
    missing = 1.0 - tokens_now(flow, now)
    return now if missing <= 1e-9 else now + missing / rate
