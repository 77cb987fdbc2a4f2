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
#: Most keys one pick looks at once it has found a key with room: it leases what it found
#: rather than walk a long ring for more; the next pick goes on where this one stopped.
#: A pick that has found no key with room yet walks on to the end of the ring (each key
#: once at most): stopping there would come back empty while a key further on had room,
#: and the Lease would park with nothing to wake it for that key. So one pick costs at most
#: one look at every key with READY tasks, and only when every one of them is at its limit.
MAX_KEYS_LOOKED_AT = 1024


@dataclass(slots=True)
class Pick:
    """Task ids to lease, in turn order, and what the walk learned."""

    task_ids: list[str] = field(default_factory=list)
    #: Each task id's key ("" for none), parallel to task_ids: the caller moves its cursor
    #: to the key of the last task it actually leased (an answer cut short by its size
    #: leaves the keys after the cut their turn).
    keys: list[str] = field(default_factory=list)
    #: Where the walk stopped when it stopped at MAX_KEYS_LOOKED_AT: the next pick resumes
    #: there once all task_ids are leased (the keys before it were served or at their
    #: limit), so keys past a long run of keys at their limit get their turn. None: the
    #: cursor goes to the last key leased.
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
    for page in ring_pages(txn, queue, cursor, page_size):
        yield from page


def ring_pages(
    txn: TaskTxn, queue: str, cursor: str | None, page_size: int = KEY_PAGE
) -> Iterator[list[tuple[str, str]]]:
    """`ring`, a page of keys at a time (the unkeyed "" alone in its own page), so that a
    page's LEASED counts come in one store call."""
    start = cursor or ""
    after = start
    while True:
        page = txn.ready_heads(queue, after, page_size)
        if page:
            yield page
        if len(page) < page_size:
            break
        after = page[-1][0]
    unkeyed = txn.ready_task_ids(queue, 1)
    if unkeyed:
        yield [("", unkeyed[0])]
    if not start:
        return
    after = ""
    while True:
        page = txn.ready_heads(queue, after, page_size)
        upto = [(key, head) for key, head in page if key <= start]
        if upto:
            yield upto
        if len(upto) < len(page) or len(page) < page_size:
            return
        after = page[-1][0]


def pick(txn: TaskTxn, queue: str, count: int, key_limit: int, cursor: str | None) -> Pick:
    """Up to `count` READY task ids of the queue, fairly between keys (see the module)."""
    out = Pick()
    eligible: list[tuple[str, int, str]] = []  # (key, how many it may take, head), ring order
    # pages no larger than needed: a SQL store locks each head it reads until commit
    pages = ring_pages(txn, queue, cursor, max(1, min(KEY_PAGE, count)))
    looked_at = 0
    is_done = False
    for page in pages:
        leased = txn.leased_counts(queue, [key for key, _ in page if key]) if key_limit else {}
        for key, head in page:
            looked_at += 1
            room = min(count, key_limit - leased[key]) if key and key_limit else count
            if room > 0:
                eligible.append((key, room, head))
                is_done = len(eligible) >= count
            else:
                out.is_key_throttled = True
            if not is_done and eligible and looked_at >= MAX_KEYS_LOOKED_AT:
                out.cursor, is_done = key, True
            if is_done:
                break
        if is_done:
            break
    if not eligible:
        return out
    if len(eligible) >= count:  # one turn: each key's head (the common case with many keys)
        out.task_ids = [head for _, _, head in eligible[:count]]
        out.keys = [key for key, _, _ in eligible[:count]]
        return out
    fetched = _fetch(txn, queue, count, [(key, room) for key, room, _ in eligible])
    turn = 0
    while len(out.task_ids) < count:
        served = False
        for key, _, _ in eligible:
            ids = fetched[key]
            if turn < len(ids):
                out.task_ids.append(ids[turn])
                out.keys.append(key)
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
