"""Model-based test of the core: a Broker over the memory store and over LMDB, driven by
hypothesis through enqueue, lease, ack, fail, extend, release, cancel, clock and timer steps
and restarts, checked after every step against the reference model in task_model.py.

CI size: a few dozen sequences per store; CONVEYOR_LONG_TESTS=1 runs many more and longer.
"""

from __future__ import annotations

import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, Verbosity, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from conveyor_server.core import broker as broker_module
from conveyor_server.core.broker import Broker
from conveyor_server.core.clock import FakeClock
from conveyor_server.core.errors import AlreadyExists, FailedPrecondition, LeaseLost, NotFound
from conveyor_server.core.model import (
    Ack,
    Extension,
    Failure,
    ItemOutcome,
    LeaseRef,
    RetryPolicy,
    TaskResult,
    TaskSpec,
    TaskState,
)
from conveyor_server.core.settings import BrokerSettings
from conveyor_server.store.kv_txn import KvTaskTxn
from conveyor_server.store.lmdb_store import LmdbStore
from conveyor_server.store.memory import MemoryStore
from tests.reliability.sizes import pick
from tests.reliability.task_model import Model, ModelTask, Verdict

pytestmark = pytest.mark.timeout(pick(120, 1800))

QUEUES = ("a", "b")
CLIENT_IDS = ("c1", "c2", "c3")
#: No jitter, so the model can compute each backoff exactly.
RETRY = RetryPolicy(initial_backoff=2.0, multiplier=2.0, max_backoff=8.0, jitter=0.0)
SETTINGS = BrokerSettings(
    default_max_attempts=2,
    default_lease_duration=10.0,
    default_result_retention=40.0,
    default_retry_policy=RETRY,
)
MIB = 1 << 20


def maybe(values: tuple[Any, ...]) -> st.SearchStrategy[Any]:
    """None (the broker's default) or one of the values."""
    return st.none() | st.sampled_from(values)


def _verdict(outcome: ItemOutcome) -> Verdict:
    if outcome.error is None:
        return Verdict.OK
    if isinstance(outcome.error, NotFound):
        return Verdict.NOT_FOUND
    if isinstance(outcome.error, LeaseLost):
        return Verdict.LEASE_LOST
    raise AssertionError(f"unexpected item error {outcome.error!r}")


class BrokerMachine(RuleBasedStateMachine):
    """One broker and one model, stepped together; `is_lmdb` picks the store."""

    is_lmdb = False

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.data_dir = Path(tempfile.mkdtemp(prefix="conveyor-model-")) if self.is_lmdb else None
        self.store: MemoryStore | LmdbStore = self._open_store()
        self.broker = self._new_broker()
        self.model = Model(RETRY)
        self.results = 0

    def _open_store(self) -> MemoryStore | LmdbStore:
        if self.data_dir is None:
            return MemoryStore()
        return LmdbStore(self.data_dir, initial_map_bytes=8 * MIB, max_bytes=64 * MIB)

    def _new_broker(self) -> Broker:
        return Broker(self.store, self.clock, SETTINGS, rng=random.Random(11))

    def teardown(self) -> None:
        self.store.close()
        if self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    @property
    def now(self) -> float:
        return self.clock.now()

    def _known_ids(self) -> list[str]:
        return sorted(set(self.model.tasks) | self.model.removed)

    def _draw_lease(self, data: st.DataObject) -> tuple[str, str]:
        """A task and one of its tokens: current, stale, or never issued."""
        leased = sorted(i for i, t in self.model.tasks.items() if t.state is TaskState.LEASED)
        pool = leased * 3 + self._known_ids()  # mostly a leased task, if there is one
        task_id = data.draw(st.sampled_from(pool), label="task")
        task = self.model.tasks.get(task_id)
        if task is None or not task.tokens:
            return task_id, "not-a-token"
        current = [task.token] * 4 if task.token else []  # mostly the live lease, if any
        tokens = [*current, *task.tokens, "not-a-token"]
        return task_id, data.draw(st.sampled_from(tokens), label="token")

    # -- producers ---------------------------------------------------------

    @rule(
        queue=st.sampled_from(QUEUES),
        priority=st.sampled_from((-5, 0, 0, 5)),
        delay=maybe((0.0, 3.0, 12.0)),
        deadline_in=maybe((4.0, 25.0)),
        max_attempts=maybe((1, 3)),
        unique_key=st.sampled_from(("", "", "u1", "u2")),
        unique_window=maybe((15.0,)),
        client_id=st.sampled_from(("", "", *CLIENT_IDS)),
        retention=maybe((0.0, 10.0)),
        reject_duplicate=st.booleans(),
    )
    def enqueue(
        self,
        queue: str,
        priority: int,
        delay: float | None,
        deadline_in: float | None,
        max_attempts: int | None,
        unique_key: str,
        unique_window: float | None,
        client_id: str,
        retention: float | None,
        reject_duplicate: bool,
    ) -> None:
        now = self.now
        spec = TaskSpec(
            kind="job",
            queue=queue,
            priority=priority,
            id=client_id,
            delay=delay,
            deadline=None if deadline_in is None else now + deadline_in,
            max_attempts=max_attempts,
            unique_key=unique_key,
            unique_window=unique_window if unique_key else None,
            result_retention=retention,
        )
        duplicate = self.model.duplicate_of(client_id, queue, unique_key, now)
        future = self.broker.enqueue(spec, reject_duplicate=reject_duplicate)
        if duplicate is not None and reject_duplicate:
            assert isinstance(future.exception(), AlreadyExists)
            return
        outcome = future.result()
        if duplicate is not None:
            assert outcome.duplicate and outcome.task.id == duplicate
            return
        assert not outcome.duplicate, f"enqueue found a duplicate {outcome.task.id} (model: none)"
        run_at = now + (delay or 0.0)
        self.model.create(
            ModelTask(
                id=outcome.task.id,
                queue=queue,
                priority=priority,
                order=0,
                run_at=run_at,
                deadline=spec.deadline,
                max_attempts=max_attempts or SETTINGS.default_max_attempts,
                lease_duration=SETTINGS.default_lease_duration,
                unique_key=unique_key,
                unique_window=(unique_window or 0.0) if unique_key else 0.0,
                retention=SETTINGS.default_result_retention if retention is None else retention,
                created_at=now,
                state=TaskState.SCHEDULED if run_at > now else TaskState.READY,
            )
        )

    @precondition(lambda self: self._known_ids())
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        task_id = data.draw(st.sampled_from(self._known_ids()), label="task")
        expected = self.model.cancel(task_id, self.now)
        error = self.broker.cancel(task_id).exception()
        if error is None:
            got = "ok"
        elif isinstance(error, NotFound):
            got = "not found"
        elif isinstance(error, FailedPrecondition):
            got = "finished"
        else:
            raise AssertionError(f"cancel {task_id}: unexpected {error!r}")
        assert got == expected, f"cancel {task_id}: broker {got}, model {expected}"

    # -- workers -----------------------------------------------------------

    @rule(
        queues=st.sampled_from((["a"], ["b"], ["a", "b"], ["b", "a"])),
        max_tasks=st.integers(1, 3),
        lease_duration=maybe((5.0, 12.0)),
    )
    def lease(self, queues: list[str], max_tasks: int, lease_duration: float | None) -> None:
        want, want_expired = self.model.lease(queues, max_tasks, lease_duration, self.now)
        batch = self.broker.lease(queues, max_tasks, lease_duration=lease_duration).result()
        got = [t.id for t in batch.tasks]
        assert got == want, f"lease {queues} x{max_tasks}: broker {got}, model {want}"
        event(f"lease: {len(got)} tasks, {len(want_expired)} expired")
        assert [t.id for t in batch.expired] == want_expired
        for task in batch.tasks:
            model_task = self.model.tasks[task.id]
            assert task.lease_token and task.lease_token not in model_task.tokens
            assert task.attempt == model_task.attempt
            model_task.token = task.lease_token
            model_task.tokens.append(task.lease_token)
        for queue in queues:  # lease order: within a queue, higher priority first
            priorities = [t.priority for t in batch.tasks if t.queue == queue]
            assert priorities == sorted(priorities, reverse=True)

    def _call(self, name: str, task_id: str, token: str, item: Any, apply: Any) -> None:
        """One lease-naming call: the broker's verdict must be the model's, and so the change."""
        expected = self.model.verdict(task_id, token, self.now)
        [outcome] = getattr(self.broker, name)([item]).result()
        got = _verdict(outcome)
        assert got == expected, (
            f"{name} {task_id} token {token[:8]!r}: broker {got}, model {expected}"
        )
        event(f"{name}: {expected.value}")
        if expected is Verdict.OK:
            apply(self.model.tasks[task_id])

    @precondition(lambda self: self._known_ids())
    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        task_id, token = self._draw_lease(data)
        self.results += 1
        result = f"r{self.results}".encode()
        item = Ack(LeaseRef(task_id, token), TaskResult(result, "text/plain"))
        self._call("ack", task_id, token, item, lambda t: self.model.ack(t, result, self.now))

    @precondition(lambda self: self._known_ids())
    @rule(data=st.data(), is_retryable=st.booleans(), retry_delay=maybe((0.0, 3.0)))
    def fail(self, data: st.DataObject, is_retryable: bool, retry_delay: float | None) -> None:
        task_id, token = self._draw_lease(data)
        item = Failure(LeaseRef(task_id, token), "E", "boom", "", is_retryable, retry_delay)
        self._call(
            "fail",
            task_id,
            token,
            item,
            lambda t: self.model.fail(t, is_retryable, retry_delay, self.now),
        )

    @precondition(lambda self: self._known_ids())
    @rule(data=st.data(), lease_duration=maybe((3.0, 20.0)))
    def extend(self, data: st.DataObject, lease_duration: float | None) -> None:
        task_id, token = self._draw_lease(data)
        item = Extension(LeaseRef(task_id, token), lease_duration)
        self._call(
            "extend", task_id, token, item, lambda t: self.model.extend(t, lease_duration, self.now)
        )

    @precondition(lambda self: self._known_ids())
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        task_id, token = self._draw_lease(data)
        item = LeaseRef(task_id, token)
        self._call("release", task_id, token, item, lambda t: self.model.release(t, self.now))

    # -- time, the timer, restarts -----------------------------------------

    @rule(seconds=st.sampled_from((1.0, 2.0, 5.0, 11.0, 30.0)))
    def advance_clock(self, seconds: float) -> None:
        self.clock.advance(seconds)  # no tick: calls now see the new time, the timer has not run

    @rule()
    def tick(self) -> None:
        self.model.tick(self.now)
        outcome = self.broker.tick().result()
        assert not outcome.is_more_due

    @rule()
    def restart(self) -> None:
        """LMDB: close and reopen the store on the same directory. Memory: a new Broker over
        the same store (nothing to reopen), which shows the Broker keeps no task state."""
        if self.data_dir is not None:
            self.store.close()
            self.store = self._open_store()
        self.broker = self._new_broker()

    # -- what must hold after every step -------------------------------------

    @invariant()
    def tasks_match_the_model(self) -> None:
        for task_id, want in self.model.tasks.items():
            got = self.broker.get_task(task_id)
            summary = (got.state.name, got.attempt, got.cancel_requested, got.queue)
            expected = (want.state.name, want.attempt, want.cancel_requested, want.queue)
            assert summary == expected, f"task {task_id}: broker {summary}, model {expected}"
            assert got.lease_token == want.token
            assert got.lease_expires_at == want.expires_at
            assert got.run_at == want.run_at
            if want.state is TaskState.SUCCEEDED:
                assert got.result is not None and got.result.data == want.result
            assert 0 <= got.attempt <= got.max_attempts
        for task_id in self.model.removed:
            if task_id not in self.model.tasks:  # a client id may be used again after removal
                try:
                    self.broker.get_task(task_id)
                except NotFound:
                    continue
                raise AssertionError(f"task {task_id} outlived its retention")

    @invariant()
    def timer_knows_what_is_due_next(self) -> None:
        assert self.broker.next_due_time() == self.model.next_due_time()


class MemoryBrokerMachine(BrokerMachine):
    is_lmdb = False


class LmdbBrokerMachine(BrokerMachine):
    is_lmdb = True


_SIZE = settings(
    max_examples=pick(100, 1000),
    stateful_step_count=pick(50, 100),
    deadline=None,
    database=None,  # failures print their steps; no example files left in the checkout
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

TestBrokerOverMemoryMatchesModel = MemoryBrokerMachine.TestCase
TestBrokerOverMemoryMatchesModel.settings = _SIZE
TestBrokerOverLmdbMatchesModel = LmdbBrokerMachine.TestCase
TestBrokerOverLmdbMatchesModel.settings = _SIZE


# -- the test's own test: planted bugs must be caught -----------------------------------


def _must_catch(machine: type[BrokerMachine]) -> None:
    """Run the machine (generation only, no shrinking) and require that it fails."""
    hunt = settings(
        _SIZE,
        max_examples=300,
        phases=[Phase.generate],
        print_blob=False,
        verbosity=Verbosity.quiet,
    )
    with pytest.raises(AssertionError):
        run_state_machine_as_test(machine, settings=hunt)


def test_model_catches_a_broker_that_accepts_stale_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    real = broker_module._current_lease

    def ignore_token(txn: Any, ref: LeaseRef, now: float) -> Any:
        task = txn.get_task(ref.task_id)
        if task is not None and task.state is TaskState.LEASED:
            return task  # the planted bug: any token, even an expired lease, is accepted
        return real(txn, ref, now)

    monkeypatch.setattr(broker_module, "_current_lease", ignore_token)
    _must_catch(MemoryBrokerMachine)


def test_model_catches_a_lease_order_that_ignores_priority(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = KvTaskTxn.ready_task_ids

    def newest_first(self: KvTaskTxn, queue: str, limit: int) -> list[str]:
        return list(reversed(real(self, queue, 1000)))[:limit]  # the planted bug

    monkeypatch.setattr(KvTaskTxn, "ready_task_ids", newest_first)
    _must_catch(MemoryBrokerMachine)
