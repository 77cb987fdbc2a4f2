"""store/group_commit.py with a backend of its own: the group-commit rules any store reuses."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Any

import pytest

from conveyor_server.store.group_commit import GroupCommitter, Outcome, Write


class ListBackend:
    """A backend whose 'transaction' is a list: a write function appends to it."""

    def __init__(self) -> None:
        self.committed: list[Any] = []
        self.groups: list[int] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()  # set when a group is being applied

    def apply_group(self, batch: list[Write]) -> list[Outcome]:
        self.entered.set()
        self.gate.wait(10)
        outcomes: list[Outcome] = []
        staged: list[Any] = []
        for fn, _, _ in batch:
            mark = len(staged)
            try:
                outcomes.append((True, fn(staged)))
            except Exception as exc:
                del staged[mark:]  # this write alone is rolled back
                outcomes.append((False, exc))
        self.committed += staged
        self.groups.append(len(batch))
        return outcomes

    def after_commit(self) -> None:
        pass

    def is_inline_allowed(self) -> bool:
        return True

    def idle(self) -> float | None:
        return None


def _submit(committer: GroupCommitter, fn: Any) -> Future[Any]:
    future: Future[Any] = Future()
    committer.submit((fn, future, False))
    return future


def _append(value: Any) -> Any:
    def fn(staged: list[Any]) -> Any:
        staged.append(value)
        return value

    return fn


def test_writes_waiting_behind_a_commit_share_one_group_and_fail_alone():
    backend = ListBackend()
    committer = GroupCommitter(backend, name="test-writer")
    try:
        backend.gate.clear()  # the first group blocks while the others queue up
        first = _submit(committer, _append("first"))
        assert backend.entered.wait(10)

        def boom(staged: list[Any]) -> None:
            staged.append("half-written")
            raise RuntimeError("boom")

        queued = [_submit(committer, _append(i)) for i in range(5)]
        failing = _submit(committer, boom)
        backend.gate.set()
        assert first.result(10) == "first"
        assert [f.result(10) for f in queued] == list(range(5))
        with pytest.raises(RuntimeError, match="boom"):
            failing.result(10)
    finally:
        committer.close()
    assert backend.committed == ["first", 0, 1, 2, 3, 4]  # nothing of the failed write
    assert backend.groups[0] == 1 and sum(backend.groups[1:]) == 6 and len(backend.groups) <= 3


def test_close_commits_what_was_asked_and_refuses_later_writes():
    backend = ListBackend()
    committer = GroupCommitter(backend, name="test-writer")
    asked = _submit(committer, _append("asked"))
    committer.close()
    assert asked.result(10) == "asked"
    late = _submit(committer, _append("late"))
    with pytest.raises(RuntimeError, match="closed"):
        late.result(10)
    assert backend.committed == ["asked"]


def test_a_cancelled_write_is_not_applied():
    backend = ListBackend()
    committer = GroupCommitter(backend, name="test-writer")
    try:
        backend.gate.clear()
        blocker = _submit(committer, _append("blocker"))
        assert backend.entered.wait(10)
        cancelled = _submit(committer, _append("cancelled"))
        assert cancelled.cancel()
        backend.gate.set()
        blocker.result(10)
    finally:
        committer.close()
    assert backend.committed == ["blocker"]
