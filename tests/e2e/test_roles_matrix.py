"""Token roles, every caller x every RPC, against a real `conveyor serve` with mutual TLS.

The RPCs come from the protobuf service descriptors (every conveyor.v1 service, health and
reflection), so a new RPC is called here automatically, and `ROLES_TABLE` must say who may
call it (docs/protocol.md, "Authentication and roles") before this passes. Requests are
valid or merely INVALID_ARGUMENT: what counts is whether the broker refuses the caller.
"""

from __future__ import annotations

import hashlib
import importlib
import pkgutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

import conveyor.v1
from conveyor.v1 import task_pb2, task_service_pb2, task_service_pb2_grpc
from conveyor.v1 import worker_service_pb2 as ws

TASK = "/conveyor.v1.TaskService/"
WORKER = "/conveyor.v1.WorkerService/"
SCHEDULE = "/conveyor.v1.ScheduleService/"
QUEUE = "/conveyor.v1.QueueService/"
REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/"
HEALTH = "/grpc.health.v1.Health/"

_SCHEDULE_WRITES = ("CreateSchedule", "UpdateSchedule", "DeleteSchedule", "PauseSchedule",
                    "ResumeSchedule", "TriggerSchedule")  # fmt: skip
#: Who may call what: the table in docs/protocol.md, written out per RPC (admin: all).
ROLES_TABLE: dict[str, set[str]] = {
    TASK + "Enqueue": {"admin", "producer"},
    TASK + "EnqueueBatch": {"admin", "producer"},
    TASK + "GetTask": {"admin", "producer", "worker", "readonly"},
    TASK + "GetResult": {"admin", "producer", "worker", "readonly"},
    TASK + "CancelTask": {"admin", "producer"},
    **{
        WORKER + m: {"admin", "worker"}
        for m in ("Lease", "ExtendLease", "Ack", "Fail", "Release", "StreamWork")
    },
    **{SCHEDULE + m: {"admin"} for m in _SCHEDULE_WRITES},
    SCHEDULE + "GetSchedule": {"admin", "readonly"},
    SCHEDULE + "ListSchedules": {"admin", "readonly"},
    **{
        QUEUE + m: {"admin", "readonly"}
        for m in ("ListQueues", "GetQueue", "ListTasks", "ListWorkers")
    },
    **{
        QUEUE + m: {"admin"}
        for m in (
            "PauseQueue",
            "ResumeQueue",
            "UpdateQueue",
            "PurgeQueue",
            "RetryTasks",
            "DeleteTask",
        )
    },
    REFLECTION + "ServerReflectionInfo": {"admin"},
}
OPEN = (HEALTH,)
ALLOWED_QUEUE = "images"
OTHER_QUEUE = "other"
#: Callers with a token: role, or role@queue for a token limited to that queue.
TOKENS = {
    "admin": "admin-secret",
    "producer": "producer-secret",
    "worker": "worker-secret",
    "readonly": "readonly-secret",
    f"producer@{ALLOWED_QUEUE}": "images-producer-secret",
    f"worker@{ALLOWED_QUEUE}": "images-worker-secret",
}
TLS_REFUSED = ("tls: no client certificate", "tls: certificate from another CA")
REFUSALS = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
NOT_AN_ANSWER = (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.UNAVAILABLE)


def all_methods() -> list[MethodDescriptor]:
    """Every RPC the broker serves, from the descriptors of every conveyor.v1 module."""
    services: list[ServiceDescriptor] = []
    for info in pkgutil.iter_modules(conveyor.v1.__path__):
        if info.name.endswith("_pb2"):
            module = importlib.import_module(f"conveyor.v1.{info.name}")
            services += module.DESCRIPTOR.services_by_name.values()
    services += health_pb2.DESCRIPTOR.services_by_name.values()
    services += reflection_pb2.DESCRIPTOR.services_by_name.values()
    return [method for service in services for method in service.methods]


def path_of(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


@dataclass(frozen=True)
class Outcome:
    caller: str
    path: str
    variant: str  # "in": touches only ALLOWED_QUEUE; anything else touches OTHER_QUEUE too
    code: grpc.StatusCode


def expected(caller: str, path: str, variant: str, table: dict[str, set[str]]) -> Any:
    """The code a refusal must have, or None when the call must not be refused."""
    if caller in TLS_REFUSED:
        return grpc.StatusCode.UNAVAILABLE  # the handshake fails: no RPC is reached
    if path.startswith(OPEN):
        return None
    if caller not in TOKENS:
        return grpc.StatusCode.UNAUTHENTICATED
    role, _, queue = caller.partition("@")
    if role != "admin" and role not in table[path]:
        return grpc.StatusCode.PERMISSION_DENIED
    if queue and variant != "in":
        return grpc.StatusCode.PERMISSION_DENIED
    return None


@dataclass
class Tally:
    calls: int = 0
    unexpected_accepts: int = 0  # should have been refused, was not
    wrong_refusals: int = 0  # refused, with the other code
    unexpected_refusals: int = 0  # authorised, yet refused (or no real answer)
    violations: list[str] | None = None


def check_matrix(outcomes: list[Outcome], table: dict[str, set[str]]) -> Tally:
    tally = Tally(calls=len(outcomes), violations=[])
    assert tally.violations is not None
    for o in outcomes:
        want = expected(o.caller, o.path, o.variant, table)
        where = f"{o.caller} {o.path} [{o.variant}]: {o.code.name}"
        if want is None:
            if o.code in REFUSALS or o.code in NOT_AN_ANSWER:
                tally.unexpected_refusals += 1
                tally.violations.append(f"{where}, expected an answer")
        elif o.code != want:
            if o.code in REFUSALS or o.code == grpc.StatusCode.UNAVAILABLE:
                tally.wrong_refusals += 1
            else:
                tally.unexpected_accepts += 1
            tally.violations.append(f"{where}, expected {want.name}")
    return tally


def _lease(task_id: str) -> ws.LeaseRef:
    return ws.LeaseRef(task_id=task_id, lease_token="not-the-token")


def _spec(queue: str, task_id: str = "") -> task_pb2.TaskSpec:
    return task_pb2.TaskSpec(id=task_id, queue=queue, kind="matrix.job")


def requests_for(inside: str, outside: str) -> dict[str, dict[str, Any]]:
    """Requests by variant for the RPCs that touch queues, given a task in each queue.

    A client-streaming RPC gets a list of messages. RPCs not here get an empty request.
    """
    q_in, q_out = ALLOWED_QUEUE, OTHER_QUEUE

    def stream(*messages: ws.StreamWorkRequest) -> list[ws.StreamWorkRequest]:
        return list(messages)

    opening = ws.StreamWorkRequest(open=ws.StreamWorkOpen(queues=[q_in]))
    return {
        TASK + "Enqueue": {
            "in": task_service_pb2.EnqueueRequest(task=_spec(q_in)),
            "out": task_service_pb2.EnqueueRequest(task=_spec(q_out)),
            "out-id": task_service_pb2.EnqueueRequest(task=_spec(q_in, outside)),
        },
        TASK + "EnqueueBatch": {
            "in": task_service_pb2.EnqueueBatchRequest(tasks=[_spec(q_in)]),
            "out": task_service_pb2.EnqueueBatchRequest(tasks=[_spec(q_in), _spec(q_out)]),
        },
        **{
            TASK + name: {"in": message(task_id=inside), "out": message(task_id=outside)}
            for name, message in (
                ("GetTask", task_service_pb2.GetTaskRequest),
                ("GetResult", task_service_pb2.GetResultRequest),
                ("CancelTask", task_service_pb2.CancelTaskRequest),
            )
        },
        WORKER + "Lease": {
            "in": ws.LeaseRequest(queues=[q_in]),
            "out": ws.LeaseRequest(queues=[q_in, q_out]),
            "out-default": ws.LeaseRequest(queues=[""]),  # "" is the default queue
        },
        WORKER + "ExtendLease": {
            variant: ws.ExtendLeaseRequest(leases=[ws.LeaseExtension(lease=_lease(task_id))])
            for variant, task_id in (("in", inside), ("out", outside))
        },
        WORKER + "Ack": {
            variant: ws.AckRequest(acks=[ws.AckItem(lease=_lease(task_id))])
            for variant, task_id in (("in", inside), ("out", outside))
        },
        WORKER + "Fail": {
            variant: ws.FailRequest(failures=[ws.FailItem(lease=_lease(task_id))])
            for variant, task_id in (("in", inside), ("out", outside))
        },
        WORKER + "Release": {
            variant: ws.ReleaseRequest(leases=[_lease(task_id)])
            for variant, task_id in (("in", inside), ("out", outside))
        },
        WORKER + "StreamWork": {
            "in": stream(opening, ws.StreamWorkRequest(acks=[ws.AckItem(lease=_lease(inside))])),
            "out": stream(ws.StreamWorkRequest(open=ws.StreamWorkOpen(queues=[q_out]))),
            "out-ack": stream(opening, ws.StreamWorkRequest(releases=[_lease(outside)], credits=1)),
        },
        REFLECTION + "ServerReflectionInfo": {
            "in": [reflection_pb2.ServerReflectionRequest(list_services="")]
        },
    }


def call(channel: grpc.Channel, method: MethodDescriptor, request: Any, token: str) -> Any:
    """The status code of one call (OK when a streaming call gave its first answer)."""
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    kinds = {
        (False, False): channel.unary_unary,
        (False, True): channel.unary_stream,
        (True, True): channel.stream_stream,
        (True, False): channel.stream_unary,
    }
    stub = kinds[(method.client_streaming, method.server_streaming)](
        path_of(method),
        request_serializer=request_class.SerializeToString,
        response_deserializer=response_class.FromString,
    )
    metadata = [("authorization", f"Bearer {token}")] if token else []
    if method.client_streaming and not isinstance(request, list):
        request = [request]
    try:
        answer = stub(iter(request) if method.client_streaming else request,
                      metadata=metadata, timeout=10)  # fmt: skip
        if method.server_streaming:
            for _ in answer:
                if not method.client_streaming:  # e.g. health Watch: streams for ever
                    answer.cancel()
                    break
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def _tokens_file(path: Path) -> Path:
    lines = []
    for caller, token in TOKENS.items():
        role, _, queue = caller.partition("@")
        name = caller.replace("@", "-")
        lines.append(f"[tokens.{name}]")
        if role in ("worker", "readonly"):  # both forms of the file are exercised
            lines.append(f'token_sha256 = "{hashlib.sha256(token.encode()).hexdigest()}"')
        else:
            lines.append(f'token = "{token}"')
        lines.append(f'role = "{role}"')
        if queue:
            lines.append(f'queues = ["{queue}"]')
    path.write_text("\n".join(lines) + "\n")
    return path


def _channel(address: str, pki: Path, cert: str | None) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(
        (pki / "ca.pem").read_bytes(),
        private_key=(pki / f"{cert}.key").read_bytes() if cert else None,
        certificate_chain=(pki / f"{cert}.pem").read_bytes() if cert else None,
    )
    return grpc.secure_channel(address, credentials)


@pytest.fixture(scope="module")
def matrix(pki: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Outcome]]:
    """Every caller x every RPC (x its queue variants), against one mutual-TLS broker."""
    from conveyor_server.testing import BrokerProcess

    tmp = tmp_path_factory.mktemp("roles")
    broker = BrokerProcess(tmp / "data", [
        "--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key"),
        "--tls-client-ca", str(pki / "ca.pem"), "--auth-tokens", str(_tokens_file(tmp / "t.toml")),
    ])  # fmt: skip
    broker.start()
    try:
        with _channel(broker.address, pki, "client") as channel:
            enqueue = task_service_pb2_grpc.TaskServiceStub(channel).Enqueue
            admin = [("authorization", f"Bearer {TOKENS['admin']}")]
            inside, outside = (
                enqueue(task_service_pb2.EnqueueRequest(task=_spec(q)), metadata=admin).task.id
                for q in (ALLOWED_QUEUE, OTHER_QUEUE)
            )
        variants = requests_for(inside, outside)
        callers = [("no token", "", "client"), ("wrong token", "not-a-token", "client")]
        callers += [(caller, token, "client") for caller, token in TOKENS.items()]
        callers += [(TLS_REFUSED[0], TOKENS["admin"], None)]
        callers += [(TLS_REFUSED[1], TOKENS["admin"], "stranger")]
        outcomes = []
        for caller, token, cert in callers:
            with _channel(broker.address, pki, cert) as channel:
                for method in all_methods():
                    empty = message_factory.GetMessageClass(method.input_type)()
                    for variant, request in variants.get(path_of(method), {"in": empty}).items():
                        code = call(channel, method, request, token)
                        outcomes.append(Outcome(caller, path_of(method), variant, code))
        yield outcomes
    finally:
        broker.kill()


def test_every_rpc_has_a_row_in_the_roles_table():
    served = {path_of(m) for m in all_methods() if not path_of(m).startswith(OPEN)}
    assert served == set(ROLES_TABLE), "decide the roles of a new RPC (docs/protocol.md)"


def test_every_caller_gets_exactly_the_documented_answer(matrix):
    tally = check_matrix(matrix, ROLES_TABLE)
    print(
        f"\nroles matrix: {tally.calls} calls, {tally.unexpected_accepts} unexpected accepts, "
        f"{tally.wrong_refusals} wrong refusal codes, {tally.unexpected_refusals} unexpected "
        "refusals"
    )
    assert tally.violations == []
    assert tally.unexpected_accepts == tally.wrong_refusals == tally.unexpected_refusals == 0
    codes = {o.code for o in matrix}
    assert set(REFUSALS) | {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.OK} <= codes
    callers = {o.caller for o in matrix}
    assert len(callers) == len(TOKENS) + 2 + len(TLS_REFUSED)


@pytest.mark.parametrize(
    "plant",
    [
        ("producer", WORKER + "Lease", "add"),  # a right the broker does not grant
        ("readonly", TASK + "GetResult", "remove"),  # a right it does grant
        ("worker", REFLECTION + "ServerReflectionInfo", "add"),
    ],
    ids=str,
)
def test_the_check_catches_a_wrong_table_entry(matrix, plant):
    role, path, how = plant
    table = {p: set(roles) for p, roles in ROLES_TABLE.items()}
    (table[path].add if how == "add" else table[path].discard)(role)
    tally = check_matrix(matrix, table)
    assert tally.violations
    assert all(v.startswith(role) and path in v for v in tally.violations)
    if how == "add":
        assert tally.unexpected_refusals > 0  # the broker refused what the table allows
    else:
        assert tally.unexpected_accepts > 0  # the broker allowed what the table refuses


def test_the_check_catches_an_accepted_unknown_token_and_a_wrong_code(matrix):
    planted = [
        Outcome("wrong token", TASK + "Enqueue", "in", grpc.StatusCode.INVALID_ARGUMENT),
        Outcome("producer", WORKER + "Ack", "in", grpc.StatusCode.UNAUTHENTICATED),
        Outcome(f"producer@{ALLOWED_QUEUE}", TASK + "Enqueue", "out", grpc.StatusCode.OK),
    ]
    tally = check_matrix([*matrix, *planted], ROLES_TABLE)
    assert (tally.unexpected_accepts, tally.wrong_refusals) == (2, 1)
