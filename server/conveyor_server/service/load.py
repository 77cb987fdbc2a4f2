"""How busy the event loop is, from counts the broker keeps itself (no event-loop internals).

The store's group commit asks before committing on the loop (an fsync there
holds up every RPC waiting for a turn). Unary calls being served and not parked
on a long poll stand in for "other callbacks are waiting on the loop": one-at-a-
time traffic (a round trip, a worker's stream) has 0-2, a burst of unary
Enqueue calls has dozens.
"""

from __future__ import annotations

from collections.abc import Callable

#: Unparked unary calls beyond which a turn's writes go to the writer thread.
BUSY_CALLS = 2


class CallLoad:
    """Unary calls in flight (counted by rpc/errors.guarded) minus parked long polls."""

    __slots__ = ("_parked", "active")

    def __init__(self, parked: Callable[[], int]) -> None:
        self.active = 0
        self._parked = parked

    def is_busy(self) -> bool:
        return self.active - self._parked() > BUSY_CALLS
