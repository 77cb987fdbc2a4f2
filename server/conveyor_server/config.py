"""Settings of `conveyor serve`: one table declares each flag, its CONVEYOR_* variable,
type, default and help (SERVE_OPTIONS); a value from the environment is parsed and
validated by exactly the function the flag uses."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

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


def format_duration(seconds: float) -> str:
    """Seconds as people write them: 30s, 250ms, 5m, 24h."""
    for unit, size in (("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if seconds >= size and (seconds / size).is_integer():
            return f"{int(seconds / size)}{unit}"
    if 0 < seconds < 1 and (seconds * 1000).is_integer():
        return f"{int(seconds * 1000)}ms"
    return f"{seconds:g}s"


def format_size(size: int) -> str:
    """Bytes as people write them: 32GiB, 1MiB, 600KiB, 1000."""
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift}{unit}"
    return str(size)


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
    database_url: str = ""  # set: the PostgreSQL store instead of LMDB in data_dir
    durability: str = "sync"
    max_store_bytes: int = 32 << 30
    max_waiters: int = 10_000
    shutdown_grace: float = 10.0
    log_level: str = "INFO"
    log_format: str = "text"
    metrics_listen: str = "127.0.0.1:9470"
    schedules_file: str = ""
    queues_file: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    auth_tokens: tuple[str, ...] = ()
    auth_tokens_file: str = ""
    broker: BrokerSettings = field(default_factory=BrokerSettings)

    @property
    def is_durable(self) -> bool:
        return self.durability == "sync"


def parse_listen(text: str) -> str:
    """'host:port' with a port in 0-65535 (0: any free port); IPv6 hosts in brackets."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"not a listen address: {text!r} (use host:port, e.g. 127.0.0.1:7470)")
    if int(port) > 65535:
        raise ValueError(f"port {port} of {text!r} is out of range (0-65535)")
    if ":" in host and not (host.startswith("[") and host.endswith("]")):
        raise ValueError(f"IPv6 host in {text!r} needs brackets, e.g. [::1]:7470")
    return f"{host}:{int(port)}"


def parse_optional_listen(text: str) -> str:
    """A listen address, or empty (the listener is off)."""
    return parse_listen(text) if text.strip() else ""


def choice(*allowed: str, fold: Callable[[str], str] = str.lower) -> Callable[[str], str]:
    """A parser accepting one of `allowed` (compared after `fold`)."""

    def parse(text: str) -> str:
        value = fold(text.strip())
        if value not in allowed:
            raise ValueError(f"{text!r} is not one of {', '.join(allowed)}")
        return value

    return parse


def at_least(parse: Callable[[str], Any], low: float, what: str) -> Callable[[str], Any]:
    """`parse`, then refuse values below `low`."""

    def checked(text: str) -> Any:
        value = parse(text)
        if value < low:
            raise ValueError(f"{text!r} is too small: {what}")
        return value

    return checked


def between(
    parse: Callable[[str], Any], low: float, high: float, what: str
) -> Callable[[str], Any]:
    """`parse`, then refuse values outside [low, high] (`what` says the range to people)."""

    def checked(text: str) -> Any:
        value = parse(text)
        if not low <= value <= high:
            raise ValueError(f"{text!r} is out of range: {what}")
        return value

    return checked


def _integer(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError(f"not a whole number: {text!r}") from None


def parse_database_url(text: str) -> str:
    """A postgresql:// URL (or empty: LMDB)."""
    text = text.strip()
    if text and not text.startswith(("postgresql://", "postgres://")):
        raise ValueError("expected a postgresql://user@host:port/database URL")
    return text


def _tokens(text: str) -> tuple[str, ...]:
    tokens = tuple(t.strip() for t in text.split(",") if t.strip())
    if text.strip() and not tokens:  # e.g. "," must not turn authentication off
        raise ValueError("names no token")
    return tokens


@dataclass(frozen=True, slots=True)
class ServeOption:
    """One `conveyor serve` setting: its flag, variable, parser, default and help."""

    flag: str
    target: str  # a ServeConfig field, or "broker.<BrokerSettings field>"
    help: str
    parse: Callable[[str], Any] = str
    show: Callable[[Any], str] = str  # the default as people write it

    @property
    def env(self) -> str:
        return "CONVEYOR_" + self.flag.lstrip("-").replace("-", "_").upper()

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    @property
    def default(self) -> Any:
        owner: Any = ServeConfig()
        for part in self.target.split("."):
            owner = getattr(owner, part)
        return owner


_POSITIVE_SIZE = at_least(parse_size, 1, "at least 1 byte")
_POSITIVE_COUNT = at_least(_integer, 1, "at least 1")
_HOUR = 3600.0
_LEASE_DURATION = between(parse_duration, 0.001, 24 * _HOUR, "1ms to 24h")
_WAIT = between(parse_duration, 0, _HOUR, "0s to 1h")
_RETENTION = between(parse_duration, 0, 10 * 8760 * _HOUR, "0s to 87600h (10 years)")

SERVE_OPTIONS: tuple[ServeOption, ...] = (
    ServeOption("--listen", "listen", "gRPC address host:port (port 0: any free port)",
                parse_listen),
    ServeOption("--data-dir", "data_dir", "LMDB data directory"),
    ServeOption("--database-url", "database_url",
                "postgresql:// URL: the PostgreSQL store shared by several brokers, instead "
                "of LMDB in --data-dir", parse_database_url),
    ServeOption("--durability", "durability",
                "sync: fsync every commit; nosync: flush about once a second",
                choice("sync", "nosync")),
    ServeOption("--max-store-bytes", "max_store_bytes", "largest the store may grow",
                _POSITIVE_SIZE, format_size),
    ServeOption("--max-payload-bytes", "broker.max_payload_bytes",
                "largest task payload or result", _POSITIVE_SIZE, format_size),
    ServeOption("--max-batch", "broker.max_batch",
                "most tasks per EnqueueBatch, Lease, Ack, Fail call", _POSITIVE_COUNT),
    ServeOption("--max-waiters", "max_waiters", "most parked long-poll calls",
                between(_integer, 0, 10_000_000, "0 to 10000000")),
    ServeOption("--max-wait", "broker.max_wait", "longest long-poll wait (Lease, GetResult)",
                _WAIT, format_duration),
    ServeOption("--default-lease-duration", "broker.default_lease_duration",
                "lease length for tasks that name none", _LEASE_DURATION, format_duration),
    ServeOption("--default-max-attempts", "broker.default_max_attempts",
                "attempts for tasks that name none", between(_integer, 1, 1000, "1 to 1000")),
    ServeOption("--result-retention", "broker.default_result_retention",
                "how long finished tasks and results are kept", _RETENTION, format_duration),
    ServeOption("--shutdown-grace", "shutdown_grace",
                "how long in-flight calls may finish after SIGTERM", _WAIT, format_duration),
    ServeOption("--log-level", "log_level", "DEBUG, INFO, WARNING or ERROR",
                choice("DEBUG", "INFO", "WARNING", "ERROR", fold=str.upper)),
    ServeOption("--log-format", "log_format",
                "text: one readable line per record; json: one JSON object per line",
                choice("text", "json")),
    ServeOption("--metrics-listen", "metrics_listen",
                "HTTP address host:port of Prometheus /metrics (empty: no metrics)",
                parse_optional_listen, lambda listen: listen or "off"),
    ServeOption("--schedules", "schedules_file",
                "TOML file of schedules, reapplied when it changes or on SIGHUP"),
    ServeOption("--queues-file", "queues_file",
                "TOML file of queue limits and pauses, reapplied when it changes or on SIGHUP"),
    ServeOption("--tls-cert", "tls_cert", "PEM certificate chain: serve TLS"),
    ServeOption("--tls-key", "tls_key", "PEM private key of --tls-cert"),
    ServeOption("--tls-client-ca", "tls_client_ca",
                "PEM CA: require client certificates it signed"),
    ServeOption("--auth-token", "auth_tokens",
                "require 'authorization: Bearer <token>'; several tokens comma-separated",
                _tokens, lambda tokens: "none"),
    ServeOption("--auth-tokens", "auth_tokens_file",
                "TOML file of tokens with roles and queues, reapplied when it changes or on "
                "SIGHUP"),
)  # fmt: skip


def config_from(
    values: dict[str, Any], options: Sequence[ServeOption] = SERVE_OPTIONS
) -> ServeConfig:
    """A ServeConfig from parsed option values keyed by `ServeOption.dest`."""
    top: dict[str, Any] = {}
    broker: dict[str, Any] = {}
    for option in options:
        owner, _, name = option.target.rpartition(".")
        (broker if owner == "broker" else top)[name or option.target] = values[option.dest]
    return ServeConfig(**top, broker=replace(BrokerSettings(), **broker))
