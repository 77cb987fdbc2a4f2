"""Retry backoff: how long a failed attempt waits before the next one."""

from __future__ import annotations

import random

from conveyor_server.core.model import RetryPolicy


def backoff_delay(policy: RetryPolicy, attempt: int, rng: random.Random) -> float:
    """Delay before the attempt after `attempt` (1-based) failed.

    Exponential from initial_backoff, spread by +/- jitter, kept within [initial, max].
    """
    try:
        base = policy.initial_backoff * policy.multiplier ** max(attempt - 1, 0)
    except OverflowError:
        base = policy.max_backoff
    base = min(base, policy.max_backoff)
    if policy.jitter > 0:
        base *= 1.0 + policy.jitter * (2.0 * rng.random() - 1.0)
    return max(policy.initial_backoff, min(base, policy.max_backoff))
