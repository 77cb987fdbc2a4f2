"""The queues file (`conveyor serve --queues-file FILE`): TOML parsing, checking and the watcher.

Format (one table per queue, keyed by its name)::

    [queues.emails]
    rate = 10              # tasks leased per second, cluster-wide (a number; 0: no limit)
    burst = 20             # bucket size (0: max(1, ceil(rate)))
    concurrency = 5        # most tasks LEASED at once (0: no limit)
    key_concurrency = 1    # most tasks LEASED at once per concurrency_key (0: no limit)
    paused = false         # absent: left as it is

A listed queue's limits are the file's whole say: a limit left out of its table is
"no limit", so an empty `[queues.emails]` clears them all. `paused` changes the queue
only when present, so `conveyor pause` during an incident survives a reload that does
not mention it. A queue dropped from the file keeps the settings it has (the file names
no owner of a queue, so nothing would tell a restarted broker what the previous file
said); the watcher logs the names, and `conveyor limit QUEUE --clear` clears them.

The whole file is read and checked before anything is applied: a bad file applies
nothing. The watcher stats the file once a second and SIGHUP asks for a reload.
"""

from __future__ import annotations

import logging
import math
import os
import tomllib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conveyor_server.core.errors import InvalidArgument
from conveyor_server.core.settings import BrokerSettings
from conveyor_server.core.validation import check_name
from conveyor_server.service.background import FileWatch

log = logging.getLogger("conveyor.queues")

#: Counts on the wire are uint32 (QueueLimits in queue_service.proto).
MAX_COUNT = (1 << 32) - 1
#: The limits a table may set, and whether each is a count (a whole number) or a rate.
LIMIT_KEYS: dict[str, type] = {
    "rate": float,
    "burst": int,
    "concurrency": int,
    "key_concurrency": int,
}
_KEYS = {*LIMIT_KEYS, "paused"}


class QueueFileError(InvalidArgument):
    """The queues file cannot be read or declares an invalid queue setting."""


@dataclass(frozen=True, slots=True)
class QueueSetting:
    """What the file says of one queue: its limits (0: none) and, if given, its pause."""

    name: str
    rate: float = 0.0
    burst: int = 0
    concurrency: int = 0
    key_concurrency: int = 0
    paused: bool | None = None

    def limits(self) -> dict[str, float | int]:
        """The limits by name, in LIMIT_KEYS order."""
        return {key: getattr(self, key) for key in LIMIT_KEYS}


def load_queue_file(
    path: str | os.PathLike[str], settings: BrokerSettings | None = None
) -> list[QueueSetting]:
    """Parse and check the file; queue names are checked as the broker checks them.

    Raises:
        QueueFileError: unreadable file, bad TOML, unknown keys, bad values or names;
            the message names the file and the queue.
    """
    try:
        with open(path, "rb") as handle:
            document = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise QueueFileError(f"{path}: {exc}") from None
    unknown = set(document) - {"queues"}
    if unknown:
        raise QueueFileError(f"{path}: unknown top-level keys {sorted(unknown)}")
    tables = document.get("queues", {})
    if not isinstance(tables, dict):
        raise QueueFileError(f"{path}: 'queues' must be a table of tables")
    checked = settings or BrokerSettings()
    found = []
    for name, table in tables.items():
        try:
            check_name(name, "name", checked)
            found.append(_setting(name, table))
        except (ValueError, InvalidArgument) as exc:
            raise QueueFileError(f"{path}: queue {name!r}: {exc}") from None
    return found


def _setting(name: str, table: Any) -> QueueSetting:
    if not isinstance(table, dict):
        raise ValueError("must be a table ([queues.<name>])")
    unknown = set(table) - _KEYS
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)} (known: {', '.join(sorted(_KEYS))})")
    values: dict[str, Any] = {key: _limit(key, table[key]) for key in LIMIT_KEYS if key in table}
    paused = table.get("paused")
    if paused is not None and not isinstance(paused, bool):
        raise ValueError(f"paused: {paused!r} is not true or false")
    return QueueSetting(name=name, paused=paused, **values)


def _limit(key: str, value: Any) -> float | int:
    """A rate: a finite number >= 0. A count: a whole number 0..MAX_COUNT."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{key}: {value!r} is not a number")
    if LIMIT_KEYS[key] is float:
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{key}: {value!r} must be a finite number, 0 or more")
        return float(value)
    if not isinstance(value, int):
        raise ValueError(f"{key}: {value!r} is not a whole number")
    if not 0 <= value <= MAX_COUNT:
        raise ValueError(f"{key}: {value} is out of range (0 to {MAX_COUNT})")
    return value


class QueueFileWatcher:
    """Applies the file at start, then whenever its stat changes or `reload()` is called."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        apply: Callable[[Sequence[QueueSetting]], Awaitable[object]],
        settings: BrokerSettings | None = None,
        interval: float = 1.0,
    ) -> None:
        self.path = Path(path)
        self._apply = apply
        self._settings = settings
        self._watch = FileWatch(path, self._reapply, what="queues", log=log, interval=interval)

    async def start(self) -> None:
        """Load and apply the file once; a bad file at startup is an error, not a warning.

        Raises:
            QueueFileError: the file is unreadable or invalid.
        """
        self._watch.mark_seen()
        await self._reapply()
        self._watch.start()

    async def stop(self) -> None:
        await self._watch.stop()

    def reload(self) -> None:
        """Reload now (SIGHUP), whether or not the file looks changed."""
        self._watch.reload()

    async def _reapply(self) -> None:
        await self._apply(load_queue_file(self.path, self._settings))
