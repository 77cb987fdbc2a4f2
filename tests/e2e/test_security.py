"""TLS, mutual TLS and bearer tokens, end to end with the Python client."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conveyor import Client
from conveyor.errors import Unauthenticated, Unavailable


def test_tls_with_a_token(broker_factory, pki):
    broker = broker_factory(
        "--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key"),
        "--auth-token", "old-secret,s3cret",
    )  # fmt: skip
    ca = pki / "ca.pem"
    with Client(broker.address, root_certificates=str(ca), token="s3cret") as client:
        task = client.enqueue("secure.job", {"n": 1})
        assert client.get_task(task.id).id == task.id
    with (
        Client(broker.address, root_certificates=str(ca), token="wrong") as client,
        pytest.raises(Unauthenticated),
    ):
        client.enqueue("secure.job", {"n": 1})
    with (
        Client(broker.address, root_certificates=str(ca)) as client,
        pytest.raises(Unauthenticated),
    ):
        client.get_task(task.id)
    with (
        Client(broker.address, token="s3cret", retry_attempts=1, timeout=3) as client,
        pytest.raises(Unavailable),
    ):  # plaintext against a TLS port never connects
        client.get_task(task.id)
    credentials = grpc.ssl_channel_credentials(ca.read_bytes())
    with grpc.secure_channel(broker.address, credentials) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING  # probes need no token


def test_mutual_tls_requires_a_client_certificate(broker_factory, pki):
    broker = broker_factory(
        "--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key"),
        "--tls-client-ca", str(pki / "ca.pem"),
    )  # fmt: skip
    ca = str(pki / "ca.pem")
    with Client(
        broker.address,
        root_certificates=ca,
        client_cert=str(pki / "client.pem"),
        client_key=str(pki / "client.key"),
    ) as client:
        assert client.enqueue("mtls.job", None).id
    with (
        Client(broker.address, root_certificates=ca, retry_attempts=1, timeout=3) as client,
        pytest.raises(Unavailable),
    ):
        client.enqueue("mtls.job", None)


def test_token_auth_without_tls(broker_factory):
    broker = broker_factory("--auth-token", "plain")
    with Client(broker.address, token="plain") as client:
        assert client.enqueue("auth.job", None).id
    with Client(broker.address) as client, pytest.raises(Unauthenticated):
        client.enqueue("auth.job", None)


def test_token_auth_guards_streams_and_schedules_but_not_health_checks(broker_factory):
    from conveyor.v1 import worker_service_pb2, worker_service_pb2_grpc

    broker = broker_factory("--auth-token", "plain")
    with grpc.insecure_channel(broker.address) as channel:
        stream = worker_service_pb2_grpc.WorkerServiceStub(channel).StreamWork(
            iter([worker_service_pb2.StreamWorkRequest(open={"queues": ["q"]}, credits=1)]),
            timeout=10,
        )
        with pytest.raises(grpc.RpcError) as info:
            next(stream)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "bearer token" in (info.value.details() or "")
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING  # probes need no token
    with Client(broker.address, token="wrong") as client, pytest.raises(Unauthenticated):
        client.list_schedules()
