"""Task ids and lease tokens."""

from __future__ import annotations

import os

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_task_id(now: float, random_bytes: bytes | None = None) -> str:
    """A 26-character ULID: 48 bits of milliseconds then 80 random bits, so ids sort by time."""
    rand = random_bytes if random_bytes is not None else os.urandom(10)
    value = (int(now * 1000) & ((1 << 48) - 1)) << 80 | int.from_bytes(rand[:10], "big")
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_lease_token() -> str:
    """An unguessable fencing token for one lease."""
    return os.urandom(12).hex()
