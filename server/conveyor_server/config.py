"""Settings of `conveyor serve`: flags, their CONVEYOR_* environment variables, and defaults."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from conveyor_server.core.settings import BrokerSettings

_DURATION = re.compile(r"(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>ms|s|m|h|d)?")
_SIZE = re.compile(r"(?P<number>\d+)\s*(?P<unit>[KMGT]i?B?)?", re.IGNORECASE)
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(text: str) -> float:
    """'30' or '30s', '250ms', '5m', '24h', '7d' -> seconds."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not a duration: {text!r} (use e.g. 30s, 250ms, 5m, 24h)")
    return float(match["number"]) * _DURATION_UNITS[match["unit"]]


def parse_size(text: str) -> int:
    """'1048576' or '1MiB', '64K', '32GiB' -> bytes (binary units)."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not a size: {text!r} (use e.g. 1048576, 1MiB, 32GiB)")
    unit = (match["unit"] or "").upper()[:1]
    return (
        int(match["number"]) * (1 << (10 * " KMGT".index(unit))) if unit else int(match["number"])
    )


@dataclass(frozen=True, slots=True)
class ServeConfig:
    listen: str = "127.0.0.1:7470"
    data_dir: str = "./data"
    durability: str = "sync"
    max_store_bytes: int = 32 << 30
    max_waiters: int = 10_000
    shutdown_grace: float = 10.0
    log_level: str = "INFO"
    schedules_file: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    auth_tokens: tuple[str, ...] = ()
    broker: BrokerSettings = field(default_factory=BrokerSettings)

    @property
    def is_durable(self) -> bool:
        return self.durability == "sync"
