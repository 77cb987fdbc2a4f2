"""RpcMetrics: calls started and handled by service, method and code, and their latency.

The RPC guard (rpc/errors.py `guarded`) takes one MethodStats per method when the
server is built and reports each call to it: a dict update and a histogram
observation. Names follow the usual gRPC server metrics (grpc_server_started_total,
grpc_server_handled_total, grpc_server_handling_seconds).
"""

from __future__ import annotations

from conveyor_server.service.metrics.histogram import RPC_SECONDS, Histogram


class MethodStats:
    """One RPC method's counts; reported from the event loop."""

    __slots__ = ("handled", "in_flight", "latency", "method", "rpc_type", "service", "started")

    def __init__(self, service: str, method: str, rpc_type: str) -> None:
        self.service = service
        self.method = method
        self.rpc_type = rpc_type
        self.started = 0
        self.in_flight = 0
        self.handled: dict[str, int] = {}
        self.latency = Histogram(RPC_SECONDS)

    def start(self) -> None:
        self.started += 1
        self.in_flight += 1

    def finish(self, code: str, seconds: float) -> None:
        """`code` is a gRPC status code name (OK, NOT_FOUND, ...)."""
        self.in_flight -= 1
        handled = self.handled
        handled[code] = handled.get(code, 0) + 1
        self.latency.observe(seconds)


class RpcMetrics:
    def __init__(self) -> None:
        self.methods: list[MethodStats] = []

    def method(self, service: str, method: str, rpc_type: str) -> MethodStats:
        """The stats of one method (`rpc_type`: unary, bidi_stream, ...), made once."""
        for stats in self.methods:
            if (stats.service, stats.method) == (service, method):
                return stats
        stats = MethodStats(service, method, rpc_type)
        self.methods.append(stats)
        return stats
