"""The counting behind the SIGKILL figures: each planted fault is counted where it belongs."""

from __future__ import annotations

from tests.reliability.ledger import NOT_FOUND, SUCCEEDED, Final, Ledger, count


def _clean_run() -> tuple[Ledger, dict[str, Final]]:
    """Two tasks enqueued, delivered, acked and read back SUCCEEDED with their tokens."""
    ledger = Ledger()
    finals = {}
    for task_id in ("a", "b"):
        ledger.enqueue_ok(task_id)
        ledger.delivered(task_id, 1, f"{task_id}-t1")
        ledger.ack_ok(task_id, 1, f"{task_id}-t1")
        finals[task_id] = Final(SUCCEEDED, f"{task_id}-t1".encode())
    return ledger, finals


def test_a_clean_run_counts_nothing_wrong():
    counts = count(*_clean_run())
    assert (counts.tasks, counts.deliveries, counts.duplicates) == (2, 2, 0)
    assert counts.lost == counts.resurrected == counts.twice == counts.unexpected == []


def test_a_planted_lost_task_is_counted_lost():
    ledger, finals = _clean_run()
    ledger.enqueue_ok("gone")  # Enqueue said OK, the broker never knew it afterwards
    finals["gone"] = Final(NOT_FOUND)
    ledger.enqueue_ok("stuck")  # delivered once, then never finished
    ledger.delivered("stuck", 1, "s1")
    finals["stuck"] = Final("READY")
    assert count(ledger, finals).lost == ["gone", "stuck"]


def test_a_task_missing_from_the_read_back_is_lost():
    ledger, finals = _clean_run()
    del finals["b"]
    assert count(ledger, finals).lost == ["b"]


def test_delivery_after_an_accepted_ack_is_a_resurrection():
    ledger, finals = _clean_run()
    ledger.delivered("a", 2, "a-t2")  # the broker forgot the ack and leased the task again
    finals["a"] = Final(SUCCEEDED, b"a-t2")
    counts = count(ledger, finals)
    assert counts.resurrected == ["a"]
    assert counts.duplicates == 1 and counts.unexpected == []


def test_a_redelivery_before_any_accepted_ack_is_only_a_duplicate():
    ledger, finals = _clean_run()
    ledger.enqueue_ok("c")
    ledger.delivered("c", 1, "c-t1")  # the worker's ack call died with the broker
    ledger.delivered("c", 2, "c-t2")
    ledger.ack_ok("c", 2, "c-t2")
    finals["c"] = Final(SUCCEEDED, b"c-t2")
    counts = count(ledger, finals)
    assert counts.duplicates == 1 and counts.reused_attempts == 0
    assert counts.lost == counts.resurrected == counts.twice == counts.unexpected == []


def test_two_accepted_acks_are_completed_twice():
    ledger, finals = _clean_run()
    ledger.delivered("b", 2, "b-t2")
    ledger.ack_ok("b", 2, "b-t2")
    counts = count(ledger, finals)
    assert counts.twice == ["b"]
    assert counts.resurrected == ["b"]  # its second delivery came after the first ack


def test_a_lost_lease_record_shows_as_a_reused_attempt_number():
    ledger, finals = _clean_run()
    ledger.enqueue_ok("d")
    ledger.delivered("d", 1, "d-t1")
    ledger.delivered("d", 1, "d-t1b")  # the lease commit was lost: attempt 1 again
    ledger.ack_ok("d", 1, "d-t1b")
    finals["d"] = Final(SUCCEEDED, b"d-t1b")
    counts = count(ledger, finals)
    assert counts.reused_attempts == 1 and counts.duplicates == 1


def test_unexpected_deliveries_acks_results_and_stuck_uncertain_tasks():
    ledger, finals = _clean_run()
    ledger.delivered("nobody", 1, "n1")  # never enqueued by anyone
    ledger.ack_ok("ghost", 1, "g1")  # an ack of a lease never handed out
    ledger.ack_ok("a", 1, "forged")  # accepted with a token this task was never leased under
    finals["b"] = Final(SUCCEEDED, b"someone-else")  # a result no delivery produced
    ledger.enqueue_failed("maybe")  # Enqueue failed, yet the task was committed ...
    finals["maybe"] = Final("DEAD")  # ... and never succeeded
    ledger.enqueue_failed("never")  # not committed at all: fine
    finals["never"] = Final(NOT_FOUND)
    unexpected = count(ledger, finals).unexpected
    assert len(unexpected) == 5, unexpected
    assert [u.split(":")[0] for u in unexpected] == ["maybe", "a", "b", "nobody", "ghost"]


def test_an_enqueue_retried_after_a_failure_is_not_uncertain():
    ledger = Ledger()
    ledger.enqueue_failed("x")
    ledger.enqueue_ok("x")
    ledger.enqueue_failed("x")
    assert ledger.enqueued == {"x"} and ledger.uncertain == set()
