"""TLS, mutual TLS and bearer tokens, end to end with the Python client."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conveyor import Client
from conveyor.errors import PermissionDenied, Unauthenticated, Unavailable


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


# --- the tokens file (--auth-tokens) ---------------------------------------------------

_PRODUCER_FILE = '[tokens.{name}]\ntoken = "{token}"\nrole = "producer"\n'


def _accepts(address: str, token: str) -> bool:
    with Client(address, token=token, retry_attempts=1, timeout=5) as client:
        try:
            client.enqueue("auth.job", None)
        except Unauthenticated:
            return False
    return True


def _wait_for(predicate, timeout: float = 6.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


def test_tokens_file_is_reapplied_when_it_changes_and_on_sighup(broker_factory, tmp_path):
    path = tmp_path / "tokens.toml"
    path.write_text(_PRODUCER_FILE.format(name="ci", token="tok-alpha-1111"))
    broker = broker_factory("--auth-tokens", str(path))
    assert _accepts(broker.address, "tok-alpha-1111")

    # Changed: picked up by the stat poll, the old token refused from then on.
    path.write_text(_PRODUCER_FILE.format(name="ci", token="tok-bravo-2222"))
    _wait_for(lambda: _accepts(broker.address, "tok-bravo-2222"))
    assert not _accepts(broker.address, "tok-alpha-1111")
    assert "tokens file applied: added [], removed [], changed ['ci']" in broker.log

    # Same size and mtime: the stat sees nothing, SIGHUP forces the reload.
    before = path.stat()
    path.write_text(_PRODUCER_FILE.format(name="ci", token="tok-delta-4444"))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    time.sleep(1.5)
    assert not _accepts(broker.address, "tok-delta-4444")
    assert broker.process is not None
    broker.process.send_signal(signal.SIGHUP)
    _wait_for(lambda: _accepts(broker.address, "tok-delta-4444"), timeout=3)

    # A broken file changes nothing: the last good tokens stay, the error is logged.
    path.write_text('[tokens.ci]\ntoken = "tok-echo-5555"\nrole = "superuser"\n')
    _wait_for(lambda: "tokens file not applied" in broker.log)
    assert _accepts(broker.address, "tok-delta-4444")
    assert not _accepts(broker.address, "tok-echo-5555")
    for secret in ("tok-alpha", "tok-bravo", "tok-delta", "tok-echo"):
        assert secret not in broker.log  # tokens are never logged


_BAD_FILES = {
    "unknown role": '[tokens.x]\ntoken = "tok-secret-9"\nrole = "root"\n',
    "both forms": f'[tokens.x]\ntoken = "tok-secret-9"\ntoken_sha256 = "{"0" * 64}"\n'
    'role = "admin"\n',
    "short digest": '[tokens.x]\ntoken_sha256 = "abc"\nrole = "admin"\n',
    "queues on admin": '[tokens.x]\ntoken = "tok-secret-9"\nrole = "admin"\nqueues = ["a"]\n',
    "empty queues": '[tokens.x]\ntoken = "tok-secret-9"\nrole = "worker"\nqueues = []\n',
    "bad queue name": '[tokens.x]\ntoken = "tok-secret-9"\nrole = "worker"\nqueues = ["a b"]\n',
    "unknown key": '[tokens.x]\ntoken = "tok-secret-9"\nrole = "admin"\nrolle = "admin"\n',
    "same token twice": '[tokens.x]\ntoken = "tok-secret-9"\nrole = "admin"\n'
    '[tokens.y]\ntoken = "tok-secret-9"\nrole = "readonly"\n',
    "space in token": '[tokens.x]\ntoken = "tok secret-9"\nrole = "admin"\n',
    "bad TOML": "[tokens.x\n",
    "misspelt table": '[token.x]\ntoken = "tok-secret-9"\nrole = "admin"\n',
}


@pytest.mark.parametrize("case", [*sorted(_BAD_FILES), "missing file"])
def test_a_bad_tokens_file_at_start_is_refused_in_one_line(case, tmp_path):
    path = tmp_path / "tokens.toml"
    if case in _BAD_FILES:
        path.write_text(_BAD_FILES[case])
    data_dir = tmp_path / "data"
    done = subprocess.run(
        [sys.executable, "-m", "conveyor_server", "serve", "--listen", "127.0.0.1:0",
         "--data-dir", str(data_dir), "--auth-tokens", str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"conveyor: {path}"), done.stderr
    assert "secret-9" not in done.stderr
    assert not data_dir.exists()  # refused before the store is opened


def test_flag_tokens_stay_admin_next_to_a_tokens_file(broker_factory, tmp_path):
    path = tmp_path / "tokens.toml"
    digest = hashlib.sha256(b"tok-reader-7").hexdigest()
    path.write_text(f'[tokens.dash]\ntoken_sha256 = "{digest}"\nrole = "readonly"\n')
    broker = broker_factory("--auth-token", "tok-flag-6", "--auth-tokens", str(path))
    with Client(broker.address, token="tok-flag-6") as admin:
        task = admin.enqueue("auth.job", None)
        assert admin.list_schedules() == []
    with Client(broker.address, token="tok-reader-7") as reader:
        assert reader.get_task(task.id).id == task.id
        assert reader.list_schedules() == []
        with pytest.raises(PermissionDenied) as info:
            reader.enqueue("auth.job", None)
        assert "token 'dash' (role readonly) may not call" in str(info.value)
