"""Scheduler logic over a MemoryStore and a FakeClock: firing, misfires, overlap, jitter, state."""

from __future__ import annotations

import pytest

from conveyor_server.core.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from conveyor_server.core.model import TaskState
from conveyor_server.core.schedules.book import ScheduleBook
from conveyor_server.core.schedules.model import (
    MisfirePolicy,
    OverlapPolicy,
    Schedule,
    ScheduleSource,
    TaskTemplate,
    format_tick,
    jitter_offset,
    tick_task_id,
)

T0 = 1_800_000_000.0  # the FakeClock's start, a whole minute


def every_second(name: str = "s", **fields) -> Schedule:
    fields.setdefault("cron", "* * * * * *")
    template = fields.pop("template", TaskTemplate(kind="job", queue="cron"))
    return Schedule(name=name, template=template, **fields)


@pytest.fixture
def book(broker) -> ScheduleBook:
    return ScheduleBook(broker)


def fire(book: ScheduleBook, online_since: float = T0):
    return book.fire_due(online_since).result()


def task_ids(h, queue: str = "cron") -> set[str]:
    return {t.id for t in h.lease([queue], 1000)}


def test_create_sets_the_first_tick_after_now(book):
    schedule, created = book.create(every_second()).result()
    assert created
    assert schedule.next_fire_time == T0 + 1
    assert schedule.source is ScheduleSource.API
    assert book.next_due_time() == T0 + 1


def test_each_due_tick_fires_once_with_a_derived_id(book, h):
    book.create(every_second()).result()
    h.clock.advance(3.2)
    out = fire(book)
    assert [f.tick for f in out.fires] == [T0 + 1, T0 + 2, T0 + 3]
    assert fire(book).fires == []  # nothing due twice
    assert task_ids(h) == {tick_task_id("s", T0 + k) for k in (1, 2, 3)}
    schedule = book.get("s")
    assert schedule.last_fire_time == T0 + 3
    assert schedule.last_task_id == f"schedule:s:{format_tick(T0 + 3)}"
    assert schedule.next_fire_time == T0 + 4


def test_fired_task_copies_the_template(book, h):
    template = TaskTemplate(
        kind="report",
        queue="cron",
        payload=b"{}",
        content_type="application/json",
        headers={"team": "data"},
        priority=7,
        max_attempts=5,
        deadline=60.0,
    )
    book.create(every_second(template=template)).result()
    h.clock.advance(1)
    [f] = fire(book).fires
    task = h.get(f.task_id)
    assert (task.kind, task.payload, task.priority, task.max_attempts) == ("report", b"{}", 7, 5)
    assert task.headers == {
        "team": "data",
        "conveyor-schedule": "s",
        "conveyor-tick": format_tick(T0 + 1),
    }
    assert task.deadline == T0 + 1 + 60.0
    assert task.state is TaskState.READY


def test_tick_id_already_taken_does_not_enqueue_twice(book, h):
    book.create(every_second()).result()
    h.clock.advance(1)
    assert len(fire(book).fires) == 1
    book.delete("s").result()
    book.create(every_second()).result()  # re-created: cursor restarts after now
    h.clock.advance(1)
    assert len(fire(book).fires) == 1
    assert len(task_ids(h)) == 2


@pytest.mark.parametrize(
    ("policy", "limit", "fired_ticks", "skipped"),
    [
        (MisfirePolicy.SKIP, 100, [], 10),
        (MisfirePolicy.ONCE, 100, [10], 9),
        (MisfirePolicy.ALL, 100, list(range(1, 11)), 0),
        (MisfirePolicy.ALL, 4, [7, 8, 9, 10], 6),
    ],
)
def test_misfire_policy_after_downtime(book, h, policy, limit, fired_ticks, skipped):
    book.create(every_second(misfire_policy=policy, misfire_limit=limit)).result()
    h.clock.advance(10.5)  # the broker was "down" for ticks 1..10 and came back at 10.5
    online_since = h.clock.now()
    h.clock.advance(2.0)  # ticks 11 and 12 come due while it runs: always fired
    out = fire(book, online_since=online_since)
    assert [f.tick - T0 for f in out.fires] == [*fired_ticks, 11, 12]
    assert out.misfires_skipped == skipped
    assert book.get("s").next_fire_time == T0 + 13


def test_ticks_after_coming_online_fire_however_late(book, h):
    book.create(every_second(misfire_policy=MisfirePolicy.SKIP)).result()
    h.clock.advance(30)
    out = fire(book, online_since=T0)
    assert len(out.fires) == 30
    assert out.fires[0].lag_seconds == 29.0


def test_misfire_once_after_a_year_is_cheap_and_fires_the_latest_tick(book, h):
    book.create(every_second(misfire_policy=MisfirePolicy.ONCE)).result()
    h.clock.advance(365 * 86400 + 0.5)
    out = fire(book, online_since=h.clock.now())
    assert [f.tick for f in out.fires] == [T0 + 365 * 86400]
    assert out.misfires_skipped == 1000  # counted up to MISFIRE_COUNT_LIMIT


def test_overlap_skip_if_running_waits_for_the_previous_task(book, h):
    book.create(every_second(overlap_policy=OverlapPolicy.SKIP_IF_RUNNING)).result()
    h.clock.advance(1)
    assert len(fire(book).fires) == 1
    [task] = h.lease(["cron"])
    h.clock.advance(2)
    out = fire(book)
    assert out.fires == [] and out.overlap_skips == 2
    h.ack(task)
    h.clock.advance(1)
    [f] = fire(book).fires
    assert f.tick == T0 + 4


def test_overlap_skip_if_running_in_a_catch_up_fires_only_the_first(book, h):
    book.create(
        every_second(overlap_policy=OverlapPolicy.SKIP_IF_RUNNING, misfire_policy=MisfirePolicy.ALL)
    ).result()
    h.clock.advance(5)
    out = fire(book, online_since=h.clock.now())
    assert [f.tick - T0 for f in out.fires] == [1]
    assert out.overlap_skips == 4


def test_overlap_allow_fires_while_running(book, h):
    book.create(every_second()).result()
    h.clock.advance(1)
    fire(book)
    h.lease(["cron"])
    h.clock.advance(1)
    assert len(fire(book).fires) == 1


def test_jitter_delays_run_at_within_bounds_and_is_stable(book, h):
    book.create(every_second(jitter_seconds=0.8)).result()
    h.clock.advance(20)
    out = fire(book)
    offsets = []
    for f in out.fires:
        task = h.get(f.task_id)
        expected = f.tick + jitter_offset("s", f.tick, 0.8)
        assert task.run_at == pytest.approx(max(expected, h.clock.now()))
        offsets.append(jitter_offset("s", f.tick, 0.8))
    assert all(0 <= o < 0.8 for o in offsets)
    assert len(set(offsets)) > 10  # really spread
    # Stable across processes and restarts: a hash of name and tick, not Python's hash().
    assert jitter_offset("s", T0 + 1, 0.8) == pytest.approx(0.2902241203824644, abs=1e-12)


def test_jittered_task_is_scheduled_until_its_run_at(book, h):
    book.create(every_second(jitter_seconds=3600)).result()
    h.clock.advance(1)
    [f] = fire(book).fires
    task = h.get(f.task_id)
    offset = jitter_offset("s", T0 + 1, 3600)
    assert task.state is TaskState.SCHEDULED
    assert task.run_at == pytest.approx(T0 + 1 + offset)


def test_start_and_end_bound_the_series(book, h):
    book.create(every_second(start_at=T0 + 5, end_at=T0 + 7)).result()
    assert book.get("s").next_fire_time == T0 + 5
    h.clock.advance(20)
    assert [f.tick - T0 for f in fire(book).fires] == [5, 6, 7]
    assert book.get("s").next_fire_time is None
    assert book.next_due_time() is None


def test_interval_schedule_ticks_on_multiples(book, h):
    book.create(Schedule(name="i", template=TaskTemplate(kind="job"), interval_seconds=7)).result()
    h.clock.advance(20)
    ticks = [f.tick for f in fire(book).fires]
    assert all(t % 7 == 0 for t in ticks)
    assert len(ticks) in (2, 3)


def test_pause_drops_ticks_and_resume_restarts_after_now(book, h):
    book.create(every_second()).result()
    paused = book.pause("s").result()
    assert paused.paused and paused.next_fire_time is None
    assert book.next_due_time() is None
    h.clock.advance(5)
    assert fire(book).fires == []
    resumed = book.resume("s").result()
    assert resumed.next_fire_time == T0 + 6
    assert book.resume("s").result().next_fire_time == T0 + 6  # idempotent
    h.clock.advance(1)
    assert [f.tick - T0 for f in fire(book).fires] == [6]


def test_trigger_enqueues_now_even_when_paused(book, h):
    book.create(every_second(paused=True)).result()
    h.clock.advance(0.25)
    outcome = book.trigger("s").result()
    assert outcome.task.id.startswith("schedule:s:trigger:")
    assert outcome.task.state is TaskState.READY
    assert outcome.schedule.last_task_id == outcome.task.id
    assert outcome.schedule.last_fire_time == T0 + 0.25
    assert book.trigger("s").result().task.id != outcome.task.id


def test_create_twice_is_already_exists_and_upsert_keeps_history(book, h):
    book.create(every_second()).result()
    h.clock.advance(1)
    fire(book)
    with pytest.raises(AlreadyExists):
        book.create(every_second()).result()
    template = TaskTemplate(kind="other", queue="cron")
    replaced, created = book.create(every_second(template=template), upsert=True).result()
    assert not created
    assert replaced.template.kind == "other"
    assert replaced.last_fire_time == T0 + 1
    assert replaced.next_fire_time == T0 + 2  # timing unchanged: cursor kept


def test_update_of_timing_restarts_the_series(book, h):
    book.create(every_second()).result()
    h.clock.advance(0.5)
    updated = book.update(every_second(cron="*/10 * * * * *"), ["cron"]).result()
    assert updated.next_fire_time == T0 + 10


def test_update_with_unknown_field_is_invalid(book):
    book.create(every_second()).result()
    with pytest.raises(InvalidArgument):
        book.update(every_second(), ["source"])


def test_get_update_delete_of_missing_schedule_is_not_found(book):
    with pytest.raises(NotFound):
        book.get("nope")
    with pytest.raises(NotFound):
        book.update(every_second("nope")).result()
    with pytest.raises(NotFound):
        book.delete("nope").result()
    with pytest.raises(NotFound):
        book.pause("nope").result()
    with pytest.raises(NotFound):
        book.trigger("nope").result()


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"cron": "61 * * * *"}, "cron"),
        ({"cron": None}, "cron and interval"),
        ({"interval_seconds": 5.0}, "cron and interval"),
        ({"cron": None, "interval_seconds": 0.01}, "interval"),
        ({"timezone": "Mars/Base"}, "timezone"),
        ({"misfire_policy": 9}, "misfire_policy"),
        ({"overlap_policy": 9}, "overlap_policy"),
        ({"misfire_limit": 0}, "misfire_limit"),
        ({"jitter_seconds": -1.0}, "jitter"),
        ({"start_at": T0 + 10, "end_at": T0}, "end_at"),
        ({"template": TaskTemplate(kind="")}, "task.kind"),
        ({"template": TaskTemplate(kind="k", deadline=0.0)}, "task.deadline"),
        ({"template": TaskTemplate(kind="k", priority=500)}, "task.priority"),
    ],
)
def test_invalid_definitions_are_rejected(book, fields, named):
    with pytest.raises(InvalidArgument, match=named):
        book.create(every_second(**fields))


@pytest.mark.parametrize("name", ["", "has space", "x" * 65, "a:b"])
def test_invalid_names_are_rejected(book, name):
    with pytest.raises(InvalidArgument, match="name"):
        book.create(every_second(name))


def test_reconcile_adds_updates_removes_and_leaves_api_schedules_alone(book, h):
    book.create(every_second("api-one")).result()
    out = book.reconcile([every_second("f1"), every_second("f2"), every_second("api-one")]).result()
    assert (out.added, out.conflicts) == (["f1", "f2"], ["api-one"])
    assert book.get("f1").source is ScheduleSource.FILE
    assert book.get("api-one").source is ScheduleSource.API
    book.pause("f2").result()
    out = book.reconcile([every_second("f1", cron="*/5 * * * * *"), every_second("f2")]).result()
    assert (out.added, out.updated, out.removed) == ([], ["f1"], [])
    assert book.get("f2").paused  # pausing is operator state; the file does not undo it
    out = book.reconcile([]).result()
    assert sorted(out.removed) == ["f1", "f2"]
    assert [s.name for s in book.list()] == ["api-one"]


def test_api_cannot_change_file_schedules(book):
    book.reconcile([every_second("f")]).result()
    with pytest.raises(FailedPrecondition):
        book.update(every_second("f")).result()
    with pytest.raises(FailedPrecondition):
        book.delete("f").result()
    with pytest.raises(FailedPrecondition):
        book.create(every_second("f"), upsert=True).result()
    with pytest.raises(AlreadyExists):
        book.create(every_second("f")).result()
    assert book.pause("f").result().paused


def test_list_filters_by_source(book):
    book.create(every_second("b")).result()
    book.create(every_second("a")).result()
    book.reconcile([every_second("c")]).result()
    assert [s.name for s in book.list()] == ["a", "b", "c"]
    assert [s.name for s in book.list(ScheduleSource.FILE)] == ["c"]


def test_due_index_follows_many_schedules(book, h):
    for k in range(5):
        book.create(every_second(f"s{k}", cron=f"*/{k + 2} * * * * *")).result()
    assert book.next_due_time() == T0 + 2
    h.clock.advance(2)
    fire(book)
    assert book.next_due_time() == T0 + 3
