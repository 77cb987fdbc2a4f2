"""The `conveyor` command: `conveyor serve` and the other subcommands.

Every `serve` flag can also come from an environment variable named
CONVEYOR_<FLAG> (e.g. --data-dir -> CONVEYOR_DATA_DIR); a flag on the command
line wins over the variable.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from conveyor_server.config import ServeConfig, parse_duration, parse_size
from conveyor_server.core.settings import BrokerSettings

_DEFAULTS = ServeConfig()
_BROKER = BrokerSettings()


def _env_option(
    parser: argparse.ArgumentParser,
    flag: str,
    *,
    default: Any,
    help: str,
    type: Callable[[str], Any] = str,
    **kwargs: Any,
) -> None:
    env_name = "CONVEYOR_" + flag.lstrip("-").replace("-", "_").upper()
    raw = os.environ.get(env_name)
    value = default
    if raw is not None:
        try:
            value = type(raw)
        except ValueError as exc:
            parser.error(f"{env_name}: {exc}")
    parser.add_argument(
        flag,
        default=value,
        type=type,
        help=f"{help} [env {env_name}; default {default}]",
        **kwargs,
    )


def _add_serve(subparsers: Any) -> None:
    p = subparsers.add_parser("serve", help="run the broker daemon")
    _env_option(p, "--listen", default=_DEFAULTS.listen, help="gRPC address host:port")
    _env_option(p, "--data-dir", default=_DEFAULTS.data_dir, help="LMDB data directory")
    _env_option(
        p,
        "--durability",
        default=_DEFAULTS.durability,
        choices=["sync", "nosync"],
        help="sync: fsync every commit; nosync: flush about once a second",
    )
    _env_option(
        p,
        "--max-store-bytes",
        default=_DEFAULTS.max_store_bytes,
        type=parse_size,
        help="largest the store may grow, e.g. 32GiB",
    )
    _env_option(
        p,
        "--max-payload-bytes",
        default=_BROKER.max_payload_bytes,
        type=parse_size,
        help="largest task payload or result",
    )
    _env_option(
        p,
        "--max-batch",
        default=_BROKER.max_batch,
        type=int,
        help="most tasks per EnqueueBatch, Lease, Ack, Fail call",
    )
    _env_option(
        p,
        "--max-waiters",
        default=_DEFAULTS.max_waiters,
        type=int,
        help="most parked long-poll calls",
    )
    _env_option(
        p,
        "--max-wait",
        default=_BROKER.max_wait,
        type=parse_duration,
        help="longest long-poll wait (Lease, GetResult)",
    )
    _env_option(
        p,
        "--default-lease-duration",
        default=_BROKER.default_lease_duration,
        type=parse_duration,
        help="lease length for tasks that name none",
    )
    _env_option(
        p,
        "--default-max-attempts",
        default=_BROKER.default_max_attempts,
        type=int,
        help="attempts for tasks that name none",
    )
    _env_option(
        p,
        "--result-retention",
        default=_BROKER.default_result_retention,
        type=parse_duration,
        help="how long finished tasks and results are kept",
    )
    _env_option(
        p,
        "--shutdown-grace",
        default=_DEFAULTS.shutdown_grace,
        type=parse_duration,
        help="how long in-flight calls may finish after SIGTERM",
    )
    _env_option(p, "--log-level", default=_DEFAULTS.log_level, help="DEBUG, INFO, WARNING")
    _env_option(
        p,
        "--schedules",
        default=_DEFAULTS.schedules_file,
        help="TOML file of schedules, reapplied when it changes or on SIGHUP",
    )
    _env_option(p, "--tls-cert", default="", help="PEM certificate chain: serve TLS")
    _env_option(p, "--tls-key", default="", help="PEM private key of --tls-cert")
    _env_option(
        p, "--tls-client-ca", default="", help="PEM CA: require client certificates it signed"
    )
    _env_option(
        p,
        "--auth-token",
        default="",
        help="require 'authorization: Bearer <token>'; several tokens comma-separated",
    )
    p.set_defaults(run=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    from conveyor_server.app import serve
    from conveyor_server.core.errors import ConveyorError

    if bool(args.tls_cert) != bool(args.tls_key):
        print("conveyor: --tls-cert and --tls-key go together", file=sys.stderr)
        return 2
    if args.tls_client_ca and not args.tls_cert:
        print("conveyor: --tls-client-ca needs --tls-cert and --tls-key", file=sys.stderr)
        return 2
    auth_tokens = tuple(t.strip() for t in args.auth_token.split(",") if t.strip())
    if args.auth_token.strip() and not auth_tokens:  # e.g. "," would turn auth off
        print("conveyor: --auth-token names no token", file=sys.stderr)
        return 2

    config = ServeConfig(
        listen=args.listen,
        data_dir=args.data_dir,
        durability=args.durability,
        max_store_bytes=args.max_store_bytes,
        max_waiters=args.max_waiters,
        shutdown_grace=args.shutdown_grace,
        log_level=args.log_level,
        schedules_file=args.schedules,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
        auth_tokens=auth_tokens,
        broker=replace(
            _BROKER,
            max_payload_bytes=args.max_payload_bytes,
            max_batch=args.max_batch,
            max_wait=args.max_wait,
            default_lease_duration=args.default_lease_duration,
            default_max_attempts=args.default_max_attempts,
            default_result_retention=args.result_retention,
        ),
    )
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        asyncio.run(serve(config))
    except ConveyorError as exc:  # e.g. data dir locked, schema mismatch: say it, no traceback
        print(f"conveyor: {exc}", file=sys.stderr)
        return 2
    return 0


def _add_bench(subparsers: Any) -> None:
    p = subparsers.add_parser("bench", help="measure throughput against a fresh local broker")
    from bench.run import add_arguments, run

    add_arguments(p)
    p.set_defaults(run=run)


#: Each adds one subcommand; other modules append theirs here.
SUBCOMMANDS: list[Callable[[Any], None]] = [_add_serve, _add_bench]
SUBCOMMANDS.append(__import__("conveyor_worker._cli", fromlist=["_cli"]).add_worker_command)
SUBCOMMANDS.extend(__import__("conveyor_server.commands.schedule", fromlist=["_"]).SUBCOMMANDS)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="conveyor", description="Conveyor task broker")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for add in SUBCOMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    sys.exit(args.run(args))
