"""Queue flow records as the KV stores keep them: a version byte, then a marshal'd tuple.

(rate, burst, concurrency, key_concurrency, tokens, tokens_at): the limits, then the
token bucket (core/flow.py). PostgreSQL keeps the same fields as columns.
"""

from __future__ import annotations

import marshal

from conveyor_server.core.flow import QueueFlow, QueueLimits

RECORD_VERSION = 1
_PREFIX = bytes([RECORD_VERSION])


def encode(flow: QueueFlow) -> bytes:
    limits = flow.limits
    values = (
        float(limits.rate),
        int(limits.burst),
        int(limits.concurrency),
        int(limits.key_concurrency),
        float(flow.tokens),
        float(flow.tokens_at),
    )
    return _PREFIX + marshal.dumps(values, 4)


def decode(data: bytes) -> QueueFlow:
    if data[:1] != _PREFIX:
        raise ValueError(f"unknown queue flow record version {data[:1]!r}")
    rate, burst, concurrency, key_concurrency, tokens, tokens_at = marshal.loads(data[1:])
    return QueueFlow(QueueLimits(rate, burst, concurrency, key_concurrency), tokens, tokens_at)
