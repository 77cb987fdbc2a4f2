"""Flow limits through a real `conveyor serve`, measured from the broker's side:

- a rate limit holds within 5 % over 10 s while 4 worker processes lease (the count is
  of the broker's own `leased_at` times);
- a concurrency limit is never exceeded, sampled from the broker's LEASED count while
  worker processes are SIGKILLed holding leases (short leases: theirs run out and the
  slots free, so the survivors get back to the limit);
- fairness: 10,000 tasks queued under key A, then 10 under key B: all of B's tasks are
  among the first 40 leases.

CI: 10 s of rate, 3 kills; CONVEYOR_LONG_TESTS=1: 30 s, 10 kills.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from conveyor import Client, TaskState
from tests.reliability.sizes import pick

RATE = 40.0
RATE_SECONDS = pick(10, 30)
CONCURRENCY = 4
KILLS = pick(3, 10)
LEASE_SECONDS = 1.0

APP = textwrap.dedent(
    """
    import os, time
    from conveyor_worker import Worker

    worker = Worker("127.0.0.1:1", queues=["unused"],
                    concurrency=int(os.environ.get("CONCURRENCY", "8")),
                    lease_duration=float(os.environ.get("LEASE_SECONDS", "30")),
                    heartbeat=0.3, poll_wait=1, grace_period=2)

    @worker.handler("work")
    def work(payload):
        time.sleep(payload)
    """
)
MAIN = "import sys; from conveyor_server.cli import main; main(sys.argv[1:])"


class Workers:
    """`conveyor worker` subprocesses on one queue."""

    def __init__(self, tmp_path: Path, address: str) -> None:
        self.tmp_path = tmp_path
        self.address = address
        (tmp_path / "flow_app.py").write_text(APP)
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, queue: str, **env: str) -> subprocess.Popen[bytes]:
        script = Path(sys.executable).parent / "conveyor"
        cli = [str(script)] if script.exists() else [sys.executable, "-c", MAIN]
        process = subprocess.Popen(
            [*cli, "worker", "flow_app:worker", "--target", self.address, "--queues", queue],
            cwd=self.tmp_path,
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.processes.append(process)
        return process

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


def _leased_times(client: Client, queue: str) -> list[datetime]:
    """The broker's leased_at of every task of the queue that was leased."""
    times: list[datetime] = []
    token = ""
    for _ in range(1000):  # pages; bounded
        page = client.list_tasks(queue=queue, page_size=500, page_token=token)
        times += [t.leased_at for t in page.tasks if t.leased_at is not None]
        token = page.next_page_token
        if not token:
            return times
    raise AssertionError("too many pages")


@pytest.mark.timeout(pick(120, 300))
def test_a_rate_limit_holds_within_5_percent_with_4_workers(broker, workers, capsys) -> None:
    queue = "flow-rate"
    client = Client(broker.address)
    client.update_queue(queue, rate=RATE)
    # More than the window can take, so the workers never run dry.
    client.enqueue_many([("work", 0)] * int(RATE * (RATE_SECONDS + 8)), queue=queue)
    for _ in range(4):
        workers.start(queue)
    deadline = time.monotonic() + 60
    while not client.get_queue(queue).counts.get(TaskState.SUCCEEDED):
        assert time.monotonic() < deadline, "no worker finished a task within 60 s"
        time.sleep(0.1)
    time.sleep(RATE_SECONDS + 2.5)
    workers.stop_all()
    times = sorted(_leased_times(client, queue))
    left = client.get_queue(queue).counts.get(TaskState.READY, 0)
    client.close()
    # Skip the first second (the bucket's burst and the workers' start), then count a
    # window of RATE_SECONDS by the broker's clock.
    start = times[0].timestamp() + 1.0
    stamps = [t.timestamp() for t in times]
    counted = sum(1 for s in stamps if start <= s < start + RATE_SECONDS)
    per_second = [
        sum(1 for s in stamps if start + i <= s < start + i + 1) for i in range(RATE_SECONDS)
    ]
    expected = RATE * RATE_SECONDS
    with capsys.disabled():
        print(
            f"\nrate limit {RATE:g}/s, 4 workers: {counted} leases in {RATE_SECONDS} s "
            f"(expected {expected:g}); per second {per_second}"
        )
    assert left > 0, "the queue ran dry: the window measured the workers, not the limit"
    assert stamps[-1] >= start + RATE_SECONDS, "the workers stopped before the window ended"
    assert abs(counted - expected) <= 0.05 * expected, (counted, expected)


def _leased(client: Client, queue: str) -> int:
    return client.get_queue(queue).counts.get(TaskState.LEASED, 0)


def _holders(client: Client, queue: str) -> set[int]:
    """Pids of the workers that hold leases now (worker ids are host:pid)."""
    page = client.list_tasks(queue=queue, states=["LEASED"], page_size=100)
    return {int(t.worker_id.rsplit(":", 1)[1]) for t in page.tasks if ":" in t.worker_id}


@pytest.mark.timeout(pick(120, 400))
def test_a_concurrency_limit_is_never_exceeded_while_workers_die_holding_leases(
    broker, workers, capsys
) -> None:
    queue = "flow-concurrency"
    client = Client(broker.address)
    client.update_queue(queue, concurrency=CONCURRENCY)
    tasks = client.enqueue_many(
        [("work", 0.3)] * pick(150, 600),
        queue=queue,
        lease_duration=LEASE_SECONDS,
        max_attempts=KILLS + 3,  # a task may be on every killed worker and still succeed
    )
    env = {"CONCURRENCY": "4", "LEASE_SECONDS": str(LEASE_SECONDS)}
    alive = [workers.start(queue, **env) for _ in range(3)]  # 12 slots for 4 leases
    samples: list[int] = []

    def refills_before(done: float) -> bool:
        """Whether, before `done`, every slot is held by a living worker: the dead one's
        leases ran out and their slots went to the others. Samples all along."""
        while time.monotonic() < done:
            samples.append(_leased(client, queue))
            living = {p.pid for p in alive}
            if samples[-1] == CONCURRENCY and _holders(client, queue) <= living:
                return True
            time.sleep(0.02)
        return False

    killed = 0
    refilled = 0
    deadline = time.monotonic() + pick(60, 300)
    while killed < KILLS:
        assert time.monotonic() < deadline, f"only {killed} kills in time"
        samples.append(_leased(client, queue))
        holders = _holders(client, queue) & {p.pid for p in alive}
        if samples[-1] < CONCURRENCY or not holders:
            time.sleep(0.02)
            continue
        victim = next(p for p in alive if p.pid in holders)
        victim.kill()  # SIGKILL with leases held: they stay LEASED until they run out
        victim.wait(10)
        alive.remove(victim)
        killed += 1
        alive.append(workers.start(queue, **env))
        if refills_before(time.monotonic() + LEASE_SECONDS + 5):
            refilled += 1
    drained_by = time.monotonic() + 120
    while True:  # the survivors finish the queue, sampled all along
        counts = client.get_queue(queue).counts
        samples.append(counts.get(TaskState.LEASED, 0))
        if counts.get(TaskState.SUCCEEDED, 0) + counts.get(TaskState.DEAD, 0) == len(tasks):
            break
        assert time.monotonic() < drained_by, counts
        time.sleep(0.02)
    finals = [client.get_task(t.id) for t in tasks]
    client.close()
    with capsys.disabled():
        print(
            f"\nconcurrency limit {CONCURRENCY}: {len(samples)} samples of LEASED, max "
            f"{max(samples)}, {killed} workers SIGKILLed holding leases, back at the limit "
            f"(their slots reused by living workers) after {refilled} of them"
        )
    assert max(samples) <= CONCURRENCY, max(samples)
    assert samples.count(CONCURRENCY) > 10  # the limit was reached, not merely respected
    assert refilled == killed  # the dead workers' slots freed when their leases ran out
    not_done = [
        (f.id, f.state.name, f.attempt, f.last_error.details if f.last_error else None)
        for f in finals
        if f.state is not TaskState.SUCCEEDED
    ]
    assert not_done == [], not_done


def _queue_a_then_b(client: Client, queue: str) -> set[str]:
    """10,000 tasks under key A, then 10 under key B; the ids of B's."""
    client.enqueue_many([("work", 0)] * 10_000, queue=queue, concurrency_key="A")
    later = client.enqueue_many([("work", 0)] * 10, queue=queue, concurrency_key="B")
    return {t.id for t in later}


def test_a_key_with_ten_tasks_is_not_delayed_by_a_key_with_ten_thousand(broker) -> None:
    client = Client(broker.address)
    b_ids = _queue_a_then_b(client, "flow-fair")
    first = [task for _ in range(40) for task in client.lease("flow-fair", 1)]
    client.close()
    assert len(first) == 40
    assert {t.id for t in first} >= b_ids, [t.concurrency_key for t in first]


def test_fairness_holds_within_one_batched_lease(broker) -> None:
    client = Client(broker.address)
    b_ids = _queue_a_then_b(client, "flow-fair-batch")
    first = client.lease("flow-fair-batch", 40)
    client.close()
    assert len(first) == 40
    assert {t.id for t in first} >= b_ids, [t.concurrency_key for t in first]
