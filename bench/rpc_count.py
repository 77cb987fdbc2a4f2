"""Count the RPCs the Python client makes, so a figure can be read as "RPCs per task".

It wraps the clients' private `_invoke` (the one place every unary call goes through). If the
client stops having one (a streaming path, a refactor), counting is off and the table shows
"—" rather than a wrong number.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from conveyor import AsyncClient, Client


class RpcCounter:
    def __init__(self) -> None:
        self.calls = 0
        self.enabled = False


COUNTER = RpcCounter()


def install() -> bool:
    """Wrap Client._invoke and AsyncClient._invoke once; False if the hook is not there."""
    if COUNTER.enabled:
        return True
    sync_call = getattr(Client, "_invoke", None)
    async_call = getattr(AsyncClient, "_invoke", None)
    if sync_call is None or async_call is None:
        return False

    @functools.wraps(sync_call)
    def counted_sync(self: Any, *args: Any, **kwargs: Any) -> Any:
        COUNTER.calls += 1
        return sync_call(self, *args, **kwargs)

    @functools.wraps(async_call)
    async def counted_async(self: Any, *args: Any, **kwargs: Any) -> Any:
        COUNTER.calls += 1
        return await async_call(self, *args, **kwargs)

    Client._invoke = counted_sync  # type: ignore[method-assign]
    AsyncClient._invoke = counted_async  # type: ignore[method-assign]
    COUNTER.enabled = True
    return True


@contextmanager
def counting() -> Iterator[list[int | None]]:
    """Yields a one-item list that holds the calls made inside the block (None: not counted)."""
    box: list[int | None] = [None]
    enabled = install()
    before = COUNTER.calls
    try:
        yield box
    finally:
        box[0] = COUNTER.calls - before if enabled else None
