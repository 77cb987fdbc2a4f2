"""Hypothesis strategies that build any protobuf message from its descriptor, and wire garbage.

Values lean towards the edges the broker must refuse cleanly: empty and huge strings,
names that almost pass validation, integer extremes, unknown enum numbers, times and
durations at and past their range.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from hypothesis import strategies as st

_PLAUSIBLE = ["", "default", "q", "k", "job", "a" * 129, "x" * 20_000, "Europe", "America",
              "UTC", "Europe/Paris", "* * * * *", "@daily", "0 0 29 2 *", "bad queue!",
              "é" * 40, "\x00", "schedule:x:1", "01M8TNDC03FX2SRJ3V7K3H0Z9E", "../etc/passwd",
              "task_id", "application/json"]  # fmt: skip
_STRINGS = st.one_of(st.sampled_from(_PLAUSIBLE), st.text(max_size=40))
_BYTES = st.one_of(
    st.binary(max_size=64), st.just(b"x" * (1 << 20)), st.just(b"x" * ((1 << 20) + 1))
)

_INT_EDGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


def _integers(low: int, high: int) -> st.SearchStrategy[int]:
    edges = [
        v for v in (0, 1, -1, 2, 100, 101, 1000, 1001, 2**31 - 1, 2**40, 2**62) if low <= v <= high
    ]
    return st.one_of(st.sampled_from([low, high, *edges]), st.integers(low, high))


_TIME_EDGES = [0, 1, -1, 59, 3600, 1_790_000_000, 253_402_300_799, 2**40, 2**62, -(2**62),
               315_576_000_001]  # fmt: skip


def _well_known(descriptor: Descriptor) -> st.SearchStrategy[Any] | None:
    name = descriptor.full_name
    if name not in ("google.protobuf.Timestamp", "google.protobuf.Duration"):
        return None
    cls = message_factory.GetMessageClass(descriptor)
    # Timestamp: 0001..9999 is its range; Duration: +-10,000 years. Both go past it here.
    seconds = st.one_of(
        st.sampled_from(_TIME_EDGES),
        st.integers(-(2**63), 2**63 - 1),
    )
    nanos = st.one_of(st.sampled_from([0, 1, 999_999_999]), st.integers(-(2**31), 2**31 - 1))
    return st.builds(lambda s, n: cls(seconds=s, nanos=n), seconds, nanos)


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        return _STRINGS
    if kind == FieldDescriptor.TYPE_BYTES:
        return _BYTES
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.floats(allow_nan=True, allow_infinity=True, width=32 if kind == 2 else 64)
    if kind == FieldDescriptor.TYPE_ENUM:
        known = [v.number for v in field.enum_type.values]
        return st.one_of(st.sampled_from(known), _integers(-(2**31), 2**31 - 1))
    low, high = _INT_EDGES[kind]
    return _integers(low, high)


def messages(descriptor: Descriptor, depth: int = 3) -> st.SearchStrategy[Any]:
    """Messages of `descriptor`'s type with any subset of fields set."""
    special = _well_known(descriptor)
    if special is not None:
        return special
    cls = message_factory.GetMessageClass(descriptor)
    fields = [f for f in descriptor.fields if depth > 0 or f.type != FieldDescriptor.TYPE_MESSAGE]

    @st.composite
    def build(draw: st.DrawFn) -> Any:
        message = cls()
        chosen = (
            draw(st.lists(st.sampled_from(fields), unique=True, max_size=len(fields)))
            if fields
            else []
        )
        for field in chosen:
            _set(draw, message, field, depth)
        return message

    return build()


def _set(draw: st.DrawFn, message: Any, field: FieldDescriptor, depth: int) -> None:
    name = field.name
    is_message = field.type == FieldDescriptor.TYPE_MESSAGE
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        entries = draw(st.dictionaries(_STRINGS, _STRINGS, max_size=3))
        getattr(message, name).update(entries)
    elif field.is_repeated:
        if is_message:
            items = draw(st.lists(messages(field.message_type, depth - 1), max_size=3))
            getattr(message, name).extend(items)
        else:
            getattr(message, name).extend(draw(st.lists(_scalar(field), max_size=3)))
    elif is_message:
        getattr(message, name).CopyFrom(draw(messages(field.message_type, depth - 1)))
    else:
        setattr(message, name, draw(_scalar(field)))


def garbage(valid: bytes) -> st.SearchStrategy[bytes]:
    """Random bytes, and a valid encoding truncated or with bits flipped."""
    random_bytes = st.binary(min_size=1, max_size=256)
    if not valid:
        return random_bytes
    truncated = st.integers(1, max(1, len(valid) - 1)).map(lambda n: valid[:n])

    @st.composite
    def flipped(draw: st.DrawFn) -> bytes:
        data = bytearray(valid)
        for _ in range(draw(st.integers(1, 4))):
            bit = draw(st.integers(0, len(data) * 8 - 1))
            data[bit // 8] ^= 1 << (bit % 8)
        return bytes(data)

    return st.one_of(random_bytes, truncated, flipped())
