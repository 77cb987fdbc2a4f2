"""Task ids and lease tokens."""

from __future__ import annotations

import itertools
import os
import random

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_PAIRS = [a + b for a in _CROCKFORD for b in _CROCKFORD]
_prefix_cache = (-1, "")
_id_start = random.SystemRandom().getrandbits(79)  # 2**79 ids before the 80 bits overflow
_id_counter = itertools.count()


def new_task_id(now: float, random_bytes: bytes | None = None) -> str:
    """A 26-character ULID: 48 bits of milliseconds then 80 random bits, so ids sort by time.

    Monotonic (like the ULID spec's variant): the 80 bits are a random 79-bit
    start drawn once per process plus a counter, so ids made in one millisecond
    differ and sort in creation order. So the tasks of one EnqueueBatch (one
    "now") sit side by side in the tasks database in the order they are leased:
    leasing and acking 100 of them dirties a few B-tree pages per commit, where
    random suffixes scattered them over every page the batch spans.

    The time part is cached per millisecond; the 80 bits are encoded ten bits
    (two characters) per table lookup, unrolled: half the cost of os.urandom and
    a list comprehension. The bits need to be unique, not
    secret (lease tokens are the secrets). `random_bytes` (tests) sets them.
    """
    global _prefix_cache
    millis = int(now * 1000) & ((1 << 48) - 1)
    cached_millis, prefix = _prefix_cache  # one tuple, so threads never see half an update
    if millis != cached_millis:
        prefix = "".join([_PAIRS[(millis >> shift) & 1023] for shift in (40, 30, 20, 10, 0)])
        _prefix_cache = (millis, prefix)
    if random_bytes is not None:
        n = int.from_bytes(random_bytes[:10], "big")
    else:  # next() on a count is one C call under the GIL: no two threads get the same
        n = _id_start + next(_id_counter)
    p = _PAIRS
    return "".join(
        (
            prefix,
            p[n >> 70],
            p[(n >> 60) & 1023],
            p[(n >> 50) & 1023],
            p[(n >> 40) & 1023],
            p[(n >> 30) & 1023],
            p[(n >> 20) & 1023],
            p[(n >> 10) & 1023],
            p[n & 1023],
        )
    )


def _reseed_after_fork() -> None:
    global _id_start, _id_counter
    _id_start = random.SystemRandom().getrandbits(79)
    _id_counter = itertools.count()


def new_lease_token() -> str:
    """An unguessable fencing token for one lease."""
    return os.urandom(12).hex()


os.register_at_fork(after_in_child=_reseed_after_fork)  # a forked child draws its own ids
