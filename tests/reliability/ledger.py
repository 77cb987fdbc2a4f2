"""What producers and workers saw while the broker was killed, and the counts drawn from it.

Producers record every Enqueue that returned OK (and those that failed, which may or may
not have been committed); workers record every delivery (task id, attempt, lease token)
and every Ack the broker accepted. After the run each task's final state is read back.
`count` turns that into the figures docs/reliability.md quotes.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass, field

SUCCEEDED = "SUCCEEDED"
NOT_FOUND = "NOT_FOUND"


@dataclass(frozen=True, slots=True)
class Delivery:
    """One lease of one task, as a worker received it."""

    attempt: int
    token: str


@dataclass(frozen=True, slots=True)
class Final:
    """A task as read back after the run: its state name and result bytes."""

    state: str
    result: bytes = b""


@dataclass
class Ledger:
    """Thread-safe record of what the broker answered; every worker acks with its token."""

    enqueued: set[str] = field(default_factory=set)
    uncertain: set[str] = field(default_factory=set)  # Enqueue failed: committed or not
    deliveries: dict[str, list[Delivery]] = field(default_factory=lambda: defaultdict(list))
    acked: dict[str, list[Delivery]] = field(default_factory=lambda: defaultdict(list))
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def enqueue_ok(self, task_id: str) -> None:
        with self._lock:
            self.enqueued.add(task_id)
            self.uncertain.discard(task_id)  # a retry of the same id was acknowledged

    def enqueue_failed(self, task_id: str) -> None:
        with self._lock:
            if task_id not in self.enqueued:
                self.uncertain.add(task_id)

    def delivered(self, task_id: str, attempt: int, token: str) -> None:
        with self._lock:
            self.deliveries[task_id].append(Delivery(attempt, token))

    def ack_ok(self, task_id: str, attempt: int, token: str) -> None:
        with self._lock:
            self.acked[task_id].append(Delivery(attempt, token))

    def unfinished(self) -> set[str]:
        """Acknowledged enqueues with no accepted ack yet."""
        with self._lock:
            return {task_id for task_id in self.enqueued if not self.acked.get(task_id)}

    def ids(self) -> set[str]:
        with self._lock:
            return self.enqueued | self.uncertain


@dataclass
class Counts:
    """The figures: the first four must be zero; duplicates are allowed (at-least-once)."""

    tasks: int = 0
    uncertain_committed: int = 0
    deliveries: int = 0
    lost: list[str] = field(default_factory=list)
    resurrected: list[str] = field(default_factory=list)
    twice: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    duplicates: int = 0
    reused_attempts: int = 0

    def line(self) -> str:
        return (
            f"tasks={self.tasks} (+{self.uncertain_committed} committed after a failed Enqueue) "
            f"deliveries={self.deliveries} lost={len(self.lost)} "
            f"resurrected={len(self.resurrected)} twice={len(self.twice)} "
            f"unexpected={len(self.unexpected)} duplicates={self.duplicates} "
            f"(same attempt number again: {self.reused_attempts})"
        )


def count(ledger: Ledger, finals: dict[str, Final]) -> Counts:
    """Lost: Enqueue OK, never SUCCEEDED. Resurrected: delivered again after an accepted
    Ack (a later attempt). Twice: two accepted Acks. Unexpected: a delivery of a task
    nobody enqueued, an accepted Ack of a token never delivered, a stored result that no
    delivery produced, a committed task that never finished. Duplicates: deliveries beyond
    the first (at-least-once allows them)."""
    out = Counts(tasks=len(ledger.enqueued))
    known = ledger.enqueued | ledger.uncertain
    for task_id in sorted(ledger.enqueued):
        if finals.get(task_id, Final(NOT_FOUND)).state != SUCCEEDED:
            out.lost.append(task_id)
    for task_id in sorted(ledger.uncertain):
        final = finals.get(task_id, Final(NOT_FOUND))
        if final.state != NOT_FOUND:
            out.uncertain_committed += 1
            if final.state != SUCCEEDED:
                out.unexpected.append(f"{task_id}: committed but {final.state}")
    for task_id, deliveries in sorted(ledger.deliveries.items()):
        out.deliveries += len(deliveries)
        out.duplicates += len(deliveries) - 1
        out.reused_attempts += len(deliveries) - len({d.attempt for d in deliveries})
        if task_id not in known:
            out.unexpected.append(f"{task_id}: delivered but never enqueued")
        acks = ledger.acked.get(task_id, [])
        if acks and any(d.attempt > min(a.attempt for a in acks) for d in deliveries):
            out.resurrected.append(task_id)
        if len(acks) > 1:
            out.twice.append(task_id)
        tokens = {d.token for d in deliveries}
        if any(a.token not in tokens for a in acks):
            out.unexpected.append(f"{task_id}: an accepted ack of a token never delivered")
        final = finals.get(task_id, Final(NOT_FOUND))
        if final.state == SUCCEEDED and final.result.decode(errors="replace") not in tokens:
            out.unexpected.append(f"{task_id}: result {final.result!r} from no delivery")
    for task_id in sorted(set(ledger.acked) - set(ledger.deliveries)):
        out.unexpected.append(f"{task_id}: acked but never delivered")
    return out
