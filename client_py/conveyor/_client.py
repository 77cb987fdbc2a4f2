"""The blocking client: the shared methods (_core), each run to its end on the calling thread."""

from __future__ import annotations

import time
from typing import Any

import grpc

from conveyor._core import ClientCore
from conveyor._operation import Call, Parallel, Performed, Step, install
from conveyor.errors import ConveyorError, Unavailable, error_from_rpc

__all__ = ["Client"]


class Client(ClientCore):
    """A blocking connection to a broker; thread-safe, one channel.

    Arguments as ClientCore: target ("host:port", default 127.0.0.1:7470), tls,
    root_certificates, client_cert, client_key, token, keepalive, timeout,
    retry_attempts, serializer.
    """

    _grpc = grpc

    def __init__(self, target: str = "127.0.0.1:7470", **settings: Any) -> None:
        super().__init__(target, **settings)

    def close(self) -> None:
        """Close the channel; calls made afterwards raise Unavailable."""
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _perform(self, step: Step) -> Performed:
        """Do one step of an operation: its reply, or the error to hand back to it."""
        try:
            if isinstance(step, Call):
                return self._invoke(step), None
            if isinstance(step, Parallel):  # one after the other: this thread is the client's
                return [self._invoke(call) for call in step.calls], None
            time.sleep(step.seconds)
        except ConveyorError as exc:
            return None, exc
        return None, None

    def _invoke(self, call: Call) -> Any:
        try:
            return call.method(call.request, timeout=call.timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, is_lease_call=call.is_lease_call) from None
        except ValueError as exc:  # "Cannot invoke RPC on closed channel!"
            raise Unavailable(str(exc)) from None


install(Client, is_async=False)
