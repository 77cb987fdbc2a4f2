"""How a task's fields change on each transition: pure functions of (task, now)."""

from __future__ import annotations

from conveyor_server.core.ids import new_lease_token
from conveyor_server.core.model import Task, TaskState


def holds_unique_key(task: Task, now: float) -> bool:
    """A unique key is held for its window from enqueue, or (no window) until the task is final."""
    if task.unique_window > 0:
        return now < task.created_at + task.unique_window
    return not task.state.is_final


def start_lease(task: Task, now: float, lease_duration: float | None, worker_id: str) -> None:
    task.state = TaskState.LEASED
    task.attempt += 1
    task.leased_at = now
    task.lease_expires_at = now + (lease_duration or task.lease_duration)
    task.lease_token = new_lease_token()
    task.worker_id = worker_id
    task.updated_at = now


def clear_lease(task: Task) -> None:
    task.lease_expires_at = None
    task.lease_token = ""


def finish(task: Task, state: TaskState, now: float) -> None:
    task.state = state
    task.finished_at = now
    task.updated_at = now
    clear_lease(task)


def requeue(task: Task, run_at: float, now: float) -> None:
    """Back to waiting: READY if run_at has come, else SCHEDULED."""
    clear_lease(task)
    task.run_at = run_at
    task.state = TaskState.SCHEDULED if run_at > now else TaskState.READY
    task.updated_at = now


def retry(task: Task, now: float) -> None:
    """An operator's retry of a finished task: READY now, attempts reset, the deadline
    cleared (an EXPIRED task would expire again); the last error is kept."""
    clear_lease(task)
    task.state = TaskState.READY
    task.attempt = 0
    task.run_at = now
    task.deadline = None
    task.finished_at = None
    task.cancel_requested = False
    task.result = None
    task.worker_id = ""
    task.updated_at = now
