"""Task ids (ULIDs that sort by time) and lease tokens."""

from __future__ import annotations

import itertools
import re

from conveyor_server.core.ids import new_lease_token, new_task_id

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
ULID = re.compile(r"[0-7][0-9A-HJKMNP-TV-Z]{25}")


def _decode(ulid: str) -> int:
    value = 0
    for char in ulid:
        value = value * 32 + CROCKFORD.index(char)
    return value


def test_task_id_is_a_26_character_crockford_ulid() -> None:
    for _ in range(100):
        assert ULID.fullmatch(new_task_id(1_800_000_000.0))


def test_task_id_encodes_milliseconds_and_random_bits() -> None:
    task_id = new_task_id(1_800_000_000.123, bytes(range(10)))
    value = _decode(task_id)
    assert value >> 80 == 1_800_000_000_123
    assert (value & ((1 << 80) - 1)).to_bytes(10, "big") == bytes(range(10))


def test_task_id_is_deterministic_for_given_random_bytes() -> None:
    assert new_task_id(1.5, b"\x01" * 10) == new_task_id(1.5, b"\x01" * 10)
    assert new_task_id(1.5, b"\x01" * 10) != new_task_id(1.5, b"\x02" * 10)


def test_task_ids_sort_by_time() -> None:
    times = [1_700_000_000.0 + step * 0.001 for step in range(0, 5000, 7)]
    ids = [new_task_id(t, b"\xff" * 10) for t in times]
    # 2 ms later: whole milliseconds apart even after float rounding of t * 1000
    later = [new_task_id(t + 0.002, b"\x00" * 10) for t in times]
    assert ids == sorted(ids)
    assert all(a < b for a, b in zip(ids, later, strict=True))


def test_task_ids_at_the_same_time_are_distinct() -> None:
    ids = {new_task_id(1_800_000_000.0) for _ in range(10_000)}
    assert len(ids) == 10_000


def test_lease_token_is_24_hex_characters_and_unique() -> None:
    tokens = {new_lease_token() for _ in range(10_000)}
    assert len(tokens) == 10_000
    assert all(re.fullmatch(r"[0-9a-f]{24}", token) for token in tokens)


def test_task_ids_made_in_one_millisecond_sort_in_creation_order() -> None:
    ids = [new_task_id(1_800_000_000.0005) for _ in range(2000)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(_decode(b) - _decode(a) == 1 for a, b in itertools.pairwise(ids))
    next_ms = new_task_id(1_800_000_000.0015)
    assert _decode(next_ms) >> 80 == 1_800_000_000_001 and next_ms > ids[-1]
