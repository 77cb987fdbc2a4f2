"""Fair picking between concurrency keys: which READY tasks of a queue a lease takes next.

Round robin over the queue's keys, the tasks without a key being one more key (""):
one task per key per turn, in a ring of keys in key order, resuming after the key served
last (the caller keeps that cursor per queue). Within a key, tasks come in lease order
(priority, run time, sequence), so priority orders a key's own tasks but never lets one
key go ahead of another's turn. A key at its key_concurrency limit sits its turns out.
See docs/flow-control.md.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conveyor_server.core.store import TaskTxn

#: Most keys read per ready_heads call while walking the ring.
KEY_PAGE = 64
#: Most keys one pick looks at (a ring of keys all at their limit costs one pick this many
#: seeks, not one per key in the queue); the next pick goes on where this one stopped.
MAX_KEYS_LOOKED_AT = 1024


@dataclass(slots=True)
class Pick:
    """Task ids to lease, in turn order, and what the walk learned."""

    task_ids: list[str] = field(default_factory=list)
    #: The key served (or looked at) last: where the next pick resumes. None: no change.
    cursor: str | None = None
    #: A key with READY tasks was passed over because it was at key_concurrency.
    is_key_throttled: bool = False


def ring(
    txn: TaskTxn, queue: str, cursor: str | None, page_size: int = KEY_PAGE
) -> Iterator[tuple[str, str]]:
    """The queue's keys with READY tasks, once each, starting after `cursor`, each with
    the id of its first READY task (its head).

    Order: keys greater than the cursor, then "" (tasks without a key) if it has READY
    tasks, then the keys up to and including the cursor.
    """
    start = cursor or ""
    after = start
    while True:
        page = txn.ready_heads(queue, after, page_size)
        yield from page
        if len(page) < page_size:
            break
        after = page[-1][0]
    unkeyed = txn.ready_task_ids(queue, 1)
    if unkeyed:
        yield "", unkeyed[0]
    if not start:
        return
    after = ""
    while True:
        page = txn.ready_heads(queue, after, page_size)
        for key, head in page:
            if key > start:
                return
            yield key, head
        if len(page) < page_size:
            return
        after = page[-1][0]


def pick(txn: TaskTxn, queue: str, count: int, key_limit: int, cursor: str | None) -> Pick:
    """Up to `count` READY task ids of the queue, fairly between keys (see the module)."""
    out = Pick()
    eligible: list[tuple[str, int, str]] = []  # (key, how many it may take, head), ring order
    looked_at = 0
    # pages no larger than needed: a SQL store locks each head it reads until commit
    for key, head in ring(txn, queue, cursor, max(1, min(KEY_PAGE, count))):
        looked_at += 1
        room = count
        if key and key_limit:
            room = min(room, key_limit - txn.leased_count(queue, key))
            if room <= 0:
                out.is_key_throttled = True
                if looked_at >= MAX_KEYS_LOOKED_AT:
                    out.cursor = key
                    break
                continue
        eligible.append((key, room, head))
        if len(eligible) >= count or looked_at >= MAX_KEYS_LOOKED_AT:
            break
    if not eligible:
        return out
    if len(eligible) >= count:  # one turn: each key's head (the common case with many keys)
        out.task_ids = [head for _, _, head in eligible[:count]]
        out.cursor = eligible[count - 1][0]
        return out
    fetched = _fetch(txn, queue, count, [(key, room) for key, room, _ in eligible])
    turn = 0
    while len(out.task_ids) < count:
        served = False
        for key, _, _ in eligible:
            ids = fetched[key]
            if turn < len(ids):
                out.task_ids.append(ids[turn])
                out.cursor = key
                served = True
                if len(out.task_ids) >= count:
                    break
        if not served:
            break
        turn += 1
    return out


def _fetch(
    txn: TaskTxn, queue: str, count: int, eligible: list[tuple[str, int]]
) -> dict[str, list[str]]:
    """Each eligible key's first READY ids: an even share of `count` each, then more from
    the keys that had more while others ran short (a few rounds at most)."""
    fetched: dict[str, list[str]] = {}
    quota = math.ceil(count / len(eligible))
    pending = eligible
    while pending:
        more: list[tuple[str, int]] = []
        for key, room in pending:
            want = min(room, quota)
            ids = txn.ready_task_ids(queue, want, key) if key else txn.ready_task_ids(queue, want)
            fetched[key] = ids
            if len(ids) == want and want < room:
                more.append((key, room))
        total = sum(len(ids) for ids in fetched.values())
        if total >= count or not more:
            break
        quota += math.ceil((count - total) / len(more))
        pending = more
    return fetched
