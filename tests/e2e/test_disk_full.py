"""A real full disk (a size-limited tmpfs): RESOURCE_EXHAUSTED that says so, no INTERNAL, no
crash, the broker recovers when space returns and starts on a full disk."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from conveyor.v1 import task_pb2, task_service_pb2, worker_service_pb2
from conveyor_server.testing import BrokerProcess
from tests.rpc.helpers import Stubs, connect

TS = task_service_pb2
WS = worker_service_pb2
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs (needs root, as CI has)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must be able to mount a tmpfs: {done.stderr}")
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _fill(disk: Path) -> Path:
    """Write a file until the disk is full; removing it gives the space back."""
    filler = disk / "filler"
    with open(filler, "wb") as out, contextlib.suppress(OSError):
        while True:
            out.write(b"\0" * 65536)
            out.flush()
    return filler


def _enqueue_batch(stubs: Stubs, count: int = 50) -> TS.EnqueueBatchResponse:
    specs = [
        task_pb2.TaskSpec(queue="disk", kind="k", payload=os.urandom(4000)) for _ in range(count)
    ]
    return stubs.tasks.EnqueueBatch(TS.EnqueueBatchRequest(tasks=specs), timeout=10)


def _enqueue_until_refused(stubs: Stubs) -> grpc.RpcError:
    for _ in range(200):
        try:
            _enqueue_batch(stubs)
        except grpc.RpcError as exc:
            return exc
    raise AssertionError("the full disk never refused an enqueue")


def _status(call) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def test_a_full_disk_refuses_new_tasks_clearly_and_recovers(small_disk: Path):
    broker = BrokerProcess(small_disk / "data")
    broker.start()
    try:
        stubs = connect(broker.address)
        _enqueue_batch(stubs)
        leased = stubs.workers.Lease(
            WS.LeaseRequest(queues=["disk"], max_tasks=20), timeout=10
        ).tasks
        filler = _fill(small_disk)

        error = _enqueue_until_refused(stubs)
        assert error.code() == EXHAUSTED, error.details()
        assert "disk" in error.details() and "full" in error.details()
        single = task_pb2.TaskSpec(queue="disk", kind="k", payload=os.urandom(4000))
        assert (
            _status(lambda: stubs.tasks.Enqueue(TS.EnqueueRequest(task=single), timeout=10))
            == EXHAUSTED
        )

        # Workers go on where the disk allows: never INTERNAL, and the broker stays up.
        for task in leased:
            ack = WS.AckItem(lease=WS.LeaseRef(task_id=task.id, lease_token=task.lease_token))
            code = _status(lambda a=ack: stubs.workers.Ack(WS.AckRequest(acks=[a]), timeout=10))
            assert code in (grpc.StatusCode.OK, EXHAUSTED)
        code = _status(lambda: stubs.workers.Lease(WS.LeaseRequest(queues=["disk"]), timeout=10))
        assert code in (grpc.StatusCode.OK, EXHAUSTED)
        assert broker.process is not None and broker.process.poll() is None
        assert "internal error" not in broker.log

        filler.unlink()
        deadline = time.monotonic() + 10
        while True:
            try:
                response = _enqueue_batch(stubs, 5)
                break
            except grpc.RpcError as exc:
                assert exc.code() == EXHAUSTED
                assert time.monotonic() < deadline, "no recovery after space came back"
                time.sleep(0.2)
        task_id = response.results[0].task.id
        got = stubs.tasks.GetTask(TS.GetTaskRequest(task_id=task_id), timeout=10).task
        assert got.id == task_id

        # A restart on a full disk serves (no crash loop), refusing new tasks as before.
        assert broker.stop() == 0
        filler = _fill(small_disk)
        broker.start()
        stubs = connect(broker.address)
        assert (
            stubs.tasks.GetTask(TS.GetTaskRequest(task_id=task_id), timeout=10).task.id == task_id
        )
        error = _enqueue_until_refused(stubs)
        assert error.code() == EXHAUSTED, error.details()
        filler.unlink()
    finally:
        broker.kill()
