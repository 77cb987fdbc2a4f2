"""Transport security and authorization: TLS (optionally mutual), bearer tokens and their roles.

When tokens are configured, every call but a health check must carry
`authorization: Bearer <token>`. No token or an unknown one: UNAUTHENTICATED. A known
token without the right to the RPC, or naming a queue (or a task in a queue) it is not
limited to: PERMISSION_DENIED. The roles (docs/protocol.md, "Authentication and roles"):

| role | may call |
|---|---|
| admin | everything, reflection included |
| producer | TaskService |
| worker | WorkerService, and GetTask / GetResult on TaskService |
| readonly | the Get* and List* RPCs of the conveyor.v1 services |

Finding the token: the presented token is hashed with SHA-256 and the digest looked up
in a dict keyed by the configured tokens' digests. The time that takes depends on the
digest, not on how much of the secret a guess got right, so it leaks nothing a guesser
could use (learning a prefix of a SHA-256 digest does not help find its preimage); no
raw token is ever compared or kept as a key. Tokens are never logged.

The check is a wrapper per RPC method built once (`authorized`), as `errors.guarded` is,
not a ServerInterceptor (which builds a handler per call). Tokens without queue limits
cost one SHA-256 and a dict lookup per call; a queue-limited token also has the request
checked, and each task it names by id costs a store read (its queue).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, NamedTuple

import grpc
from google.protobuf.descriptor import ServiceDescriptor

from conveyor_server.core.model import DEFAULT_QUEUE

ROLES = ("admin", "producer", "worker", "readonly")
#: Roles a token may hold with a list of queues; admin and readonly see every queue.
QUEUE_LIMITED_ROLES = ("producer", "worker")
#: Services every caller may use without a token.
OPEN_SERVICES = ("grpc.health.v1.Health",)
_API_PACKAGE = "conveyor.v1."
_TASK_SERVICE = "conveyor.v1.TaskService"
_WORKER_SERVICE = "conveyor.v1.WorkerService"
_NO_TOKEN = "missing or wrong bearer token (send metadata 'authorization: Bearer <token>')"
_BEARER = "Bearer "
_QUOTED = 64  # longest part of a caller's text quoted back in a message


def server_credentials(
    cert_file: str, key_file: str, client_ca_file: str = ""
) -> grpc.ServerCredentials:
    """TLS credentials; with a client CA, clients must present a certificate it signed."""
    client_ca = Path(client_ca_file).read_bytes() if client_ca_file else None
    return grpc.ssl_server_credentials(
        [(Path(key_file).read_bytes(), Path(cert_file).read_bytes())],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


def roles_for(service: str, method: str) -> frozenset[str]:
    """The roles that may call `service`/`method` (an open service needs none)."""
    roles = {"admin"}
    if service == _TASK_SERVICE:
        roles.add("producer")
        if method in ("GetTask", "GetResult"):
            roles.add("worker")  # reading the tasks it works on
    elif service == _WORKER_SERVICE:
        roles.add("worker")
    if service.startswith(_API_PACKAGE) and method.startswith(("Get", "List")):
        roles.add("readonly")
    return frozenset(roles)


@dataclass(frozen=True, slots=True)
class Grant:
    """What one configured token may do. `queues` None: every queue."""

    name: str  # for messages and logs; never the token itself
    role: str
    queues: frozenset[str] | None = None


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class TokenGate:
    """The configured grants by token digest; `replace` swaps them all at once (a reload)."""

    def __init__(self, grants: Mapping[bytes, Grant], queue_of: Callable[[str], str | None]):
        """`queue_of(task_id)`: the queue of an existing task, None if there is none."""
        self._grants = dict(grants)
        self.queue_of = queue_of

    def replace(self, grants: Mapping[bytes, Grant]) -> None:
        self._grants = dict(grants)  # one assignment: a call sees the old table or the new

    def grant_for(self, metadata: Sequence[tuple[str, Any]] | None) -> Grant | None:
        """The grant of the call's bearer token, None without a known one."""
        for key, value in metadata or ():
            if key == "authorization":
                if isinstance(value, str) and value.startswith(_BEARER):
                    return self._grants.get(token_digest(value[len(_BEARER) :]))
                return None
        return None


class _Scope(NamedTuple):
    """What a request touches: the queues it names, the tasks it names by id."""

    queues: Callable[[Any], Iterable[str]]
    task_ids: Callable[[Any], Iterable[str]]


def _none(request: Any) -> Iterable[str]:
    return ()


def _lease_ids(
    items: Sequence[str] = (), refs: Sequence[str] = ()
) -> Callable[[Any], Iterable[str]]:
    """Task ids in the fields `items` (messages with a `lease`) and `refs` (LeaseRefs)."""

    def ids(request: Any) -> Iterable[str]:
        for name in items:
            yield from (item.lease.task_id for item in getattr(request, name))
        for name in refs:
            yield from (ref.task_id for ref in getattr(request, name))

    return ids


def _named(queues: Iterable[str]) -> Iterable[str]:
    return (queue or DEFAULT_QUEUE for queue in queues)  # "" is the default queue


def _stream_queues(request: Any) -> Iterable[str]:
    return _named(request.open.queues) if request.HasField("open") else ()


#: For queue-limited tokens: what each RPC touches. An RPC missing here is refused to them
#: (the broker cannot tell which queues it touches), so a new RPC fails closed.
SCOPES: dict[str, _Scope] = {
    f"/{_TASK_SERVICE}/Enqueue": _Scope(lambda r: _named((r.task.queue,)), lambda r: (r.task.id,)),
    f"/{_TASK_SERVICE}/EnqueueBatch": _Scope(
        lambda r: _named(t.queue for t in r.tasks), lambda r: (t.id for t in r.tasks)
    ),
    f"/{_TASK_SERVICE}/GetTask": _Scope(_none, lambda r: (r.task_id,)),
    f"/{_TASK_SERVICE}/GetResult": _Scope(_none, lambda r: (r.task_id,)),
    f"/{_TASK_SERVICE}/CancelTask": _Scope(_none, lambda r: (r.task_id,)),
    f"/{_WORKER_SERVICE}/Lease": _Scope(lambda r: _named(r.queues), _none),
    f"/{_WORKER_SERVICE}/ExtendLease": _Scope(_none, _lease_ids(items=["leases"])),
    f"/{_WORKER_SERVICE}/Ack": _Scope(_none, _lease_ids(items=["acks"])),
    f"/{_WORKER_SERVICE}/Fail": _Scope(_none, _lease_ids(items=["failures"])),
    f"/{_WORKER_SERVICE}/Release": _Scope(_none, _lease_ids(refs=["leases"])),
    f"/{_WORKER_SERVICE}/StreamWork": _Scope(
        _stream_queues, _lease_ids(items=["acks", "failures", "extensions"], refs=["releases"])
    ),
}


def _quote(text: str) -> str:
    return repr(text[:_QUOTED] + ("…" if len(text) > _QUOTED else ""))


def queue_refusal(grant: Grant, scope: _Scope | None, request: Any, gate: TokenGate) -> str | None:
    """Why a queue-limited `grant` may not make this request, or None if it may."""
    allowed = grant.queues
    assert allowed is not None
    if scope is None:
        return f"token {grant.name!r} is limited to queues and may not call this RPC"
    for queue in scope.queues(request):
        if queue not in allowed:
            return f"token {grant.name!r} may not use queue {_quote(queue)}"
    for task_id in set(scope.task_ids(request)):
        home = gate.queue_of(task_id) if task_id else None
        if home is not None and home not in allowed:
            return (
                f"task {_quote(task_id)} is in queue {_quote(home)}, "
                f"which token {grant.name!r} may not use"
            )
    return None


def _refusal(
    grant: Grant | None, roles: frozenset[str], path: str
) -> tuple[grpc.StatusCode, str] | None:
    if grant is None:
        return grpc.StatusCode.UNAUTHENTICATED, _NO_TOKEN
    if grant.role not in roles:
        return (
            grpc.StatusCode.PERMISSION_DENIED,
            f"token {grant.name!r} (role {grant.role}) may not call {path}",
        )
    return None


def authorized(servicer: object, service: ServiceDescriptor, gate: TokenGate) -> Any:
    """The servicer's RPC methods for `service`, each refusing calls its token may not make.

    Returns a namespace of the wrapped methods, to pass to `errors.guarded` or to a
    generated `add_*Servicer_to_server` in place of the servicer.
    """
    methods = {}
    for method in service.methods:
        path = f"/{service.full_name}/{method.name}"
        inner = getattr(servicer, method.name)
        roles = roles_for(service.full_name, method.name)
        scope = SCOPES.get(path)
        if method.client_streaming and method.server_streaming:
            methods[method.name] = _checked_stream(inner, path, roles, scope, gate)
        elif not method.client_streaming and not method.server_streaming:
            methods[method.name] = _checked_unary(inner, path, roles, scope, gate)
        else:
            raise TypeError(f"{path}: only unary and bidirectional methods are wrapped")
    return SimpleNamespace(**methods)


def _checked_unary(
    inner: Any, path: str, roles: frozenset[str], scope: _Scope | None, gate: TokenGate
) -> Any:
    async def checked(request: Any, context: grpc.aio.ServicerContext) -> Any:
        grant = gate.grant_for(context.invocation_metadata())
        refusal = _refusal(grant, roles, path)
        if refusal is not None:
            await context.abort(*refusal)
        assert grant is not None
        if grant.queues is not None:
            denied = queue_refusal(grant, scope, request, gate)
            if denied is not None:
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, denied)
        return await inner(request, context)

    return checked


def _checked_stream(
    inner: Any, path: str, roles: frozenset[str], scope: _Scope | None, gate: TokenGate
) -> Any:
    async def checked(requests: Any, context: grpc.aio.ServicerContext) -> Any:
        grant = gate.grant_for(context.invocation_metadata())
        refusal = _refusal(grant, roles, path)
        if refusal is not None:
            await context.abort(*refusal)
        assert grant is not None
        if grant.queues is not None:
            requests = _scoped(requests, grant, scope, gate, context)
        async for response in inner(requests, context):
            yield response

    return checked


async def _scoped(
    requests: AsyncIterator[Any],
    grant: Grant,
    scope: _Scope | None,
    gate: TokenGate,
    context: grpc.aio.ServicerContext,
) -> AsyncIterator[Any]:
    """The stream's requests, ending the call PERMISSION_DENIED at one the grant may not send."""
    async for request in requests:
        denied = queue_refusal(grant, scope, request, gate)
        if denied is not None:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, denied)
        yield request
