"""`conveyor worker` as a subprocess: SIGKILL mid-task, SIGTERM with running tasks, CLI flags."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor import TaskState, errors
from conveyor_worker import Worker

APP = textwrap.dedent(
    """
    import os, pathlib, time
    from conveyor_worker import Worker

    MARKS = pathlib.Path(__file__).parent / "marks"
    MARKS.mkdir(exist_ok=True)
    worker = Worker("127.0.0.1:1", queues=["unused"], concurrency=1, prefetch=2, poll_wait=1,
                    lease_duration=float(os.environ["LEASE_SECONDS"]), grace_period=20)

    @worker.handler("sleep")
    def sleep(payload, ctx):
        (MARKS / ctx.task_id).write_text(ctx.task.lease_token)
        time.sleep(payload)
        return {"slept": payload, "attempt": ctx.attempt}
    """
)

MAIN = "import sys; from conveyor_server.cli import main; main(sys.argv[1:])"


_started: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def _reap_workers() -> Iterator[None]:
    """Every worker process this module starts is ended and its pipe closed (no leaked fd)."""
    yield
    while _started:
        process = _started.pop()
        if process.poll() is None:
            process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()


def start_worker(
    tmp_path: Path, address: str, *flags: str, lease_seconds: float = 60
) -> subprocess.Popen[str]:
    (tmp_path / "sleepy_app.py").write_text(APP)
    script = Path(sys.executable).parent / "conveyor"
    cli = [str(script)] if script.exists() else [sys.executable, "-c", MAIN]
    command = [*cli, "worker", "sleepy_app:worker"]
    process = subprocess.Popen(
        [*command, "--target", address, *flags],
        cwd=tmp_path,
        env={**os.environ, "LEASE_SECONDS": str(lease_seconds)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    _started.append(process)
    return process


def wait_for_marks(tmp_path: Path, count: int, process: subprocess.Popen[str]) -> list[Path]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        marks = list((tmp_path / "marks").glob("*")) if (tmp_path / "marks").exists() else []
        if len(marks) >= count:
            return marks
        if process.poll() is not None:
            pytest.fail(
                "worker exited early:\n" + (process.stdout.read() if process.stdout else "")
            )
        time.sleep(0.05)
    pytest.fail(f"fewer than {count} tasks started")


def test_sigkilled_worker_task_runs_again_and_its_late_ack_is_rejected(
    shared_broker, client, tmp_path, run_worker
):
    t = client.enqueue("sleep", 30, queue="p-kill")
    process = start_worker(
        tmp_path,
        shared_broker.address,
        "--queues",
        "p-kill",
        "--concurrency",
        "1",
        lease_seconds=1.5,
    )
    try:
        [mark] = wait_for_marks(tmp_path, 1, process)
    finally:
        process.kill()
        process.wait()
    old_token = mark.read_text()
    assert mark.name == t.id and old_token
    time.sleep(0.5)  # past a heartbeat: the lease was extended while the worker lived
    assert client.get_task(t.id).state is TaskState.LEASED

    rescuer = Worker(shared_broker.address, queues=["p-kill"], poll_wait=1)

    @rescuer.handler("sleep")
    def quick(payload, ctx):
        return {"rescued": ctx.attempt}

    # The killed worker's 1.5 s lease (kept alive by its heartbeats until the kill) runs out.
    with run_worker(rescuer):
        assert client.result(t.id, timeout=20) == {"rescued": 2}
    with pytest.raises(errors.LeaseLost):
        client.ack(t.id, {"late": True}, lease_token=old_token)
    assert client.get_task(t.id).result == {"rescued": 2}


def test_sigterm_finishes_running_tasks_releases_the_rest_and_exits_0(
    shared_broker, client, tmp_path
):
    tasks = client.enqueue_many([("sleep", 1.0) for _ in range(3)], queue="p-term")
    process = start_worker(
        tmp_path, shared_broker.address, "--queues", "p-term", "--concurrency", "1"
    )
    wait_for_marks(tmp_path, 1, process)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the other two sit leased in the prefetch buffer
        states = [client.get_task(t.id).state for t in tasks]
        if states.count(TaskState.LEASED) == 3:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    assert process.wait(20) == 0
    states = {t.id: client.get_task(t.id) for t in tasks}
    succeeded = [s for s in states.values() if s.state is TaskState.SUCCEEDED]
    released = [s for s in states.values() if s.state is TaskState.READY]
    assert len(succeeded) == 1 and len(released) == 2
    assert all(s.attempt == 0 for s in released)  # released, not expired (60 s leases)


def test_second_signal_exits_at_once(shared_broker, client, tmp_path):
    client.enqueue("sleep", 30, queue="p-twice")
    process = start_worker(tmp_path, shared_broker.address, "--queues", "p-twice")
    wait_for_marks(tmp_path, 1, process)
    process.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    process.send_signal(signal.SIGTERM)
    assert process.wait(5) != 0
