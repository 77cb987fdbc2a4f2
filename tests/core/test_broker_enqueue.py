"""Enqueue: defaults, states, batches and every validation rule (each names its field)."""

from __future__ import annotations

import pytest

from conveyor_server.core.broker import Broker
from conveyor_server.core.clock import FakeClock
from conveyor_server.core.errors import AlreadyExists, InvalidArgument
from conveyor_server.core.model import RetryPolicy, TaskSpec, TaskState
from conveyor_server.core.settings import BrokerSettings
from conveyor_server.core.validation import MAX_DURATION, MAX_TIME

DAY = 24 * 3600.0


def test_enqueue_without_delay_is_ready_with_broker_defaults(h, clock: FakeClock) -> None:
    task = h.enqueue("send-email", queue="mail", payload=b"{}", content_type="application/json")
    defaults = BrokerSettings()
    assert task.state is TaskState.READY
    assert task.queue == "mail"
    assert task.kind == "send-email"
    assert task.payload == b"{}"
    assert task.content_type == "application/json"
    assert task.run_at == clock.now()
    assert task.created_at == clock.now()
    assert task.attempt == 0
    assert task.max_attempts == defaults.default_max_attempts
    assert task.retry_policy == defaults.default_retry_policy
    assert task.lease_duration == defaults.default_lease_duration
    assert task.result_retention == defaults.default_result_retention
    assert task.lease_token == ""
    assert task.finished_at is None
    assert len(task.id) == 26


def test_enqueue_keeps_explicit_settings_of_the_spec(h) -> None:
    policy = RetryPolicy(initial_backoff=2, multiplier=3, max_backoff=60, jitter=0)
    task = h.enqueue(
        headers={"trace": "abc"},
        priority=7,
        max_attempts=9,
        retry_policy=policy,
        lease_duration=5,
        result_retention=0,
    )
    stored = h.get(task.id)
    assert stored.headers == {"trace": "abc"}
    assert stored.priority == 7
    assert stored.max_attempts == 9
    assert stored.retry_policy == policy
    assert stored.lease_duration == 5
    assert stored.result_retention == 0


def test_enqueue_with_delay_is_scheduled_at_now_plus_delay(h, clock: FakeClock) -> None:
    task = h.enqueue(delay=30)
    assert task.state is TaskState.SCHEDULED
    assert task.run_at == clock.now() + 30


def test_enqueue_with_future_run_at_is_scheduled(h, clock: FakeClock) -> None:
    task = h.enqueue(run_at=clock.now() + 10)
    assert task.state is TaskState.SCHEDULED
    assert task.run_at == clock.now() + 10


def test_enqueue_with_past_run_at_is_ready(h, clock: FakeClock) -> None:
    task = h.enqueue(run_at=clock.now() - 10)
    assert task.state is TaskState.READY


def test_enqueue_with_zero_delay_is_ready(h) -> None:
    assert h.enqueue(delay=0).state is TaskState.READY


def test_enqueued_task_is_readable_and_equal_to_the_returned_one(h) -> None:
    task = h.enqueue(payload=b"\x00\xffbinary")
    assert h.get(task.id) == task


def test_enqueue_assigns_increasing_sequences_and_distinct_ids(h) -> None:
    tasks = [h.enqueue() for _ in range(20)]
    sequences = [t.sequence for t in tasks]
    assert sequences == sorted(sequences)
    assert len(set(sequences)) == 20
    assert len({t.id for t in tasks}) == 20


def test_enqueue_returns_a_committed_future_not_a_duplicate(broker: Broker) -> None:
    outcome = broker.enqueue(TaskSpec(kind="job")).result(timeout=0)
    assert outcome.duplicate is False


def test_enqueue_batch_creates_all_tasks_in_order(broker: Broker, h) -> None:
    specs = [TaskSpec(kind="job", payload=bytes([i])) for i in range(5)]
    outcomes = broker.enqueue_batch(specs).result()
    assert [o.task.payload for o in outcomes] == [bytes([i]) for i in range(5)]
    assert not any(o.duplicate for o in outcomes)
    assert h.count("tasks") == 5
    assert [t.payload for t in h.lease(max_tasks=10)] == [bytes([i]) for i in range(5)]


def test_batch_with_duplicate_rejected_in_item_3_creates_none(broker: Broker, h) -> None:
    h.enqueue(id="taken")
    specs = [TaskSpec(kind="job") for _ in range(3)] + [TaskSpec(kind="job", id="taken")]
    future = broker.enqueue_batch(specs, reject_duplicate=True)
    with pytest.raises(AlreadyExists, match="taken"):
        future.result()
    assert h.count("tasks") == 1
    assert h.count("ready") == 1


def test_batch_with_invalid_item_3_raises_before_writing(broker: Broker, h) -> None:
    specs = [TaskSpec(kind="job") for _ in range(3)] + [TaskSpec(kind="job", queue="")]
    with pytest.raises(InvalidArgument, match=r"^tasks\[3\]\.queue"):
        broker.enqueue_batch(specs)
    assert h.count("tasks") == 0


def test_batch_rollback_does_not_consume_unique_keys(broker: Broker, h) -> None:
    h.enqueue(id="taken")
    specs = [TaskSpec(kind="job", unique_key="k"), TaskSpec(kind="job", id="taken")]
    with pytest.raises(AlreadyExists):
        broker.enqueue_batch(specs, reject_duplicate=True).result()
    fresh = broker.enqueue(TaskSpec(kind="job", unique_key="k")).result()
    assert fresh.duplicate is False


def test_empty_batch_is_invalid(broker: Broker) -> None:
    with pytest.raises(InvalidArgument, match=r"^tasks: the batch is empty"):
        broker.enqueue_batch([])


def test_batch_over_the_limit_is_invalid(clock: FakeClock, store) -> None:
    broker = Broker(store, clock, BrokerSettings(max_batch=4))
    with pytest.raises(InvalidArgument, match=r"^tasks: 5 tasks is over the limit of 4"):
        broker.enqueue_batch([TaskSpec(kind="job")] * 5)
    assert len(broker.enqueue_batch([TaskSpec(kind="job")] * 4).result()) == 4


# -- validation: every rule names its field ------------------------------------

LONG = "q" * 129


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"queue": ""}, "queue"),
        ({"queue": LONG}, "queue"),
        ({"queue": "has space"}, "queue"),
        ({"queue": "bad\x00byte"}, "queue"),
        ({"queue": "ünïcode"}, "queue"),
        ({"kind": ""}, "kind"),
        ({"kind": "k" * 129}, "kind"),
        ({"kind": "semi;colon"}, "kind"),
        ({"id": "has space"}, "id"),
        ({"id": "i" * 129}, "id"),
        ({"payload": b"x" * (1024 * 1024 + 1)}, "payload"),
        ({"content_type": "c" * 129}, "content_type"),
        ({"priority": 101}, "priority"),
        ({"priority": -101}, "priority"),
        ({"delay": -1.0}, "delay"),
        ({"delay": float("nan")}, "delay"),
        ({"delay": float("inf")}, "delay"),
        ({"run_at": 1_800_000_100.0, "delay": 5.0}, "run_at"),
        ({"deadline": 1_800_000_000.0}, "deadline"),
        ({"deadline": 1_700_000_000.0}, "deadline"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": 1001}, "max_attempts"),
        ({"lease_duration": -1.0}, "lease_duration"),
        ({"lease_duration": 0.0001}, "lease_duration"),
        ({"lease_duration": 2 * 24 * 3600.0}, "lease_duration"),
        ({"unique_window": -1.0}, "unique_window"),
        ({"result_retention": -1.0}, "result_retention"),
        ({"unique_key": "u" * 257}, "unique_key"),
        ({"headers": {"": "v"}}, "headers"),
        ({"headers": {f"h{i}": "v" for i in range(65)}}, "headers"),
        ({"run_at": float("nan")}, "run_at"),
        ({"run_at": float("inf")}, "run_at"),
        ({"run_at": 1e20}, "run_at"),
        ({"run_at": -1.0}, "run_at"),
        ({"deadline": float("inf")}, "deadline"),
        ({"deadline": float("nan")}, "deadline"),
        ({"deadline": 1e20}, "deadline"),
        ({"delay": 1e20}, "delay"),
        ({"result_retention": 1e14}, "result_retention"),
        ({"result_retention": float("inf")}, "result_retention"),
        ({"unique_window": 1e300}, "unique_window"),
        ({"retry_policy": RetryPolicy(initial_backoff=-1)}, "retry_policy.initial_backoff"),
        ({"retry_policy": RetryPolicy(max_backoff=1e14)}, "retry_policy.max_backoff"),
        ({"retry_policy": RetryPolicy(max_backoff=-1)}, "retry_policy.max_backoff"),
        ({"retry_policy": RetryPolicy(multiplier=0.5)}, "retry_policy.multiplier"),
        ({"retry_policy": RetryPolicy(jitter=1.5)}, "retry_policy.jitter"),
        (
            {"retry_policy": RetryPolicy(initial_backoff=10, max_backoff=5)},
            "retry_policy.max_backoff",
        ),
    ],
)
def test_invalid_spec_is_rejected_naming_the_field(
    broker: Broker, h, fields: dict, field: str
) -> None:
    spec = TaskSpec(**{"kind": "job", **fields})
    with pytest.raises(InvalidArgument) as info:
        broker.enqueue(spec)
    assert str(info.value).startswith(f"{field}")
    assert h.count("tasks") == 0


def test_invalid_item_in_a_batch_is_named_with_its_index(broker: Broker) -> None:
    specs = [TaskSpec(kind="job"), TaskSpec(kind="job", priority=500)]
    with pytest.raises(InvalidArgument, match=r"^tasks\[1\]\.priority: 500"):
        broker.enqueue_batch(specs)


def test_run_at_and_delay_both_set_names_both_fields(broker: Broker, clock: FakeClock) -> None:
    spec = TaskSpec(kind="job", run_at=clock.now() + 5, delay=5)
    with pytest.raises(InvalidArgument, match="run_at and delay"):
        broker.enqueue(spec)


def test_payload_exactly_at_the_limit_is_accepted(h) -> None:
    assert len(h.enqueue(payload=b"x" * (1024 * 1024)).payload) == 1024 * 1024


def test_priority_bounds_are_inclusive(h) -> None:
    assert h.enqueue(priority=100).priority == 100
    assert h.enqueue(priority=-100).priority == -100


def test_names_may_use_the_documented_punctuation(h) -> None:
    task = h.enqueue("pkg.module:func/v2", queue="team-a_jobs.high:1/x")
    assert task.kind == "pkg.module:func/v2"
    assert task.queue == "team-a_jobs.high:1/x"


def test_future_deadline_is_accepted_and_kept(h, clock: FakeClock) -> None:
    assert h.enqueue(deadline=clock.now() + 1).deadline == clock.now() + 1


def test_long_delay_is_accepted(h, clock: FakeClock) -> None:
    assert h.enqueue(delay=365 * DAY).run_at == clock.now() + 365 * DAY


def test_extreme_allowed_times_and_durations_never_break_the_timer(h, clock: FakeClock) -> None:
    """Every stored time stays encodable, so one task cannot make every later tick fail."""
    longest = MAX_DURATION
    policy = RetryPolicy(initial_backoff=longest, multiplier=1, max_backoff=longest, jitter=0)
    far = h.enqueue(run_at=MAX_TIME, deadline=MAX_TIME, result_retention=longest)
    h.enqueue(queue="q", result_retention=longest, unique_key="u", unique_window=longest)
    h.enqueue(queue="r", retry_policy=policy, max_attempts=2, deadline=clock.now() + 1)
    h.fail(h.lease_one("r"))
    h.ack(h.lease_one("q"))
    out = h.advance(2)
    assert len(out.finished) == 1
    assert h.get(far.id).state is TaskState.SCHEDULED
    assert h.tick().removed == 0
