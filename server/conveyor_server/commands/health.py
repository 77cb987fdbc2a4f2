"""`conveyor health`: the gRPC health check; exit 0 when SERVING, 1 otherwise (Docker's
HEALTHCHECK runs it). Connection options as every command (target, token, TLS)."""

from __future__ import annotations

import argparse
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conveyor_server.commands.connection import add_connection, add_json, client_from, print_json


def _run_health(args: argparse.Namespace) -> int:
    client = client_from(args)
    s = client.settings
    client.close()
    channel = (
        grpc.secure_channel(s.target, s.credentials(), s.options())
        if s.is_secure
        else grpc.insecure_channel(s.target, s.options())
    )
    try:
        response = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout
        )
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    except grpc.RpcError as exc:
        status = f"UNREACHABLE ({exc.code().name}: {exc.details()})"  # type: ignore[attr-defined]
    finally:
        channel.close()
    if args.json:
        print_json({"target": s.target, "service": args.service, "status": status})
    else:
        print(f"{s.target}: {status}")
    return 0 if status == "SERVING" else 1


def _add(subparsers: Any) -> None:
    p = subparsers.add_parser("health", help="gRPC health check: exit 0 if SERVING")
    p.add_argument("--service", default="", help="service name ['' = the whole broker]")
    add_json(p)
    add_connection(p)
    p.set_defaults(run=_run_health, timeout=5.0)


SUBCOMMANDS = [_add]
