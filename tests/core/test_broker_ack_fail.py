"""Ack, fail, extend and release: outcomes, retries, dead-lettering and lease-token fencing."""

from __future__ import annotations

import pytest

from conveyor_server.core.broker import Broker
from conveyor_server.core.clock import FakeClock
from conveyor_server.core.errors import InvalidArgument, LeaseLost, NotFound
from conveyor_server.core.model import (
    Ack,
    Extension,
    Failure,
    LeaseRef,
    RetryPolicy,
    TaskResult,
    TaskState,
)

NO_JITTER = RetryPolicy(initial_backoff=10, multiplier=2, max_backoff=100, jitter=0)


# -- ack -----------------------------------------------------------------------


def test_ack_finishes_the_task_as_succeeded_with_its_result(h, clock: FakeClock) -> None:
    h.enqueue()
    task = h.lease_one()
    clock.advance(2)
    outcome = h.ack(task, b"42")
    assert outcome.error is None
    done = h.get(task.id)
    assert outcome.task == done
    assert done.state is TaskState.SUCCEEDED
    assert done.result is not None
    assert done.result.data == b"42"
    assert done.result.content_type == "text/plain"
    assert done.finished_at == clock.now()
    assert done.lease_token == ""
    assert done.lease_expires_at is None
    assert done.attempt == 1


def test_ack_twice_is_rejected_the_second_time(h) -> None:
    h.enqueue()
    task = h.lease_one()
    assert h.ack(task).error is None
    assert isinstance(h.ack(task, b"other").error, LeaseLost)
    assert h.get(task.id).result.data == b"ok"


def test_acked_task_is_not_leased_again(h) -> None:
    h.enqueue(lease_duration=1)
    h.ack(h.lease_one())
    h.advance(10)
    assert h.lease() == []


def test_ack_with_a_result_over_the_limit_is_invalid_and_keeps_the_lease(broker: Broker, h) -> None:
    h.enqueue()
    task = h.lease_one()
    big = TaskResult(b"x" * (1024 * 1024 + 1))
    (outcome,) = broker.ack([Ack(LeaseRef(task.id, task.lease_token), big)]).result()
    assert isinstance(outcome.error, InvalidArgument)
    assert str(outcome.error).startswith("result:")
    assert h.get(task.id) == task
    assert h.ack(task).error is None


def test_batched_ack_reports_each_item_and_commits_the_good_ones(broker: Broker, h) -> None:
    h.enqueue()
    h.enqueue()
    first, second = h.lease(max_tasks=2)
    acks = [
        Ack(LeaseRef(first.id, first.lease_token), TaskResult(b"1")),
        Ack(LeaseRef(second.id, "stale"), TaskResult(b"2")),
        Ack(LeaseRef("no-such-task", "x"), TaskResult(b"3")),
    ]
    outcomes = broker.ack(acks).result()
    assert [o.task_id for o in outcomes] == [first.id, second.id, "no-such-task"]
    assert outcomes[0].error is None
    assert isinstance(outcomes[1].error, LeaseLost)
    assert isinstance(outcomes[2].error, NotFound)
    assert h.get(first.id).state is TaskState.SUCCEEDED
    assert h.get(second.id).state is TaskState.LEASED


def test_worker_calls_with_no_items_are_invalid(broker: Broker) -> None:
    for call in (broker.ack, broker.fail, broker.extend, broker.release):
        with pytest.raises(InvalidArgument):
            call([])


def test_worker_calls_over_the_batch_limit_are_invalid(broker: Broker) -> None:
    refs = [LeaseRef(f"t{i}", "x") for i in range(1001)]
    with pytest.raises(InvalidArgument, match="1000"):
        broker.release(refs)


# -- lease-token fencing -------------------------------------------------------


def _stale_and_current_lease(h):
    """A task whose first lease expired and that was leased again: (stale, current)."""
    h.enqueue(lease_duration=10, max_attempts=5)
    stale = h.lease_one()
    h.advance(10)
    current = h.lease_one()
    assert current.lease_token != stale.lease_token
    return stale, current


@pytest.mark.parametrize("verb", ["ack", "fail", "extend", "release"])
def test_stale_token_after_re_lease_is_rejected_and_changes_nothing(h, verb: str) -> None:
    stale, current = _stale_and_current_lease(h)
    outcome = getattr(h, verb)(stale)
    assert isinstance(outcome.error, LeaseLost)
    assert outcome.task is None
    assert h.get(current.id) == current


@pytest.mark.parametrize("verb", ["ack", "fail", "extend", "release"])
def test_wrong_token_on_a_current_lease_is_rejected(h, verb: str) -> None:
    h.enqueue()
    task = h.lease_one()
    outcome = getattr(h, verb)(task, token="0" * 24)
    assert isinstance(outcome.error, LeaseLost)
    assert h.get(task.id) == task


@pytest.mark.parametrize("verb", ["ack", "fail", "extend", "release"])
def test_token_past_its_expiry_is_rejected_before_the_timer_runs(h, verb: str) -> None:
    h.enqueue(lease_duration=10)
    task = h.lease_one()
    h.advance(10, tick=False)
    outcome = getattr(h, verb)(task)
    assert isinstance(outcome.error, LeaseLost)
    assert "expired" in str(outcome.error)
    assert h.get(task.id) == task


@pytest.mark.parametrize("verb", ["ack", "fail", "extend", "release"])
def test_token_of_a_finished_task_is_rejected(h, verb: str) -> None:
    h.enqueue()
    task = h.lease_one()
    h.ack(task)
    finished = h.get(task.id)
    outcome = getattr(h, verb)(task)
    assert isinstance(outcome.error, LeaseLost)
    assert h.get(task.id) == finished


@pytest.mark.parametrize("verb", ["ack", "fail", "extend", "release"])
def test_unknown_task_is_not_found(broker: Broker, verb: str) -> None:
    lease = LeaseRef("missing", "token")
    items = {
        "ack": [Ack(lease, TaskResult())],
        "fail": [Failure(lease, "E", "m")],
        "extend": [Extension(lease)],
        "release": [lease],
    }[verb]
    (outcome,) = getattr(broker, verb)(items).result()
    assert isinstance(outcome.error, NotFound)
    assert "'missing'" in str(outcome.error)


def test_lease_token_is_still_valid_just_before_expiry(h) -> None:
    h.enqueue(lease_duration=10)
    task = h.lease_one()
    h.advance(9.999)
    assert h.ack(task).error is None


# -- fail, retry, dead-lettering -----------------------------------------------


def test_failed_attempt_is_scheduled_again_after_its_backoff(h, clock: FakeClock) -> None:
    h.enqueue(retry_policy=NO_JITTER, max_attempts=3)
    task = h.lease_one()
    outcome = h.fail(task, "db down", error_details="trace")
    assert outcome.error is None
    retried = h.get(task.id)
    assert retried.state is TaskState.SCHEDULED
    assert retried.run_at == clock.now() + 10
    assert retried.lease_token == ""
    assert retried.attempt == 1
    assert retried.finished_at is None
    assert retried.last_error is not None
    assert retried.last_error.type == "ValueError"
    assert retried.last_error.message == "db down"
    assert retried.last_error.details == "trace"
    assert retried.last_error.attempt == 1
    assert retried.last_error.failed_at == clock.now()


def test_retry_is_not_leased_before_its_backoff_ends(h) -> None:
    h.enqueue(retry_policy=NO_JITTER)
    h.fail(h.lease_one())
    h.advance(9.99)
    assert h.lease() == []
    h.advance(0.01)
    assert h.lease_one().attempt == 2


def test_backoff_grows_exponentially_up_to_the_maximum(h, clock: FakeClock) -> None:
    h.enqueue(retry_policy=NO_JITTER, max_attempts=10)
    delays = []
    for _ in range(6):
        task = h.lease_one()
        h.fail(task)
        delays.append(h.get(task.id).run_at - clock.now())
        clock.advance(1000)
    assert delays == [10, 20, 40, 80, 100, 100]


def test_backoff_with_jitter_stays_within_the_policy_bounds(h, clock: FakeClock) -> None:
    policy = RetryPolicy(initial_backoff=10, multiplier=2, max_backoff=100, jitter=0.5)
    h.enqueue(retry_policy=policy, max_attempts=1000)
    seen = set()
    for attempt in range(1, 200):
        task = h.lease_one()
        h.fail(task)
        delay = h.get(task.id).run_at - clock.now()
        base = min(10 * 2 ** (attempt - 1), 100)
        assert 10 <= delay <= 100
        assert base * 0.5 - 1e-6 <= delay <= base * 1.5 + 1e-6
        seen.add(round(delay, 6))
        clock.advance(1000)
    assert len(seen) > 10  # jitter really spreads the delays


def test_retry_delay_of_the_failure_overrides_the_backoff(h, clock: FakeClock) -> None:
    h.enqueue(retry_policy=NO_JITTER)
    task = h.lease_one()
    h.fail(task, retry_delay=3.5)
    assert h.get(task.id).run_at == clock.now() + 3.5


def test_zero_retry_delay_makes_the_task_ready_at_once(h) -> None:
    h.enqueue()
    task = h.lease_one()
    h.fail(task, retry_delay=0)
    assert h.get(task.id).state is TaskState.READY
    assert h.lease_one().attempt == 2


def test_negative_retry_delay_is_invalid_and_keeps_the_lease(h) -> None:
    h.enqueue()
    task = h.lease_one()
    outcome = h.fail(task, retry_delay=-1)
    assert isinstance(outcome.error, InvalidArgument)
    assert str(outcome.error).startswith("retry_delay:")
    assert h.get(task.id) == task


def test_retry_delay_over_the_longest_duration_is_invalid(h) -> None:
    h.enqueue()
    task = h.lease_one()
    outcome = h.fail(task, retry_delay=1e14)
    assert isinstance(outcome.error, InvalidArgument)
    assert h.get(task.id) == task


def test_over_long_error_message_is_invalid(h) -> None:
    h.enqueue()
    task = h.lease_one()
    outcome = h.fail(task, "m" * (64 * 1024 + 1))
    assert isinstance(outcome.error, InvalidArgument)
    assert str(outcome.error).startswith("error.message:")
    assert h.get(task.id) == task


def test_failure_on_the_last_attempt_is_dead(h, clock: FakeClock) -> None:
    h.enqueue(max_attempts=2, retry_policy=NO_JITTER)
    h.fail(h.lease_one(), "first")
    clock.advance(10)
    task = h.lease_one()
    h.fail(task, "second")
    dead = h.get(task.id)
    assert dead.state is TaskState.DEAD
    assert dead.attempt == 2
    assert dead.finished_at == clock.now()
    assert dead.last_error.message == "second"
    assert dead.last_error.attempt == 2
    h.advance(1000)
    assert h.lease() == []


def test_single_attempt_task_is_dead_after_one_failure(h) -> None:
    h.enqueue(max_attempts=1)
    task = h.lease_one()
    h.fail(task)
    assert h.get(task.id).state is TaskState.DEAD


def test_non_retryable_failure_is_dead_at_once_with_its_error_kept(h) -> None:
    h.enqueue(max_attempts=5)
    task = h.lease_one()
    h.fail(task, "bad input", error_type="ValidationError", is_retryable=False)
    dead = h.get(task.id)
    assert dead.state is TaskState.DEAD
    assert dead.attempt == 1
    assert dead.last_error.type == "ValidationError"
    assert dead.last_error.message == "bad input"


def test_failure_without_a_type_is_recorded_as_error(h) -> None:
    h.enqueue()
    task = h.lease_one()
    h.fail(task, "x", error_type="")
    assert h.get(task.id).last_error.type == "Error"


def test_ack_after_a_retry_keeps_the_last_error_and_succeeds(h, clock: FakeClock) -> None:
    h.enqueue(retry_policy=NO_JITTER)
    h.fail(h.lease_one(), "flaky")
    clock.advance(10)
    task = h.lease_one()
    h.ack(task)
    done = h.get(task.id)
    assert done.state is TaskState.SUCCEEDED
    assert done.attempt == 2
    assert done.last_error.message == "flaky"


def test_retry_goes_behind_tasks_that_were_already_waiting(h, clock: FakeClock) -> None:
    h.enqueue(payload=b"retried")
    task = h.lease_one()
    h.enqueue(payload=b"waiting")
    h.fail(task, retry_delay=1)
    clock.advance(1)
    assert [t.payload for t in h.lease(max_tasks=2)] == [b"waiting", b"retried"]


# -- extend --------------------------------------------------------------------


def test_extend_pushes_the_expiry_and_keeps_the_task_leased(h, clock: FakeClock) -> None:
    h.enqueue(lease_duration=10)
    task = h.lease_one()
    clock.advance(8)
    outcome = h.extend(task)
    assert outcome.error is None
    assert outcome.task.lease_expires_at == clock.now() + 10
    assert outcome.task.lease_token == task.lease_token
    h.advance(9)
    still = h.get(task.id)
    assert still.state is TaskState.LEASED
    assert still.attempt == 1
    assert h.ack(task).error is None


def test_extend_with_a_duration_uses_it(h, clock: FakeClock) -> None:
    h.enqueue(lease_duration=10)
    task = h.lease_one()
    assert h.extend(task, 120).task.lease_expires_at == clock.now() + 120
    h.advance(100)
    assert h.get(task.id).state is TaskState.LEASED


def test_extend_with_a_bad_duration_is_invalid_and_changes_nothing(h) -> None:
    h.enqueue()
    task = h.lease_one()
    outcome = h.extend(task, 10 * 24 * 3600.0)
    assert isinstance(outcome.error, InvalidArgument)
    assert str(outcome.error).startswith("lease_duration:")
    assert h.get(task.id) == task


# -- release -------------------------------------------------------------------


def test_release_makes_the_task_ready_without_using_an_attempt(h) -> None:
    h.enqueue(max_attempts=1)
    task = h.lease_one()
    outcome = h.release(task)
    assert outcome.error is None
    released = h.get(task.id)
    assert released.state is TaskState.READY
    assert released.attempt == 0
    assert released.lease_token == ""
    again = h.lease_one()
    assert again.attempt == 1
    h.fail(again)
    assert h.get(task.id).state is TaskState.DEAD


def test_released_task_keeps_its_place_in_the_queue(h) -> None:
    h.enqueue(payload=b"first")
    h.enqueue(payload=b"second")
    first = h.lease_one()
    h.release(first)
    assert h.lease_one().payload == b"first"


def test_released_task_can_be_released_many_times_without_dying(h) -> None:
    h.enqueue(max_attempts=1)
    for _ in range(5):
        h.release(h.lease_one())
    assert h.get(h.lease_one().id).attempt == 1
