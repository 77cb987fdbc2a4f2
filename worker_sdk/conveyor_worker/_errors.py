"""Exceptions a handler raises to steer what happens to its task."""

from __future__ import annotations

from datetime import datetime, timedelta

__all__ = ["Cancelled", "Fatal", "HandlerTimeout", "Retry"]


class Retry(Exception):
    """Retry the task at a given time or after a delay instead of the task's backoff.

    `after` is a timedelta, seconds, or an aware datetime; None uses the backoff.
    The retry still counts an attempt: past max_attempts the task is DEAD.
    """

    def __init__(
        self,
        message: str | timedelta | float | datetime = "",
        *,
        after: timedelta | float | datetime | None = None,
    ) -> None:
        if not isinstance(message, str):  # Retry(timedelta(seconds=5)) reads naturally too
            after = message
            message = ""
        super().__init__(message or "retry requested")
        self.after = after

    def delay_seconds(self, now: datetime | None = None) -> float | None:
        """The delay this retry asks for, or None for the task's backoff."""
        after = self.after
        if after is None:
            return None
        if isinstance(after, datetime):
            if after.tzinfo is None:
                raise ValueError("Retry(after=datetime) needs a timezone-aware datetime")
            now = now or datetime.now(after.tzinfo)
            return max((after - now).total_seconds(), 0.0)
        if isinstance(after, timedelta):
            return max(after.total_seconds(), 0.0)
        return max(float(after), 0.0)


class Fatal(Exception):
    """Fail the task for good: it goes straight to DEAD, whatever attempts are left."""


class HandlerTimeout(TimeoutError):
    """Reported (as the error type) when a handler runs past its timeout."""


class Cancelled(Exception):
    """Raised by `ctx.raise_if_cancelled()`; the task then ends CANCELLED."""
