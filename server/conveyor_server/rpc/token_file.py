"""The tokens file (`conveyor serve --auth-tokens FILE`): TOML parsing and the change watcher.

Format (one table per token, keyed by a name that messages and logs use)::

    [tokens.ci-producer]
    token_sha256 = "9f86d08…"   # hex SHA-256 of the token: the file holds no secret
    role = "producer"           # admin | producer | worker | readonly
    queues = ["images"]         # producer and worker only; leave out for every queue

    [tokens.ops]
    token = "s3cret"            # or the token itself
    role = "admin"

`printf %s "$TOKEN" | sha256sum` gives `token_sha256`. Tokens given with `--auth-token`
are admin tokens and stay whatever the file says. The watcher stats the file once a
second and SIGHUP forces a reload; a file that is invalid at start-up stops the broker,
one that becomes invalid later is logged and the last good tokens stay in force.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from conveyor_server.core.errors import InvalidArgument
from conveyor_server.core.settings import BrokerSettings
from conveyor_server.core.validation import check_name
from conveyor_server.rpc.security import QUEUE_LIMITED_ROLES, ROLES, Grant, token_digest
from conveyor_server.service.background import FileWatch, read_tables

log = logging.getLogger("conveyor.auth")

_KEYS = {"token", "token_sha256", "role", "queues"}
_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{64}")
_TOKEN = re.compile(r"[\x21-\x7e]+")  # what a gRPC metadata value carries after "Bearer "

Grants = dict[bytes, Grant]


class TokenFileError(InvalidArgument):
    """The tokens file cannot be read or declares an invalid token."""


def flag_grants(tokens: Sequence[str]) -> Grants:
    """The `--auth-token` tokens: admin, named by their position (never by their value)."""
    return {token_digest(t): Grant(f"--auth-token[{i}]", "admin") for i, t in enumerate(tokens)}


def load_token_file(path: str | os.PathLike[str], fixed: Mapping[bytes, Grant] = {}) -> Grants:
    """The file's grants by token digest, plus `fixed` (the `--auth-token` ones).

    Raises:
        TokenFileError: unreadable file, bad TOML, unknown keys, a bad role or queue,
            or one token declared twice; the message names the file and the entry.
    """
    tables = read_tables(path, "tokens", TokenFileError)
    grants = dict(fixed)
    for name, table in tables.items():
        try:
            digest, grant = _entry(name, table)
        except ValueError as exc:
            raise TokenFileError(f"{path}: token {name!r}: {exc}") from None
        if digest in grants:
            raise TokenFileError(
                f"{path}: token {name!r} is the same token as {grants[digest].name!r}"
            )
        grants[digest] = grant
    return grants


def _entry(name: str, table: Any) -> tuple[bytes, Grant]:
    if not isinstance(table, dict):
        raise ValueError("must be a table")
    unknown = set(table) - _KEYS
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)}")
    if ("token" in table) == ("token_sha256" in table):
        raise ValueError("give exactly one of token and token_sha256")
    if "token" in table:
        token = table["token"]
        if not isinstance(token, str) or not _TOKEN.fullmatch(token):
            raise ValueError("token: must be printable ASCII without spaces")
        digest = token_digest(token)
    else:
        hex_digest = table["token_sha256"]
        if not isinstance(hex_digest, str) or not _HEX_DIGEST.fullmatch(hex_digest):
            raise ValueError("token_sha256: must be 64 hex digits (printf %s TOKEN | sha256sum)")
        digest = bytes.fromhex(hex_digest)
    role = table.get("role")
    if role not in ROLES:
        raise ValueError(f"role: {role!r} is not one of {', '.join(ROLES)}")
    return digest, Grant(name, role, _queues(table, role))


def _queues(table: dict[str, Any], role: str) -> frozenset[str] | None:
    if "queues" not in table:
        return None
    queues = table["queues"]
    if role not in QUEUE_LIMITED_ROLES:
        raise ValueError(f"queues: a {role} token sees every queue; only producer and "
                         "worker tokens are limited to queues")  # fmt: skip
    if not isinstance(queues, list) or not queues:
        raise ValueError("queues: a non-empty list of queue names (leave it out for every queue)")
    settings = BrokerSettings()
    for i, queue in enumerate(queues):
        if not isinstance(queue, str):
            raise ValueError(f"queues[{i}]: must be a string")
        try:
            check_name(queue, f"queues[{i}]", settings)
        except InvalidArgument as exc:
            raise ValueError(str(exc)) from None
    return frozenset(queues)


def _changes(old: Mapping[bytes, Grant], new: Mapping[bytes, Grant]) -> str:
    """What a reload changed, by token name (never the token)."""
    before = {g.name: (d, g) for d, g in old.items()}
    after = {g.name: (d, g) for d, g in new.items()}
    added = sorted(after.keys() - before.keys())
    removed = sorted(before.keys() - after.keys())
    changed = sorted(n for n in after.keys() & before.keys() if after[n] != before[n])
    return f"added {added}, removed {removed}, changed {changed}"


class TokenFileWatcher:
    """Loads the file at start, then reapplies it whenever its stat changes or on `reload()`."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        fixed: Mapping[bytes, Grant] = {},
        interval: float = 1.0,
    ) -> None:
        self.path = Path(path)
        self._fixed = dict(fixed)
        self._interval = interval
        self._current: Grants = {}
        self._apply: Callable[[Grants], None] = lambda grants: None
        self._watch = FileWatch(path, self._reapply, what="tokens", log=log, interval=interval)

    def load(self) -> Grants:
        """The grants now in the file (with the fixed ones); call before `start`.

        Raises:
            TokenFileError: the file is unreadable or invalid.
        """
        self._watch.mark_seen()
        self._current = load_token_file(self.path, self._fixed)
        if len(self._current) == len(self._fixed):
            log.warning("%s declares no tokens", self.path)
        return self._current

    def start(self, apply: Callable[[Grants], None]) -> None:
        """Watch the file; `apply` gets every good version that differs from the last."""
        self._apply = apply
        self._watch.start()

    async def stop(self) -> None:
        await self._watch.stop()

    def reload(self) -> None:
        """Reload now (SIGHUP), whether or not the file looks changed."""
        self._watch.reload()

    async def _reapply(self) -> None:
        grants = load_token_file(self.path, self._fixed)
        if grants != self._current:
            log.info("tokens file applied: %s", _changes(self._current, grants))
            self._current = grants
            self._apply(grants)
