"""Worker SIGKILL with short leases: `conveyor worker` processes (the Python worker SDK on
its StreamWork stream) are killed mid-task, again and again, while replacements keep
working. After the leases run out nothing is orphaned (every task ends SUCCEEDED through
another worker) and every killed attempt's token is refused with FAILED_PRECONDITION.

CI: 6 kills over 60 tasks; CONVEYOR_LONG_TESTS=1: 30 kills over 300 tasks.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from conveyor import Client, TaskState
from conveyor.v1 import worker_service_pb2, worker_service_pb2_grpc
from tests.reliability.load import channel
from tests.reliability.sizes import pick

QUEUE = "rel-workers"
KILLS = pick(6, 30)
TASKS = pick(60, 300)
LEASE_SECONDS = 1.5

APP = textwrap.dedent(
    """
    import os, pathlib, time
    from conveyor_worker import Worker

    MARKS = pathlib.Path(os.environ["MARKS"])
    worker = Worker("127.0.0.1:1", queues=["unused"], concurrency=2, lease_duration=1.5,
                    heartbeat=0.4, poll_wait=1, grace_period=5)

    @worker.handler("work")
    def work(payload, ctx):
        name = f"{ctx.task_id}.{ctx.attempt}"
        (MARKS / f"{name}.start").write_text(f"{os.getpid()} {ctx.task.lease_token}")
        time.sleep(payload)
        (MARKS / f"{name}.end").write_text("")
        return {"pid": os.getpid(), "attempt": ctx.attempt}
    """
)
MAIN = "import sys; from conveyor_server.cli import main; main(sys.argv[1:])"


@dataclass(frozen=True)
class Started:
    """A handler start a mark file recorded: which process, which task and lease."""

    pid: int
    task_id: str
    attempt: int
    token: str


class Workers:
    """`conveyor worker` subprocesses sharing one marks directory."""

    def __init__(self, tmp_path: Path, address: str) -> None:
        self.tmp_path = tmp_path
        self.address = address
        self.marks = tmp_path / "marks"
        self.marks.mkdir()
        (tmp_path / "rel_app.py").write_text(APP)
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        script = Path(sys.executable).parent / "conveyor"
        cli = [str(script)] if script.exists() else [sys.executable, "-c", MAIN]
        process = subprocess.Popen(
            [*cli, "worker", "rel_app:worker", "--target", self.address, "--queues", QUEUE],
            cwd=self.tmp_path,
            env={**os.environ, "MARKS": str(self.marks)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.processes.append(process)
        return process

    def started(self) -> list[Started]:
        out = []
        for path in self.marks.glob("*.start"):
            task_id, attempt = path.name.removesuffix(".start").rsplit(".", 1)
            text = path.read_text()
            if " " not in text:
                continue  # being written right now
            pid, token = text.split(" ", 1)
            out.append(Started(int(pid), task_id, int(attempt), token))
        return out

    def running(self, process: subprocess.Popen[bytes]) -> list[Started]:
        ended = {p.name.removesuffix(".end") for p in self.marks.glob("*.end")}
        return [
            s
            for s in self.started()
            if s.pid == process.pid and f"{s.task_id}.{s.attempt}" not in ended
        ]

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait(10)


@pytest.fixture
def workers(tmp_path: Path, broker) -> Iterator[Workers]:
    pool = Workers(tmp_path, broker.address)
    yield pool
    pool.stop_all()


def _kill_one_mid_task(workers: Workers, alive: list[subprocess.Popen[bytes]]) -> list[Started]:
    """Wait (bounded) until some living worker runs a handler, SIGKILL it, say what it ran."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for process in alive:
            if workers.running(process):
                process.kill()
                process.wait(10)
                alive.remove(process)
                return workers.running(process)  # its unfinished handlers, as of the kill
        time.sleep(0.02)
    pytest.fail("no worker started a task within 20 s")


def _stale_ack_code(address: str, killed: Started) -> grpc.StatusCode:
    stub = worker_service_pb2_grpc.WorkerServiceStub(channel(address))
    lease = worker_service_pb2.LeaseRef(task_id=killed.task_id, lease_token=killed.token)
    request = worker_service_pb2.AckRequest(acks=[worker_service_pb2.AckItem(lease=lease)])
    try:
        stub.Ack(request, timeout=5)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


@pytest.mark.timeout(pick(120, 1800))
def test_killed_workers_orphan_nothing_and_their_late_acks_are_refused(broker, workers, capsys):
    rng = random.Random(20240612)
    client = Client(broker.address)
    tasks = client.enqueue_many(
        [("work", round(rng.uniform(0.2, 0.8), 2)) for _ in range(TASKS)],
        queue=QUEUE,
        max_attempts=KILLS + 3,  # a task may be on every killed worker and still succeed
    )
    alive = [workers.start(), workers.start()]
    killed: list[Started] = []
    started = time.monotonic()
    for _ in range(KILLS):
        killed += _kill_one_mid_task(workers, alive)
        alive.append(workers.start())
    finals = {t.id: client.wait(t.id, timeout=60) for t in tasks}
    elapsed = time.monotonic() - started
    orphaned = [i for i, t in finals.items() if t.state is not TaskState.SUCCEEDED]
    rerun = [k for k in killed if finals[k.task_id].attempt > k.attempt]
    codes = [_stale_ack_code(broker.address, k) for k in killed]
    accepted = [k for k, code in zip(killed, codes, strict=True) if code is grpc.StatusCode.OK]
    with capsys.disabled():
        print(
            f"\nworker SIGKILL: kills={KILLS} tasks={len(tasks)} seconds={elapsed:.0f} "
            f"killed_mid_task={len(killed)} rerun_elsewhere={len(rerun)} "
            f"orphaned={len(orphaned)} stale_acks_accepted={len(accepted)}"
        )
    client.close()
    assert len(killed) >= KILLS  # each kill really caught a handler running
    assert orphaned == []
    assert len(rerun) == len(killed)  # every killed attempt ran again, later, elsewhere
    assert all(finals[k.task_id].result["pid"] != k.pid for k in killed)
    assert codes == [grpc.StatusCode.FAILED_PRECONDITION] * len(killed)
