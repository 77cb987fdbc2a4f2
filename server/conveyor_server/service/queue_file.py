"""The queues file (`conveyor serve --queues-file FILE`): TOML parsing, checking and the watcher.

Format (one table per queue, keyed by its name)::

    [queues.emails]
    rate = 10              # tasks leased per second, cluster-wide (a number; 0: no limit)
    burst = 20             # bucket size (0: max(1, ceil(rate))); only with a rate
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
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from conveyor_server.core.errors import InvalidArgument
from conveyor_server.core.flow import LIMIT_FIELDS, QueueLimits, check_limits
from conveyor_server.core.queues import QueueUpdate
from conveyor_server.core.settings import BrokerSettings
from conveyor_server.core.validation import check_name
from conveyor_server.service.background import FileWatch, read_tables
from conveyor_server.service.queue_ops import QueueOps

log = logging.getLogger("conveyor.queues")

_KEYS = {*LIMIT_FIELDS, "paused"}


class QueueFileError(InvalidArgument):
    """The queues file cannot be read or declares an invalid queue setting."""


@dataclass(frozen=True, slots=True)
class QueueSetting:
    """What the file says of one queue: its limits (0: none) and, if given, its pause."""

    name: str
    limits: QueueLimits = field(default_factory=QueueLimits)
    paused: bool | None = None


def load_queue_file(
    path: str | os.PathLike[str], settings: BrokerSettings | None = None
) -> list[QueueSetting]:
    """Parse and check the file; queue names are checked as the broker checks them.

    Raises:
        QueueFileError: unreadable file, bad TOML, unknown keys, bad values or names;
            the message names the file and the queue.
    """
    tables = read_tables(path, "queues", QueueFileError)
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
    values: dict[str, Any] = {key: _limit(key, table[key]) for key in LIMIT_FIELDS if key in table}
    limits = QueueLimits(**values)
    check_limits(limits, prefix="")  # the broker's own checks (e.g. its largest rate)
    if limits.burst and not limits.rate:
        raise ValueError("burst: burst needs a rate (set rate too)")
    paused = table.get("paused")
    if paused is not None and not isinstance(paused, bool):
        raise ValueError(f"paused: {paused!r} is not true or false")
    return QueueSetting(name, limits, paused)


def _limit(key: str, value: Any) -> float | int:
    """The TOML value's type: rate any number (as float), counts whole numbers."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{key}: {value!r} is not a number")
    if key == "rate":
        return float(value)
    if not isinstance(value, int):
        raise ValueError(f"{key}: {value!r} is not a whole number")
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


class QueueFileApplier:
    """Applies the file through QueueOps.update, the UpdateQueue path; says what changed.

    Queues whose stored settings already equal the file's are not written. It remembers
    the names of the last file applied, to log the queues a reload no longer lists.
    """

    def __init__(self, ops: QueueOps) -> None:
        self._ops = ops
        self._listed: set[str] | None = None

    async def __call__(self, declared: Sequence[QueueSetting]) -> None:
        changed = []
        for setting in declared:
            info = self._ops.admin.queue(setting.name)
            paused = info.is_paused if setting.paused is None else setting.paused
            if info.limits == setting.limits and info.is_paused == paused:
                continue
            update = QueueUpdate(limits=asdict(setting.limits), paused=setting.paused)
            await self._ops.update(setting.name, update)
            changed.append(f"{setting.name} ({_describe(setting.limits, paused)})")
        if changed:
            log.info("queues file applied: %s", "; ".join(changed))
        names = {s.name for s in declared}
        dropped = sorted(self._listed - names) if self._listed is not None else []
        if dropped:
            log.warning(
                "queues file: %s no longer listed; their settings stay as they are "
                "(conveyor limit QUEUE --clear clears them)",
                ", ".join(dropped),
            )
        self._listed = names


def _describe(limits: QueueLimits, paused: bool) -> str:
    values = [f"{key} {value:g}" for key, value in asdict(limits).items() if value]
    return ", ".join([*values, "paused" if paused else "not paused"])
