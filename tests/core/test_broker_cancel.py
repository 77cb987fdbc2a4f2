"""Cancel: at once for waiting tasks, by request for leased ones, refused for finished ones."""

from __future__ import annotations

import pytest

from conveyor_server.core.broker import Broker
from conveyor_server.core.clock import FakeClock
from conveyor_server.core.errors import FailedPrecondition, InvalidArgument, NotFound
from conveyor_server.core.model import TaskState


def _cancel(broker: Broker, task_id: str):
    return broker.cancel(task_id).result()


def test_cancel_of_a_ready_task_is_cancelled_at_once(broker: Broker, h, clock: FakeClock) -> None:
    task = h.enqueue()
    clock.advance(1)
    cancelled = _cancel(broker, task.id)
    assert cancelled.state is TaskState.CANCELLED
    assert cancelled.finished_at == clock.now()
    assert h.get(task.id) == cancelled
    assert h.lease() == []


def test_cancel_of_a_scheduled_task_is_cancelled_and_never_runs(broker: Broker, h) -> None:
    task = h.enqueue(delay=60)
    assert _cancel(broker, task.id).state is TaskState.CANCELLED
    h.advance(120)
    assert h.lease() == []
    assert h.get(task.id).state is TaskState.CANCELLED


def test_cancel_of_a_retry_waiting_for_backoff_is_cancelled(broker: Broker, h) -> None:
    h.enqueue()
    task = h.lease_one()
    h.fail(task, retry_delay=30)
    assert _cancel(broker, task.id).state is TaskState.CANCELLED
    h.advance(60)
    assert h.lease() == []


def test_cancel_of_a_leased_task_only_requests_it(broker: Broker, h) -> None:
    h.enqueue()
    task = h.lease_one()
    requested = _cancel(broker, task.id)
    assert requested.state is TaskState.LEASED
    assert requested.cancel_requested is True
    assert requested.lease_token == task.lease_token
    assert requested.finished_at is None


def test_fail_after_cancel_request_is_cancelled_not_retried(broker: Broker, h) -> None:
    h.enqueue(max_attempts=5)
    task = h.lease_one()
    _cancel(broker, task.id)
    assert h.fail(task, "stopped").error is None
    done = h.get(task.id)
    assert done.state is TaskState.CANCELLED
    assert done.last_error.message == "stopped"
    h.advance(3600)
    assert h.lease() == []


def test_release_after_cancel_request_is_cancelled(broker: Broker, h) -> None:
    h.enqueue()
    task = h.lease_one()
    _cancel(broker, task.id)
    h.release(task)
    assert h.get(task.id).state is TaskState.CANCELLED
    assert h.lease() == []


def test_lease_expiry_after_cancel_request_is_cancelled(broker: Broker, h) -> None:
    h.enqueue(lease_duration=10, max_attempts=5)
    task = h.lease_one()
    _cancel(broker, task.id)
    out = h.advance(10)
    done = h.get(task.id)
    assert done.state is TaskState.CANCELLED
    assert [t.id for t in out.finished] == [task.id]
    assert h.lease() == []


def test_ack_after_cancel_request_still_succeeds(broker: Broker, h) -> None:
    h.enqueue()
    task = h.lease_one()
    _cancel(broker, task.id)
    assert h.ack(task, b"done anyway").error is None
    done = h.get(task.id)
    assert done.state is TaskState.SUCCEEDED
    assert done.result.data == b"done anyway"


def test_extend_after_cancel_request_keeps_the_request(broker: Broker, h) -> None:
    h.enqueue()
    task = h.lease_one()
    _cancel(broker, task.id)
    outcome = h.extend(task)
    assert outcome.error is None
    assert outcome.task.cancel_requested is True


def test_cancel_is_idempotent(broker: Broker, h) -> None:
    waiting = h.enqueue()
    first = _cancel(broker, waiting.id)
    assert _cancel(broker, waiting.id) == first
    h.enqueue()
    leased = h.lease_one()
    requested = _cancel(broker, leased.id)
    assert _cancel(broker, leased.id) == requested


@pytest.mark.parametrize("finish", ["ack", "dead", "expired"])
def test_cancel_of_a_finished_task_is_a_failed_precondition(
    broker: Broker, h, clock: FakeClock, finish: str
) -> None:
    if finish == "expired":
        task = h.enqueue(deadline=clock.now() + 1)
        h.advance(2)
    else:
        h.enqueue(max_attempts=1)
        task = h.lease_one()
        h.ack(task) if finish == "ack" else h.fail(task)
    before = h.get(task.id)
    assert before.state.is_final
    with pytest.raises(FailedPrecondition, match=before.state.name):
        _cancel(broker, task.id)
    assert h.get(task.id) == before


def test_cancel_of_a_task_acked_after_a_cancel_request_is_a_failed_precondition(
    broker: Broker, h
) -> None:
    h.enqueue()
    task = h.lease_one()
    _cancel(broker, task.id)
    h.ack(task)
    with pytest.raises(FailedPrecondition, match="SUCCEEDED"):
        _cancel(broker, task.id)


def test_cancel_of_an_unknown_task_is_not_found(broker: Broker) -> None:
    with pytest.raises(NotFound, match="'nope'"):
        _cancel(broker, "nope")


@pytest.mark.parametrize("task_id", ["", "has space", "x" * 129])
def test_cancel_with_a_malformed_id_is_invalid(broker: Broker, task_id: str) -> None:
    with pytest.raises(InvalidArgument, match=r"^task_id:"):
        broker.cancel(task_id)


@pytest.mark.parametrize("task_id", ["", "bad id"])
def test_get_task_with_a_malformed_id_is_invalid(broker: Broker, task_id: str) -> None:
    with pytest.raises(InvalidArgument, match=r"^task_id:"):
        broker.get_task(task_id)


def test_get_task_of_an_unknown_id_is_not_found(broker: Broker) -> None:
    with pytest.raises(NotFound, match="'unknown'"):
        broker.get_task("unknown")
