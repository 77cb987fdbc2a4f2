"""How busy the event loop is, from counts the broker keeps itself (no event-loop internals).

The store's group commit asks before committing on the loop (an fsync there
holds up every RPC waiting for a turn). Unary calls being served that are
neither parked on a long poll nor waiting for the writes of this very turn stand
in for "other callbacks are waiting on the loop". Calls waiting for this turn's
commit are no reason to hand it to the writer thread: they wait either way, and
an inline commit answers them sooner with less CPU (figures: docs/performance.md).
"""

from __future__ import annotations

from collections.abc import Callable

#: Unparked unary calls beyond which a turn's writes go to the writer thread.
BUSY_CALLS = 2


class CallLoad:
    """Unary calls in flight (counted by rpc/errors.guarded), less the ones that wait."""

    __slots__ = ("_parked", "active")

    def __init__(self, parked: Callable[[], int]) -> None:
        self.active = 0
        self._parked = parked

    def is_busy(self, writing: int) -> bool:
        """Whether other work waits on the loop, besides `writing` calls awaiting this turn's
        commit and the parked long polls."""
        return self.active - self._parked() - writing > BUSY_CALLS
