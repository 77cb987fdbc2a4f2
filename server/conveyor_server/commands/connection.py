"""How the commands for people reach a broker: the public `conveyor.Client`, with the same
--target / token / TLS options everywhere, and one-line errors.

--target defaults to $CONVEYOR_TARGET (else 127.0.0.1:7470), --token to $CONVEYOR_TOKEN.
Broker errors print one line: exit 2 for a refused argument (INVALID_ARGUMENT, or a bad
flag value), 1 for anything else (NOT_FOUND, UNAVAILABLE...).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any

from conveyor import Client
from conveyor.errors import ConveyorError, InvalidArgument

DEFAULT_TARGET = "127.0.0.1:7470"


class UsageError(Exception):
    """Bad input found by a command itself: one line on stderr, exit 2."""


def add_connection(parser: argparse.ArgumentParser) -> None:
    """--target, --token, TLS and --timeout."""
    group = parser.add_argument_group("connection")
    group.add_argument(
        "--target",
        default=os.environ.get("CONVEYOR_TARGET", DEFAULT_TARGET),
        help=f"broker address host:port [env CONVEYOR_TARGET; default {DEFAULT_TARGET}]",
    )
    group.add_argument(
        "--token",
        default=os.environ.get("CONVEYOR_TOKEN") or None,
        help="bearer token (--auth-token of the broker) [env CONVEYOR_TOKEN]",
    )
    group.add_argument("--tls", action="store_true", help="use TLS with the system roots")
    group.add_argument("--tls-ca", help="PEM file of the CA that signed the broker (implies TLS)")
    group.add_argument("--tls-cert", help="client certificate PEM file (mutual TLS)")
    group.add_argument("--tls-key", help="client key PEM file (mutual TLS)")
    group.add_argument("--timeout", type=float, default=30.0, help="seconds per call [30]")


def add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def client_from(args: argparse.Namespace) -> Client:
    if bool(args.tls_cert) != bool(args.tls_key):
        raise UsageError("--tls-cert and --tls-key go together")
    return Client(
        args.target,
        tls=bool(args.tls or args.tls_ca or args.tls_cert),
        root_certificates=args.tls_ca,
        client_cert=args.tls_cert,
        client_key=args.tls_key,
        token=args.token,
        timeout=args.timeout,
    )


def command(run: Callable[[argparse.Namespace, Client], int | None]) -> Callable[..., int]:
    """A command body that gets a connected Client; errors become one line and an exit code."""

    @functools.wraps(run)
    def wrapper(args: argparse.Namespace) -> int:
        try:
            with client_from(args) as client:
                return run(args, client) or 0
        except UsageError as exc:
            print(f"conveyor {args.command}: {exc}", file=sys.stderr)
            return 2
        except InvalidArgument as exc:
            print(f"conveyor {args.command}: {exc.message}", file=sys.stderr)
            return 2
        except ConveyorError as exc:
            print(f"conveyor {args.command}: {exc.message}", file=sys.stderr)
            return 1
        except OSError as exc:  # e.g. a TLS file that cannot be read
            print(f"conveyor {args.command}: {exc}", file=sys.stderr)
            return 2

    return wrapper


def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, default=_default, sort_keys=True)
    sys.stdout.write("\n")


def json_line(value: Any) -> str:
    return json.dumps(value, default=_default, sort_keys=True)


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if hasattr(value, "total_seconds"):
        return value.total_seconds()
    return str(value)


def when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment is not None else "-"


def age(seconds: float | None) -> str:
    """1.2s, 3m04s, 2h05m: how people write a duration."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"
