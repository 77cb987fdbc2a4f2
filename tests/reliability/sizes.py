"""CI size or long size for the reliability suites: CONVEYOR_LONG_TESTS=1 picks the long one."""

from __future__ import annotations

import os


def is_long() -> bool:
    """Whether the long size was asked for (CONVEYOR_LONG_TESTS=1)."""
    return os.environ.get("CONVEYOR_LONG_TESTS", "") == "1"


def pick(ci: int, long: int) -> int:
    """The CI figure, or the long one under CONVEYOR_LONG_TESTS=1."""
    return long if is_long() else ci
