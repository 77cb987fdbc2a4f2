"""`conveyor serve` as a user runs it: flags from the environment, clear refusals, clean exit."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import grpc
import lmdb
import pytest

from conveyor.v1 import task_pb2, task_service_pb2
from conveyor_server.testing import BrokerProcess
from tests.rpc.helpers import connect, enqueue


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_settings_come_from_conveyor_environment_variables(tmp_path):
    port = _free_port()
    env = {
        **os.environ,
        "CONVEYOR_LISTEN": f"127.0.0.1:{port}",
        "CONVEYOR_DATA_DIR": str(tmp_path / "env-data"),
        "CONVEYOR_MAX_PAYLOAD_BYTES": "10",
        "CONVEYOR_METRICS_LISTEN": "127.0.0.1:0",  # the default port may be taken here
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "conveyor_server"], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        assert f"127.0.0.1:{port}" in process.stdout.readline()
        stubs = connect(f"127.0.0.1:{port}")
        enqueue(stubs, "env")  # the helpers' 8-byte payload fits
        too_big = task_service_pb2.EnqueueRequest(
            task=task_pb2.TaskSpec(kind="job", payload=b"x" * 11)
        )
        with pytest.raises(grpc.RpcError) as info:
            stubs.tasks.Enqueue(too_big)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (tmp_path / "env-data" / "data.mdb").exists()
    finally:
        process.terminate()
        assert process.wait(20) == 0
        process.stdout.close()


@pytest.mark.lmdb_only  # the data dir's lock: PostgreSQL brokers share a database on purpose
def test_a_second_broker_on_the_same_data_dir_is_refused(broker, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "conveyor_server", "--listen", "127.0.0.1:0",
         "--data-dir", str(broker.data_dir)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 2
    assert "in use by another conveyor process" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_store_with_another_schema_version_is_refused(tmp_path):
    data_dir = tmp_path / "old"
    env = lmdb.open(str(data_dir), max_dbs=16)
    with env.begin(write=True) as txn:
        txn.put(b"schema_version", (99).to_bytes(8, "big"), db=env.open_db(b"meta", txn=txn))
    env.close()
    result = subprocess.run(
        [sys.executable, "-m", "conveyor_server", "--listen", "127.0.0.1:0",
         "--data-dir", str(data_dir)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 2
    assert "schema version 99" in result.stderr
    assert "Traceback" not in result.stderr


def test_sigterm_stops_cleanly_and_keeps_the_data(tmp_path):
    broker = BrokerProcess(tmp_path / "data")
    stubs = connect(broker.start())
    task = enqueue(stubs, "keep")
    assert broker.stop() == 0
    assert "stopped cleanly" in broker.log
    stubs = connect(broker.start())
    found = stubs.tasks.GetTask(task_service_pb2.GetTaskRequest(task_id=task.id)).task
    assert found.id == task.id
    broker.kill()


def test_bad_input_is_logged_without_a_traceback(broker):
    stubs = connect(broker.address)
    for _ in range(3):
        with pytest.raises(grpc.RpcError):
            enqueue(stubs, "bad queue name")
    time.sleep(0.2)
    assert "Traceback" not in broker.log


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--tls-cert", "server.pem"], "--tls-cert and --tls-key go together"),
        (["--tls-client-ca", "ca.pem"], "--tls-client-ca needs --tls-cert"),
        (["--tls-cert", "missing.pem", "--tls-key", "missing.key"], "cannot read the TLS files"),
        (["--auth-token", " , "], "--auth-token: names no token"),
    ],
)
def test_bad_security_flags_are_refused_with_a_clear_message(tmp_path, flags, message):
    result = subprocess.run(
        [sys.executable, "-m", "conveyor_server", "serve", "--listen", "127.0.0.1:0",
         "--data-dir", str(tmp_path / "data"), *flags],
        capture_output=True, text=True, timeout=30, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").iterdir())


@pytest.mark.parametrize(
    ("flags", "env"),
    [
        (["--max-store-bytes", "1000000"], {}),
        ([], {"CONVEYOR_MAX_STORE_BYTES": "1000000"}),
    ],
)
def test_a_store_size_limit_with_postgresql_is_refused_not_ignored(tmp_path, flags, env):
    """The PostgreSQL store cannot enforce --max-store-bytes: serve says so and exits 2
    before it connects (the URL points nowhere)."""
    result = subprocess.run(
        [sys.executable, "-m", "conveyor_server", "serve", "--listen", "127.0.0.1:0",
         "--database-url", "postgresql://nobody@127.0.0.1:1/none", *flags],
        capture_output=True, text=True, timeout=30, cwd=tmp_path,
        env={**os.environ, **env},
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "conveyor: --max-store-bytes limits the LMDB store only; size PostgreSQL itself"
    )
