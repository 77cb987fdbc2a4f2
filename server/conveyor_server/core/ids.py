"""Task ids and lease tokens."""

from __future__ import annotations

import os

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_PAIRS = [a + b for a in _CROCKFORD for b in _CROCKFORD]
_RANDOM_SHIFTS = (70, 60, 50, 40, 30, 20, 10, 0)
_prefix_cache = (-1, "")


def new_task_id(now: float, random_bytes: bytes | None = None) -> str:
    """A 26-character ULID: 48 bits of milliseconds then 80 random bits, so ids sort by time.

    Two leading zero bits plus the 48 time bits make exactly the first ten
    characters, so they are cached per millisecond; the random 80 bits are
    encoded ten bits (two characters) per table lookup. This runs per task.
    """
    global _prefix_cache
    millis = int(now * 1000) & ((1 << 48) - 1)
    cached_millis, prefix = _prefix_cache  # one tuple, so threads never see half an update
    if millis != cached_millis:
        prefix = "".join([_PAIRS[(millis >> shift) & 1023] for shift in (40, 30, 20, 10, 0)])
        _prefix_cache = (millis, prefix)
    rand = int.from_bytes(random_bytes[:10] if random_bytes is not None else os.urandom(10), "big")
    return prefix + "".join([_PAIRS[(rand >> shift) & 1023] for shift in _RANDOM_SHIFTS])


def new_lease_token() -> str:
    """An unguessable fencing token for one lease."""
    return os.urandom(12).hex()
