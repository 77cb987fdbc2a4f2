"""ScheduleBook: what creating, changing, firing and reconciling schedules mean, over a Store.

Every operation is one store write function, so it is atomic with everything it
implies. Above all, `fire_due` creates a tick's task (id derived from name and
tick) and moves the schedule's cursor in the same write: a crash leaves either
both or neither, so a tick is never fired twice and never silently lost.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from conveyor_server.core.broker import Broker
from conveyor_server.core.errors import AlreadyExists, FailedPrecondition, NotFound
from conveyor_server.core.ids import new_task_id
from conveyor_server.core.model import Task
from conveyor_server.core.schedules.model import (
    DEFINITION_FIELDS,
    OverlapPolicy,
    Schedule,
    ScheduleSource,
    check_name,
    check_schedule,
    first_fire_time,
    jitter_offset,
    merge_definition,
    plan_fires,
    task_spec,
    tick_task_id,
    trigger_task_id,
)
from conveyor_server.core.validation import quote

if TYPE_CHECKING:
    from conveyor_server.core.store import TaskTxn

#: Schedules one fire_due pass looks at; more due ones wait for the next pass.
DUE_BATCH = 100
_FILE_FIELDS = tuple(name for name in DEFINITION_FIELDS if name != "paused")


@dataclass(slots=True)
class Fire:
    """One task enqueued for one tick; lag is enqueue time minus tick time."""

    schedule: str
    tick: float
    task_id: str
    lag_seconds: float


@dataclass(slots=True)
class FireOutcome:
    """What one fire_due pass did, for waking waiters and for metrics."""

    fires: list[Fire] = field(default_factory=list)
    tasks: list[Task] = field(default_factory=list)
    misfires_skipped: int = 0
    overlap_skips: int = 0
    is_more_due: bool = False


@dataclass(slots=True)
class TriggerOutcome:
    task: Task
    schedule: Schedule


@dataclass(slots=True)
class ReconcileOutcome:
    """Names of file schedules added, updated and removed; API schedules the file collides with."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)


class ScheduleBook:
    """Schedule operations through the broker's store; time from the broker's clock."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.store = broker.store
        self.clock = broker.clock
        self.settings = broker.settings

    # -- the API -------------------------------------------------------------

    def create(self, schedule: Schedule, *, upsert: bool = False) -> Future[tuple[Schedule, bool]]:
        """Store a new API schedule; with upsert, replace an existing API schedule's definition.

        Raises:
            InvalidArgument: the definition is invalid (raised at once, nothing written).
        The future may raise AlreadyExists (taken, no upsert) or FailedPrecondition
        (upsert onto a file schedule).
        """
        check_schedule(schedule, self.settings)
        now = self.clock.now()

        def apply(txn: TaskTxn) -> tuple[Schedule, bool]:
            current = txn.get_schedule(schedule.name)
            if current is None:
                created = _new_schedule(schedule, ScheduleSource.API, now)
                txn.put_schedule(created)
                return created, True
            if not upsert:
                raise AlreadyExists(f"schedule {quote(schedule.name)} already exists")
            _check_api_owned(current, "replace")
            return self._redefine(txn, current, schedule, DEFINITION_FIELDS, now), False

        return self.store.write(apply)

    def get(self, name: str) -> Schedule:
        """Raises InvalidArgument (bad name) or NotFound."""
        check_name(name)
        schedule = self.store.read(lambda txn: txn.get_schedule(name))
        if schedule is None:
            raise NotFound(f"schedule {quote(name)} not found")
        return schedule

    def list(self, source: ScheduleSource | None = None) -> list[Schedule]:
        """Every schedule (of one source, if given), in name order."""
        schedules = self.store.read(lambda txn: txn.list_schedules())
        return [s for s in schedules if source is None or s.source is source]

    def update(self, schedule: Schedule, fields: Sequence[str] | None = None) -> Future[Schedule]:
        """Change an API schedule's definition (all fields, or the named ones).

        Raises:
            InvalidArgument: bad name, or a field that is not part of a definition.
        The future may raise InvalidArgument (the merged definition is invalid),
        NotFound, or FailedPrecondition (a file schedule).
        """
        check_name(schedule.name)
        names = DEFINITION_FIELDS if fields is None else tuple(fields)
        merge_definition(schedule, schedule, names)  # rejects unknown fields up front
        now = self.clock.now()

        def apply(txn: TaskTxn) -> Schedule:
            current = _must_get(txn, schedule.name)
            _check_api_owned(current, "change")
            return self._redefine(txn, current, schedule, names, now)

        return self.store.write(apply)

    def delete(self, name: str) -> Future[None]:
        """Remove an API schedule; its tasks stay. Future: NotFound, FailedPrecondition."""
        check_name(name)

        def apply(txn: TaskTxn) -> None:
            _check_api_owned(_must_get(txn, name), "delete")
            txn.delete_schedule(name)

        return self.store.write(apply)

    def pause(self, name: str) -> Future[Schedule]:
        """Stop firing; idempotent. Future: NotFound."""
        return self._set_paused(name, True)

    def resume(self, name: str) -> Future[Schedule]:
        """Fire again from the first tick after now; idempotent. Future: NotFound."""
        return self._set_paused(name, False)

    def _set_paused(self, name: str, paused: bool) -> Future[Schedule]:
        check_name(name)
        now = self.clock.now()

        def apply(txn: TaskTxn) -> Schedule:
            schedule = _must_get(txn, name)
            if schedule.paused == paused:
                return schedule
            schedule.paused = paused
            schedule.next_fire_time = None if paused else first_fire_time(schedule, now)
            schedule.updated_at = now
            txn.put_schedule(schedule)
            return schedule

        return self.store.write(apply)

    def trigger(self, name: str) -> Future[TriggerOutcome]:
        """Enqueue the schedule's task once, now (paused or not; no overlap check).

        The future may raise NotFound or StoreFull.
        """
        check_name(name)
        now = self.clock.now()

        def apply(txn: TaskTxn) -> TriggerOutcome:
            schedule = _must_get(txn, name)
            task_id = trigger_task_id(name, new_task_id(now))
            spec = task_spec(schedule.template, name, now, now, task_id, 0.0)
            task = self.broker.create_task(txn, spec, now).task
            schedule.last_fire_time = now
            schedule.last_task_id = task.id
            schedule.updated_at = now
            txn.put_schedule(schedule)
            return TriggerOutcome(task, schedule)

        return self.store.write(apply, is_growth=True)

    # -- the scheduler -------------------------------------------------------

    def next_due_time(self) -> float | None:
        """The earliest next fire time of any active schedule."""
        return self.store.read(lambda txn: txn.next_schedule_due_time())

    def fire_due(self, online_since: float) -> Future[FireOutcome]:
        """Fire every due tick of every due schedule, each with its cursor, in one write.

        Ticks at or before `online_since` (when this scheduler started) fell while the
        broker was down: the misfire policy decides which of them fire.
        """
        now = self.clock.now()

        def apply(txn: TaskTxn) -> FireOutcome:
            out = FireOutcome()
            names = txn.due_schedule_names(now, DUE_BATCH)
            out.is_more_due = len(names) == DUE_BATCH
            for name in names:
                schedule = _must_get(txn, name)
                self._fire(txn, schedule, now, online_since, out)
                txn.put_schedule(schedule)
            return out

        return self.store.write(apply, is_growth=True)

    def _fire(
        self, txn: TaskTxn, schedule: Schedule, now: float, online_since: float, out: FireOutcome
    ) -> None:
        plan = plan_fires(schedule, now, online_since)
        out.misfires_skipped += plan.misfires_skipped
        for tick in plan.ticks:
            if schedule.overlap_policy is OverlapPolicy.SKIP_IF_RUNNING and _is_running(
                txn, schedule.last_task_id
            ):
                out.overlap_skips += 1
                continue
            name = schedule.name
            task_id = tick_task_id(name, tick)
            jitter = jitter_offset(name, tick, schedule.jitter_seconds)
            spec = task_spec(schedule.template, name, tick, now, task_id, jitter)
            outcome = self.broker.create_task(txn, spec, now)
            schedule.last_fire_time = tick
            schedule.last_task_id = task_id
            if not outcome.duplicate:  # a re-created schedule may meet its old tick's task
                out.tasks.append(outcome.task)
                out.fires.append(Fire(name, tick, task_id, now - tick))
        schedule.next_fire_time = plan.next_fire_time
        schedule.updated_at = now

    # -- the schedules file ----------------------------------------------------

    def reconcile(self, declared: Sequence[Schedule]) -> Future[ReconcileOutcome]:
        """Make the file schedules match `declared`: add, update, remove; never touch API ones.

        Raises:
            InvalidArgument: a declared schedule is invalid (nothing written).
        """
        for schedule in declared:
            check_schedule(schedule, self.settings)
        now = self.clock.now()

        def apply(txn: TaskTxn) -> ReconcileOutcome:
            out = ReconcileOutcome()
            wanted = {s.name: s for s in declared}
            for stored in txn.list_schedules():
                if stored.source is ScheduleSource.FILE and stored.name not in wanted:
                    txn.delete_schedule(stored.name)
                    out.removed.append(stored.name)
            for name, schedule in wanted.items():
                current = txn.get_schedule(name)
                if current is None:
                    txn.put_schedule(_new_schedule(schedule, ScheduleSource.FILE, now))
                    out.added.append(name)
                elif current.source is not ScheduleSource.FILE:
                    out.conflicts.append(name)
                elif _differs(current, schedule, _FILE_FIELDS):
                    self._redefine(txn, current, schedule, _FILE_FIELDS, now)
                    out.updated.append(name)
            return out

        return self.store.write(apply)

    def _redefine(
        self,
        txn: TaskTxn,
        current: Schedule,
        new: Schedule,
        fields: Sequence[str],
        now: float,
    ) -> Schedule:
        merged = merge_definition(current, new, tuple(fields))
        check_schedule(merged, self.settings)
        if merged.paused:
            merged.next_fire_time = None
        elif current.paused or not merged.has_same_timing(current):
            merged.next_fire_time = first_fire_time(merged, now)
        merged.updated_at = now
        txn.put_schedule(merged)
        return merged


def _new_schedule(schedule: Schedule, source: ScheduleSource, now: float) -> Schedule:
    created = dataclasses.replace(
        schedule,
        source=source,
        last_fire_time=None,
        last_task_id="",
        created_at=now,
        updated_at=now,
    )
    created.next_fire_time = None if created.paused else first_fire_time(created, now)
    return created


def _differs(current: Schedule, new: Schedule, fields: Sequence[str]) -> bool:
    return any(getattr(current, name) != getattr(new, name) for name in fields)


def _must_get(txn: TaskTxn, name: str) -> Schedule:
    schedule = txn.get_schedule(name)
    if schedule is None:
        raise NotFound(f"schedule {quote(name)} not found")
    return schedule


def _check_api_owned(schedule: Schedule, verb: str) -> None:
    if schedule.source is ScheduleSource.FILE:
        raise FailedPrecondition(
            f"schedule {quote(schedule.name)} is managed by the schedules file; "
            f"{verb} it there, not through the API"
        )


def _is_running(txn: TaskTxn, task_id: str) -> bool:
    if not task_id:
        return False
    task = txn.get_task(task_id)
    return task is not None and not task.state.is_final
