"""Every public method of Client and AsyncClient, run on both against a real broker.

The `api` fixture gives the same blocking face to both: for AsyncClient each call
is awaited on an event loop in a background thread. The last test checks that
every public method was called on both, so a new method cannot go untested.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from conveyor import (
    AsyncClient,
    Client,
    Failure,
    QueueLimits,
    ResultTimeout,
    TaskCancelled,
    TaskFailed,
    TaskSpec,
    TaskState,
    errors,
)
from conveyor._operation import operation

CALLED: Counter[tuple[str, str]] = Counter()
#: Each client's own methods (not shared operations), tested on their own:
#: close below, work_stream in test_work_stream.py.
#: Methods each client writes itself (not operations); iter_tasks is a (async) generator
#: over list_tasks, tested on both in test_queue_client.py.
OWN = {"close", "work_stream", "iter_tasks"}


class Blocking:
    """AsyncClient's methods as blocking calls, run on a loop in another thread."""

    def __init__(self, target: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.client = self.run(self._make(target))

    async def _make(self, target: str) -> AsyncClient:
        return AsyncClient(target)

    def run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(60)

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.client, name)
        return lambda *args, **kwargs: self.run(method(*args, **kwargs))

    def close(self) -> None:
        self.run(self.client.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class Recorder:
    """Counts which public methods a test called, per client kind."""

    def __init__(self, kind: str, client: Any) -> None:
        self.kind, self.client = kind, client

    def __getattr__(self, name: str) -> Any:
        CALLED[(self.kind, name)] += 1
        return getattr(self.client, name)


@pytest.fixture(params=["sync", "async"], scope="module")
def api(request, shared_broker) -> Iterator[Any]:
    client: Any = (
        Client(shared_broker.address)
        if request.param == "sync"
        else Blocking(shared_broker.address)
    )
    yield Recorder(request.param, client)
    client.close()


def queue() -> str:
    return f"both-{uuid.uuid4().hex[:8]}"


def public_methods(cls: type) -> set[str]:
    return {name for name, _ in inspect.getmembers(cls, callable) if not name.startswith("_")}


def test_both_clients_have_the_same_methods_with_the_same_signatures():
    operations = {
        name
        for base in Client.__mro__
        for name, value in vars(base).items()
        if isinstance(value, operation)
    }
    assert public_methods(Client) == operations | {"close", "iter_tasks"}
    assert public_methods(AsyncClient) == operations | OWN
    for name in operations:
        sync, aio = getattr(Client, name), getattr(AsyncClient, name)
        assert inspect.signature(sync) == inspect.signature(aio), name
        assert inspect.iscoroutinefunction(aio) and not inspect.iscoroutinefunction(sync), name
        assert sync.__doc__ and sync.__doc__ == aio.__doc__, name


def test_enqueue_get_task_and_enqueue_many(api):
    q = queue()
    task = api.enqueue("k", {"a": 1}, queue=q, priority=5, headers={"h": "v"})
    assert task.payload == {"a": 1} and task.priority == 5 and task.state is TaskState.READY
    assert api.get_task(task.id).headers == {"h": "v"}
    again = api.enqueue("k", 1, queue=q, id=task.id)
    assert again.duplicate and again.id == task.id
    with pytest.raises(errors.AlreadyExists):
        api.enqueue("k", 1, queue=q, id=task.id, reject_duplicate=True)
    with pytest.raises(errors.InvalidArgument):
        api.enqueue("k", 1, queue="bad queue!")
    many = api.enqueue_many([("k", 1), TaskSpec("k2", 2, priority=3)], queue=q, max_attempts=7)
    assert [(t.kind, t.queue, t.max_attempts) for t in many] == [("k", q, 7), ("k2", q, 7)]
    assert many[1].priority == 3
    with pytest.raises(errors.NotFound):
        api.get_task("nosuch")


def test_lease_ack_result_and_wait(api):
    q = queue()
    task = api.enqueue("k", 2, queue=q)
    [leased] = api.lease(q, wait=5)
    assert leased.id == task.id and leased.lease_token
    api.ack(leased, {"double": 4})
    assert api.result(task.id, timeout=5) == {"double": 4}
    assert api.wait(task.id, timeout=5).state is TaskState.SUCCEEDED
    with pytest.raises(errors.LeaseLost):
        api.ack(leased.id, lease_token=leased.lease_token)
    waiting = api.enqueue("k", 3, queue=q)
    with pytest.raises(ResultTimeout):
        api.result(waiting.id, timeout=0.3)
    assert api.lease(q + "-empty", wait=0.1) == []


def test_fail_extend_release_and_cancel(api):
    q = queue()
    task = api.enqueue("k", None, queue=q, max_attempts=1)
    [leased] = api.lease(q, wait=5, lease_duration=timedelta(seconds=20))
    assert api.extend(leased, lease_duration=timedelta(seconds=40)).ok
    api.fail(leased, "KeyError", "missing", details="trace", retryable=False)
    with pytest.raises(TaskFailed) as info:
        api.result(task.id, timeout=5)
    assert info.value.error_type == "KeyError"
    with pytest.raises(errors.LeaseLost):
        api.extend(leased)
    second = api.enqueue("k", None, queue=q)
    [leased] = api.lease(q, wait=5)
    api.release(leased)
    assert api.get_task(second.id).state is TaskState.READY
    assert api.cancel(second.id).state is TaskState.CANCELLED
    with pytest.raises(TaskCancelled):
        api.result(second.id, timeout=5)


def test_batched_worker_calls_have_one_outcome_per_item(api):
    q = queue()
    api.enqueue_many([("k", i) for i in range(6)], queue=q)
    leased = api.lease(q, 6, wait=5)
    assert len(leased) == 6
    assert all(o.ok for o in api.extend_many(leased, lease_duration=30))
    assert [o.ok for o in api.ack_many([(t, t.payload) for t in leased[:2]])] == [True, True]
    failures = [Failure(t, "E", "boom", retryable=False) for t in leased[2:4]]
    assert [o.ok for o in api.fail_many(failures)] == [True, True]
    assert [o.ok for o in api.release_many(leased[4:])] == [True, True]
    stale = api.ack_many([(t, None) for t in leased[:2]])
    assert [type(o.error) for o in stale] == [errors.LeaseLost] * 2
    [lone] = api.release_many([leased[0]])
    assert isinstance(lone.error, errors.LeaseLost)
    [lone_extend] = api.extend_many([leased[0]])
    assert isinstance(lone_extend.error, errors.LeaseLost)


def test_schedules_round_trip(api):
    name, q = f"both-{uuid.uuid4().hex[:8]}", queue()
    created = api.create_schedule(name, "report", {"day": 1}, cron="0 3 * * *", queue=q)
    assert created.payload == {"day": 1} and created.next_fire_time is not None
    with pytest.raises(errors.AlreadyExists):
        api.create_schedule(name, "report", cron="0 3 * * *")
    replaced = api.create_schedule(name, "report", every=timedelta(minutes=5), upsert=True)
    assert replaced.every == timedelta(minutes=5) and replaced.cron is None
    updated = api.update_schedule(name, payload={"day": 2}, queue=q)
    assert updated.payload == {"day": 2} and updated.every == timedelta(minutes=5)
    assert api.pause_schedule(name).paused
    assert not api.resume_schedule(name).paused
    fired = api.trigger_schedule(name)
    assert fired.queue == q and fired.payload == {"day": 2}
    assert api.get_schedule(name).last_task_id == fired.id
    assert name in [s.name for s in api.list_schedules(source="api")]
    assert name not in [s.name for s in api.list_schedules(source="file")]
    api.delete_schedule(name)
    with pytest.raises(errors.NotFound):
        api.get_schedule(name)


def test_queue_admin_round_trip(api):
    q = queue()
    paused = api.pause_queue(q)
    assert paused.paused and paused.counts == {}
    api.enqueue("job", {"a": 1}, queue=q)
    assert api.lease(q) == []
    info = api.get_queue(q)
    assert info.counts == {TaskState.READY: 1} and info.oldest_ready_age is not None
    assert not api.resume_queue(q).paused
    assert q in {listed.name for listed in api.list_queues()}
    assert api.purge_queue(q, "ready") == 1
    dead = [api.enqueue("job", i, queue=q, max_attempts=1).id for i in range(3)]
    for task in api.lease(q, 3):
        api.fail(task, "Boom", "bad", retryable=False)
    page = api.list_tasks(queue=q, states=["dead"], page_size=2)
    assert [t.id for t in page.tasks] == dead[:2] and page.next_page_token
    assert api.retry_tasks([dead[0]]) == 1
    assert api.retry_tasks(queue=q) == 2
    api.delete_task(dead[2])
    with pytest.raises(errors.NotFound):
        api.get_task(dead[2])
    api.lease(q, worker_id="both-worker")
    assert "both-worker" in {w.id for w in api.list_workers()}


def test_update_queue_sends_only_the_given_fields(api):
    q = queue()
    with pytest.raises(errors.InvalidArgument, match="burst"):
        api.update_queue(q, burst=-1)
    with pytest.raises(errors.InvalidArgument, match="rate"):
        api.update_queue(q, rate=float("nan"))  # refused by the broker
    info = api.update_queue(q, concurrency=2, rate=100.0)
    assert info.limits == QueueLimits(rate=100.0, concurrency=2)
    info = api.update_queue(q, key_concurrency=1, paused=True)
    assert info.limits == QueueLimits(rate=100.0, concurrency=2, key_concurrency=1)
    assert info.paused and api.get_queue(q).limits.key_concurrency == 1
    assert not api.update_queue(q, paused=False).paused
    api.enqueue_many([("job", 1), ("job", 2)], queue=q, concurrency_key="tenant-1")
    api.enqueue("job", 3, queue=q, concurrency_key="tenant-2")
    leased = api.lease(q, 10)
    assert sorted(t.concurrency_key for t in leased) == ["tenant-1", "tenant-2"]
    assert api.get_task(leased[0].id).concurrency_key == leased[0].concurrency_key


def test_a_closed_client_raises_unavailable(shared_broker):
    with Client(shared_broker.address) as client:
        pass
    with pytest.raises(errors.Unavailable):
        client.get_task("x")

    async def closed() -> None:
        async with AsyncClient(shared_broker.address) as aclient:
            pass
        with pytest.raises(errors.Unavailable):
            await aclient.get_task("x")

    asyncio.run(closed())


def test_zz_every_public_method_was_called_on_both():
    """Runs last in this module: a public method no test above called fails here."""
    for kind, cls in (("sync", Client), ("async", AsyncClient)):
        if not any(k == kind for k, _ in CALLED):
            pytest.skip(f"the {kind} tests of this module did not run")
        missing = {name for name in public_methods(cls) - OWN if not CALLED[(kind, name)]}
        assert not missing, f"{kind}: untested {sorted(missing)}"
