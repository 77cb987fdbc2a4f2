"""The connection options every `conveyor` command for people takes, declared once.

`conveyor worker` (worker SDK) and `conveyor schedule ...` (server commands) both
reach the broker through the public client, so they share these flags and their
environment variables; `client_settings(args)` turns them into Client keywords.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from conveyor._channel import DEFAULT_TARGET

__all__ = ["add_connection_arguments", "client_settings"]


def add_connection_arguments(
    parser: argparse.ArgumentParser, *, target_default: bool = True
) -> None:
    """--target, --token, --tls, --tls-ca, --tls-cert, --tls-key (and their env vars)."""
    target = os.environ.get("CONVEYOR_TARGET", DEFAULT_TARGET) if target_default else None
    parser.add_argument(
        "--target",
        default=target,
        help=f"broker address host:port [env CONVEYOR_TARGET; default {DEFAULT_TARGET}]",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("CONVEYOR_TOKEN") or None,
        help="bearer token for a broker started with --auth-token [env CONVEYOR_TOKEN]",
    )
    parser.add_argument(
        "--tls", action="store_true", help="use TLS with the system's CA certificates"
    )
    parser.add_argument("--tls-ca", help="PEM CA certificate to verify the broker (implies TLS)")
    parser.add_argument("--tls-cert", help="PEM client certificate, for mutual TLS")
    parser.add_argument("--tls-key", help="PEM private key of --tls-cert")


def client_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Client keywords from the connection arguments (only those given).

    Raises:
        ValueError: --tls-cert without --tls-key or the other way round.
    """
    if bool(args.tls_cert) != bool(args.tls_key):
        raise ValueError("--tls-cert and --tls-key go together")
    settings: dict[str, Any] = {}
    if args.token:
        settings["token"] = args.token
    if args.tls or args.tls_ca or args.tls_cert:
        settings["tls"] = True
    for key, value in (
        ("root_certificates", args.tls_ca),
        ("client_cert", args.tls_cert),
        ("client_key", args.tls_key),
    ):
        if value:
            settings[key] = _readable(value)
    return settings


def _readable(path: str) -> str:
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file")
    return path
