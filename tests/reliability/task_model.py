"""A reference model of task states: what docs/protocol.md says each call does, in plain dicts.

Written from the protocol page, not from the broker's code, so that the model-based test
compares two independent readings of the same rules. Times are the fake clock's seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from conveyor_server.core.model import RetryPolicy, TaskState


class Verdict(Enum):
    """What a lease-naming call (ack, fail, extend, release) must answer."""

    OK = "ok"
    NOT_FOUND = "not found"
    LEASE_LOST = "lease lost"


@dataclass
class ModelTask:
    """What the model knows of one task."""

    id: str
    queue: str
    priority: int
    order: int  # enqueue order, the last tie-breaker of the lease order
    run_at: float
    deadline: float | None
    max_attempts: int
    lease_duration: float
    unique_key: str
    unique_window: float
    retention: float
    created_at: float
    state: TaskState
    attempt: int = 0
    token: str = ""
    expires_at: float | None = None
    cancel_requested: bool = False
    finished_at: float | None = None
    result: bytes | None = None
    tokens: list[str] = field(default_factory=list)  # every token it was ever leased under


@dataclass
class Model:
    """Every task the broker should hold, the unique keys, and what retention removed."""

    retry_policy: RetryPolicy
    tasks: dict[str, ModelTask] = field(default_factory=dict)
    removed: set[str] = field(default_factory=set)
    unique: dict[tuple[str, str], str] = field(default_factory=dict)
    enqueued: int = 0

    # -- producers ---------------------------------------------------------

    def duplicate_of(self, task_id: str, queue: str, unique_key: str, now: float) -> str | None:
        """The existing task an enqueue returns instead of creating one, if any."""
        if task_id and task_id in self.tasks:
            return task_id
        if unique_key:
            holder = self.tasks.get(self.unique.get((queue, unique_key), ""))
            if holder is not None and _holds_key(holder, now):
                return holder.id
        return None

    def create(self, task: ModelTask) -> None:
        self.enqueued += 1
        task.order = self.enqueued
        self.tasks[task.id] = task
        if task.unique_key:
            self.unique[(task.queue, task.unique_key)] = task.id

    def cancel(self, task_id: str, now: float) -> str:
        """ "ok", "not found" or "finished" (FAILED_PRECONDITION)."""
        task = self.tasks.get(task_id)
        if task is None:
            return "not found"
        if task.state is TaskState.CANCELLED or (task.cancel_requested and not _final(task)):
            return "ok"
        if _final(task):
            return "finished"
        if task.state is TaskState.LEASED:
            task.cancel_requested = True
        else:
            _finish(task, TaskState.CANCELLED, now)
        return "ok"

    # -- workers -----------------------------------------------------------

    def lease(
        self, queues: list[str], max_tasks: int, lease_duration: float | None, now: float
    ) -> tuple[list[str], list[str]]:
        """(ids leased in order, ids found past their deadline on the way). Tokens come later."""
        self._promote(now)
        leased: list[str] = []
        expired: list[str] = []
        for queue in queues:
            for task in self.ready_in_lease_order(queue):
                if len(leased) >= max_tasks:
                    break
                if task.deadline is not None and task.deadline <= now:
                    _finish(task, TaskState.EXPIRED, now)
                    expired.append(task.id)
                    continue
                task.state = TaskState.LEASED
                task.attempt += 1
                task.expires_at = now + (lease_duration or task.lease_duration)
                leased.append(task.id)
        return leased, expired

    def ready_in_lease_order(self, queue: str) -> list[ModelTask]:
        """Higher priority first, then earlier run time, then enqueue order."""
        ready = [t for t in self.tasks.values() if t.queue == queue and t.state is TaskState.READY]
        return sorted(ready, key=lambda t: (-t.priority, t.run_at, t.order))

    def verdict(self, task_id: str, token: str, now: float) -> Verdict:
        """Whether a call naming this lease is accepted (the fencing rule)."""
        task = self.tasks.get(task_id)
        if task is None:
            return Verdict.NOT_FOUND
        if task.state is not TaskState.LEASED or task.token != token:
            return Verdict.LEASE_LOST
        if task.expires_at is not None and now >= task.expires_at:
            return Verdict.LEASE_LOST
        return Verdict.OK

    def ack(self, task: ModelTask, data: bytes, now: float) -> None:
        task.result = data
        _finish(task, TaskState.SUCCEEDED, now)

    def fail(
        self, task: ModelTask, is_retryable: bool, retry_delay: float | None, now: float
    ) -> None:
        if task.cancel_requested:
            _finish(task, TaskState.CANCELLED, now)
        elif not is_retryable or task.attempt >= task.max_attempts:
            _finish(task, TaskState.DEAD, now)
        else:
            delay = self._backoff(task.attempt) if retry_delay is None else retry_delay
            _requeue(task, now + delay, now)

    def extend(self, task: ModelTask, lease_duration: float | None, now: float) -> None:
        task.expires_at = now + (lease_duration or task.lease_duration)

    def release(self, task: ModelTask, now: float) -> None:
        task.attempt -= 1
        if task.cancel_requested:
            _finish(task, TaskState.CANCELLED, now)
        else:
            _requeue(task, task.run_at, now)

    # -- the timer ---------------------------------------------------------

    def tick(self, now: float) -> None:
        """Deadlines, then delayed tasks, then lease expiry, then retention (one pass)."""
        for task in list(self.tasks.values()):
            waiting = task.state in (TaskState.SCHEDULED, TaskState.READY)
            if waiting and task.deadline is not None and task.deadline <= now:
                _finish(task, TaskState.EXPIRED, now)
        self._promote(now)
        for task in list(self.tasks.values()):
            expires_at = task.expires_at
            if task.state is TaskState.LEASED and expires_at is not None and expires_at <= now:
                self._expire_lease(task, now)
        for task in list(self.tasks.values()):
            if task.finished_at is not None and task.finished_at + task.retention <= now:
                del self.tasks[task.id]
                self.removed.add(task.id)
                if task.unique_key and self.unique.get((task.queue, task.unique_key)) == task.id:
                    del self.unique[(task.queue, task.unique_key)]

    def next_due_time(self) -> float | None:
        """The earliest time the timer has something to do."""
        times: list[float] = []
        for task in self.tasks.values():
            if task.state is TaskState.SCHEDULED:
                times.append(task.run_at)
            if task.state is TaskState.LEASED and task.expires_at is not None:
                times.append(task.expires_at)
            waiting = task.state in (TaskState.SCHEDULED, TaskState.READY)
            if waiting and task.deadline is not None:
                times.append(task.deadline)
            if task.finished_at is not None:
                times.append(task.finished_at + task.retention)
        return min(times) if times else None

    def _promote(self, now: float) -> None:
        for task in self.tasks.values():
            if task.state is TaskState.SCHEDULED and task.run_at <= now:
                task.state = TaskState.READY

    def _expire_lease(self, task: ModelTask, now: float) -> None:
        if task.cancel_requested:
            _finish(task, TaskState.CANCELLED, now)
        elif task.attempt >= task.max_attempts:
            _finish(task, TaskState.DEAD, now)
        else:
            _requeue(task, task.run_at, now)

    def _backoff(self, attempt: int) -> float:
        p = self.retry_policy  # the model's settings have no jitter
        base = min(p.initial_backoff * p.multiplier ** max(attempt - 1, 0), p.max_backoff)
        return max(p.initial_backoff, base)


def _final(task: ModelTask) -> bool:
    return task.state.is_final


def _holds_key(task: ModelTask, now: float) -> bool:
    if task.unique_window > 0:
        return now < task.created_at + task.unique_window
    return not _final(task)


def _finish(task: ModelTask, state: TaskState, now: float) -> None:
    task.state = state
    task.finished_at = now
    task.token = ""
    task.expires_at = None


def _requeue(task: ModelTask, run_at: float, now: float) -> None:
    task.token = ""
    task.expires_at = None
    task.run_at = run_at
    task.state = TaskState.SCHEDULED if run_at > now else TaskState.READY
