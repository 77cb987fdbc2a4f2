"""BackgroundLoop: the one shape of the broker's background work (timer, cron, watched files).

A task runs `step()` again and again until stopped. `step` returns how long to
wait before the next step (None: until woken, 0: just yield to other work);
`wake()` ends the wait early. An error in a step is logged once with its
traceback and the loop goes on after a pause: a background loop that died
would silently stop delayed tasks, lease expiry or cron.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tomllib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

#: Wait after a failed step before trying again.
RETRY_SECONDS = 1.0


class BackgroundLoop:
    def __init__(
        self, name: str, step: Callable[[], Awaitable[float | None]], log: logging.Logger
    ) -> None:
        self._name = name
        self._step = step
        self._log = log
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=self._name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def wake(self) -> None:
        """End the current wait now (a change the step should look at)."""
        self._wake.set()

    async def _run(self) -> None:
        while True:
            self._wake.clear()  # before the step: a wake() during it is not lost
            try:
                delay = await self._step()
            except asyncio.CancelledError:
                raise
            except Exception:  # the boundary: log once, keep the loop alive
                self._log.exception("%s pass failed; retrying in %g s", self._name, RETRY_SECONDS)
                delay = RETRY_SECONDS
            if delay == 0:
                await asyncio.sleep(0)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)


class FileWatch:
    """A file reapplied when its stat changes (checked every `interval`) or on `reload()`.

    `on_change` reads and applies the file; if it raises, the error is logged once as
    `"<what> file not applied, keeping the current <what>: ..."` and the last good
    version stays in force. Shared by the schedules file and the tokens file.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        on_change: Callable[[], Awaitable[None]],
        *,
        what: str,
        log: logging.Logger,
        interval: float = 1.0,
    ) -> None:
        self.path = Path(path)
        self._on_change = on_change
        self._what = what
        self._log = log
        self._interval = interval
        self._seen: tuple[int, int, int] | None = None
        self._loop = BackgroundLoop(f"{what}-file", self._step, log)

    def mark_seen(self) -> None:
        """The file as it is now was applied (at start): only later changes count."""
        self._seen = self._stat()

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    def reload(self) -> None:
        """Reload now (SIGHUP), whether or not the file looks changed."""
        self._seen = None
        self._loop.wake()

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    async def _step(self) -> float:
        seen = self._stat()
        if seen == self._seen:
            return self._interval
        self._seen = seen
        try:
            await self._on_change()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the boundary: keep the last good version
            self._log.error(
                "%s file not applied, keeping the current %s: %s", self._what, self._what, exc
            )
        return self._interval


def read_tables(
    path: str | os.PathLike[str], section: str, error: type[Exception]
) -> dict[str, Any]:
    """The `[section.NAME]` tables of a watched TOML file (schedules, queues, tokens).

    Raises:
        error: unreadable file, bad TOML or UTF-8, other top-level keys, or `section`
            not a table of tables; the message names the file.
    """
    try:
        with open(path, "rb") as handle:
            document = tomllib.load(handle)
    except (OSError, ValueError) as exc:  # ValueError: bad TOML (TOMLDecodeError) or UTF-8
        raise error(f"{path}: {exc}") from None
    unknown = set(document) - {section}
    if unknown:
        raise error(f"{path}: unknown top-level keys {sorted(unknown)}")
    tables = document.get(section, {})
    if not isinstance(tables, dict):
        raise error(f"{path}: '{section}' must be a table of tables")
    return tables
