"""core/flow.py: limits validation and the token bucket, pure (no store, no network)."""

from __future__ import annotations

import math

import pytest

from conveyor_server.core import flow
from conveyor_server.core.errors import InvalidArgument
from conveyor_server.core.flow import QueueFlow, QueueLimits

T0 = 1_800_000_000.0


def test_bucket_size_defaults_to_the_rate_rounded_up_and_at_least_one() -> None:
    assert QueueLimits(rate=50).bucket_size == 50
    assert QueueLimits(rate=2.5).bucket_size == 3
    assert QueueLimits(rate=0.1).bucket_size == 1
    assert QueueLimits(rate=10, burst=4).bucket_size == 4


def test_a_new_flow_starts_with_a_full_bucket() -> None:
    started = flow.new_flow(QueueLimits(rate=5, burst=3), T0)
    assert flow.whole_tokens(started, T0) == 3


def test_tokens_refill_at_the_rate_and_stop_at_the_bucket_size() -> None:
    empty = QueueFlow(QueueLimits(rate=10, burst=5), tokens=0.0, tokens_at=T0)
    assert flow.tokens_now(empty, T0 + 0.25) == pytest.approx(2.5)
    assert flow.whole_tokens(empty, T0 + 0.25) == 2
    assert flow.tokens_now(empty, T0 + 60) == 5  # capped
    assert flow.tokens_now(empty, T0 - 5) == 0  # a clock step back adds nothing, takes nothing


def test_take_spends_tokens_and_never_goes_below_zero() -> None:
    full = flow.new_flow(QueueLimits(rate=10), T0)
    after = flow.take(full, T0 + 0.05, 4)  # 10 - 4 (already full: the refill is capped)
    assert after.tokens == pytest.approx(6) and after.tokens_at == T0 + 0.05
    assert flow.take(after, T0 + 0.05, 100).tokens == 0


def test_next_token_at_is_when_the_bucket_holds_a_whole_token() -> None:
    empty = QueueFlow(QueueLimits(rate=4), tokens=0.5, tokens_at=T0)
    assert flow.next_token_at(empty, T0) == pytest.approx(T0 + 0.125)
    assert flow.next_token_at(empty, T0 + 1) == T0 + 1
    assert flow.next_token_at(QueueFlow(QueueLimits(concurrency=2)), T0) is None


def test_no_rate_means_no_bucket() -> None:
    unlimited = QueueFlow(QueueLimits(concurrency=3))
    assert flow.tokens_now(unlimited, T0) == math.inf
    assert flow.whole_tokens(unlimited, T0) is None
    assert flow.take(unlimited, T0, 10) is unlimited


def test_a_rate_of_50_over_2_seconds_lets_burst_plus_100_through() -> None:
    bucket = flow.new_flow(QueueLimits(rate=50, burst=10), T0)
    leased = 0
    for step in range(200):  # a lease every 10 ms, each taking what the bucket allows
        now = T0 + step * 0.01
        allowed = flow.whole_tokens(bucket, now) or 0
        bucket = flow.take(bucket, now, allowed)
        leased += allowed
    assert 10 + 99 <= leased <= 10 + 100


def test_changing_limits_keeps_the_tokens_cut_to_the_new_size() -> None:
    old = QueueFlow(QueueLimits(rate=10, burst=10), tokens=8.0, tokens_at=T0)
    new = flow.with_limits(old, QueueLimits(rate=10, burst=3), T0 + 1)
    assert new.tokens == 3 and new.tokens_at == T0 + 1
    assert flow.with_limits(None, QueueLimits(rate=2), T0).tokens == 2


@pytest.mark.parametrize(
    ("limits", "field"),
    [
        (QueueLimits(rate=-1), "limits.rate"),
        (QueueLimits(rate=math.nan), "limits.rate"),
        (QueueLimits(rate=math.inf), "limits.rate"),
        (QueueLimits(rate=1e12), "limits.rate"),
        (QueueLimits(burst=-1), "limits.burst"),
        (QueueLimits(concurrency=2**32), "limits.concurrency"),
        (QueueLimits(key_concurrency=-3), "limits.key_concurrency"),
    ],
)
def test_bad_limits_are_refused_naming_the_field(limits: QueueLimits, field: str) -> None:
    with pytest.raises(InvalidArgument, match=field.replace(".", r"\.")):
        flow.check_limits(limits)


def test_good_limits_pass() -> None:
    flow.check_limits(QueueLimits(rate=0.5, burst=1, concurrency=10, key_concurrency=2))
    assert not QueueLimits(burst=5).is_limited
    assert QueueLimits(key_concurrency=1).is_limited


def test_a_bucket_whose_time_is_ahead_is_rebased_to_now() -> None:
    ahead = QueueFlow(QueueLimits(rate=2), tokens=0.25, tokens_at=T0 + 600)
    back = flow.rebased(ahead, T0)
    assert back.tokens_at == T0 and back.tokens == 0.25
    assert flow.tokens_now(back, T0 + 1) == pytest.approx(2)  # refills from now on
    assert flow.rebased(back, T0 + 5) is back  # time ahead of tokens_at: unchanged
    unlimited = QueueFlow(QueueLimits(concurrency=1), tokens_at=T0 + 600)
    assert flow.rebased(unlimited, T0) is unlimited
