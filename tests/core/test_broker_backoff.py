"""Retry backoff: exponential growth, the [initial, max] bounds and jitter spread."""

from __future__ import annotations

import random

import pytest

from conveyor_server.core.model import RetryPolicy
from conveyor_server.core.retry import backoff_delay


@pytest.mark.parametrize(
    ("attempt", "expected"),
    [(0, 1.0), (1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (8, 128.0), (9, 256.0), (10, 300.0)],
)
def test_backoff_without_jitter_doubles_from_initial_up_to_max(
    attempt: int, expected: float
) -> None:
    policy = RetryPolicy(initial_backoff=1, multiplier=2, max_backoff=300, jitter=0)
    assert backoff_delay(policy, attempt, random.Random(0)) == expected


def test_backoff_of_a_huge_attempt_is_the_maximum_not_an_overflow() -> None:
    policy = RetryPolicy(initial_backoff=1, multiplier=100, max_backoff=60, jitter=0.5)
    assert backoff_delay(policy, 100_000, random.Random(0)) <= 60
    assert backoff_delay(policy, 100_000, random.Random(0)) >= 30


def test_multiplier_one_gives_a_constant_delay() -> None:
    policy = RetryPolicy(initial_backoff=5, multiplier=1, max_backoff=60, jitter=0)
    assert {backoff_delay(policy, n, random.Random(0)) for n in range(1, 50)} == {5.0}


@pytest.mark.parametrize("attempt", [1, 2, 3, 4, 5, 6, 7, 12])
def test_jittered_backoff_stays_within_jitter_and_policy_bounds(attempt: int) -> None:
    policy = RetryPolicy(initial_backoff=2, multiplier=3, max_backoff=200, jitter=0.25)
    rng = random.Random(attempt)
    base = min(2 * 3 ** (attempt - 1), 200)
    delays = [backoff_delay(policy, attempt, rng) for _ in range(500)]
    assert all(2 <= d <= 200 for d in delays)
    assert all(base * 0.75 - 1e-9 <= d <= base * 1.25 + 1e-9 for d in delays)


def test_jitter_spreads_delays_on_both_sides_of_the_base() -> None:
    policy = RetryPolicy(initial_backoff=1, multiplier=2, max_backoff=1000, jitter=0.2)
    rng = random.Random(7)
    delays = [backoff_delay(policy, 5, rng) for _ in range(1000)]
    assert min(delays) < 16 < max(delays)
    assert min(delays) >= 16 * 0.8
    assert max(delays) <= 16 * 1.2
    assert len(set(delays)) > 900


def test_full_jitter_is_still_clamped_to_initial_and_max() -> None:
    policy = RetryPolicy(initial_backoff=3, multiplier=2, max_backoff=10, jitter=1.0)
    rng = random.Random(3)
    delays = [backoff_delay(policy, attempt, rng) for attempt in range(1, 8) for _ in range(200)]
    assert min(delays) == 3
    assert max(delays) == 10


def test_backoff_is_reproducible_with_the_same_seed() -> None:
    policy = RetryPolicy(jitter=0.5)
    first = [backoff_delay(policy, n, random.Random(42)) for n in range(1, 10)]
    second = [backoff_delay(policy, n, random.Random(42)) for n in range(1, 10)]
    assert first == second


def test_default_policy_starts_at_one_second_and_caps_at_five_minutes() -> None:
    policy = RetryPolicy()
    rng = random.Random(0)
    assert 1.0 <= backoff_delay(policy, 1, rng) <= 1.2
    assert backoff_delay(policy, 50, rng) <= 300.0
    assert backoff_delay(policy, 50, rng) >= 240.0
