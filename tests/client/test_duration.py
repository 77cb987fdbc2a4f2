"""Client conversions: valid protobuf Durations (nanos within ±999,999,999), lease ids."""

from __future__ import annotations

from datetime import timedelta

import pytest

from conveyor._convert import duration


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, (0, 0)),
        (1.5, (1, 500_000_000)),
        (0.9999999999, (1, 0)),  # rounds up to a whole second, not nanos=10**9
        (2.0000000004, (2, 0)),
        (59.999999999, (59, 999_999_999)),
        (-1.5, (-1, -500_000_000)),  # sign of nanos follows seconds, as protobuf requires
        (-0.9999999999, (-1, 0)),
        (timedelta(seconds=3, microseconds=250_000), (3, 250_000_000)),
    ],
)
def test_duration_splits_into_valid_seconds_and_nanos(value: object, expected: tuple) -> None:
    pb = duration(value)  # type: ignore[arg-type]
    assert (pb.seconds, pb.nanos) == expected
    assert abs(pb.nanos) < 1_000_000_000


def test_a_lease_is_a_task_a_lease_ref_or_a_pair_never_a_bare_string():
    from conveyor import LeaseRef
    from conveyor._convert import lease_ids
    from conveyor.errors import InvalidArgument

    assert lease_ids(("t1", "tok")) == ("t1", "tok")
    assert lease_ids(LeaseRef("t1", "tok")) == ("t1", "tok")
    with pytest.raises(InvalidArgument, match="lease"):
        lease_ids("ab")  # type: ignore[arg-type]  # once unpacked as ("a", "b")
