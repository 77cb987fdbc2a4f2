"""Cron against a real broker process: exactly once per tick across SIGKILLs, misfire policies
after a downtime, the schedules file reloaded while running, firing on time under load."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import Counter
from datetime import datetime

import grpc

from conveyor.v1 import schedule_service_pb2 as pb2
from conveyor.v1 import schedule_service_pb2_grpc, task_pb2, task_service_pb2, worker_service_pb2
from tests.rpc.helpers import connect, seconds

POLICIES = {
    "all": pb2.MISFIRE_POLICY_ALL,
    "once": pb2.MISFIRE_POLICY_ONCE,
    "skip": pb2.MISFIRE_POLICY_SKIP,
}


def schedule_stub(address: str) -> schedule_service_pb2_grpc.ScheduleServiceStub:
    return schedule_service_pb2_grpc.ScheduleServiceStub(grpc.insecure_channel(address))


def create_every_second(address: str, name: str, policy: int) -> float:
    """Create an every-second schedule with queue == name; returns its first tick."""
    request = pb2.CreateScheduleRequest(
        schedule=pb2.Schedule(
            name=name,
            interval=seconds(1),
            misfire_policy=policy,
            task=pb2.TaskTemplate(queue=name, kind="tick"),
        )
    )
    created = schedule_stub(address).CreateSchedule(request).schedule
    return created.next_fire_time.seconds


def drain(address: str, queue: str) -> list[task_pb2.Task]:
    """Lease every task of the queue (a worker sees exactly what was enqueued)."""
    workers = connect(address).workers
    tasks: list[task_pb2.Task] = []
    while True:
        request = worker_service_pb2.LeaseRequest(queues=[queue], max_tasks=1000)
        batch = list(workers.Lease(request).tasks)
        if not batch:
            return tasks
        tasks.extend(batch)


def tick_of(task: task_pb2.Task) -> int:
    return int(datetime.fromisoformat(task.headers["conveyor-tick"]).timestamp())


def last_fire(address: str, name: str) -> int:
    got = schedule_stub(address).GetSchedule(pb2.GetScheduleRequest(name=name)).schedule
    return got.last_fire_time.seconds


def missing_runs(ticks: range, fired: Counter[int]) -> list[list[int]]:
    """Contiguous runs of ticks without a task."""
    runs: list[list[int]] = []
    for tick in ticks:
        if fired[tick] == 0:
            if runs and runs[-1][-1] == tick - 1:
                runs[-1].append(tick)
            else:
                runs.append([tick])
    return runs


def test_every_tick_fires_exactly_once_across_repeated_sigkill(broker):
    rng = random.Random(11)
    first = {p: create_every_second(broker.address, f"kill-{p}", v) for p, v in POLICIES.items()}
    # (kill time, launch time, serving again time) per crash
    windows: list[tuple[float, float, float]] = []
    for _ in range(5):
        time.sleep(rng.uniform(0.6, 1.8))
        killed_at = time.time()
        broker.kill()
        time.sleep(rng.uniform(0.3, 1.6))
        launched_at = time.time()
        broker.start()
        windows.append((killed_at, launched_at, time.time()))
    time.sleep(1.5)

    until = last_fire(broker.address, "kill-all")
    covered = range(int(first["all"]), until + 1)
    counts = {p: Counter(tick_of(t) for t in drain(broker.address, f"kill-{p}")) for p in POLICIES}

    def in_window(tick: int) -> bool:
        return any(k - 0.5 <= tick <= up + 0.5 for k, _, up in windows)

    # ALL: every tick of the covered interval has exactly one task, crashes or not.
    fired_all = counts["all"]
    duplicates = sum(c - 1 for c in fired_all.values() if c > 1)
    missing = [t for t in covered if fired_all[t] == 0]
    extra = [t for t in fired_all if t not in covered]
    print(
        f"\nexactly-once: {len(covered)} ticks covered, {sum(fired_all.values())} tasks, "
        f"{duplicates} duplicates, {len(missing)} missing, {len(windows)} SIGKILLs"
    )
    assert (duplicates, missing, extra) == (0, [], [])

    for policy in ("once", "skip"):
        fired = counts[policy]
        assert all(c == 1 for c in fired.values()), policy  # never twice
        runs = missing_runs(covered, fired)
        for run in runs:  # a tick is only ever dropped around a crash
            assert all(in_window(t) for t in run), (policy, run, windows)
        for killed_at, launched_at, _ in windows:
            dead = [t for t in covered if killed_at < t < launched_at]
            if policy == "skip":
                assert all(fired[t] == 0 for t in dead), (policy, dead)
            else:  # once: at most the latest missed tick of each downtime fires
                assert sum(fired[t] for t in dead) <= 1, (policy, dead)
                if dead and fired[dead[0]]:
                    assert len(dead) == 1


def test_misfire_policies_after_a_downtime(broker):
    for policy, value in POLICIES.items():
        create_every_second(broker.address, f"down-{policy}", value)
    time.sleep(2.2)
    broker.stop()
    stopped_at = time.time()
    time.sleep(4.5)  # four or five ticks while the broker is down
    launched_at = time.time()
    broker.start()
    up_at = time.time()
    time.sleep(3.0)
    dead = list(range(int(stopped_at) + 1, int(launched_at) + 1))
    assert len(dead) >= 4
    fired = {p: Counter(tick_of(t) for t in drain(broker.address, f"down-{p}")) for p in POLICIES}
    assert all(fired["all"][t] == 1 for t in dead)
    assert all(fired["skip"][t] == 0 for t in dead)
    once_in_dead = [t for t in dead if fired["once"][t]]
    assert once_in_dead in ([], [dead[-1]])
    # once: the first tick it fired after the stop is the latest missed one, then every tick
    after = sorted(t for t in fired["once"] if t > stopped_at)
    assert after == list(range(after[0], after[-1] + 1))
    assert after[0] >= dead[-1]
    # every policy fires each tick once the broker is back
    for policy in POLICIES:
        resumed = [t for t in fired[policy] if t > up_at + 0.5]
        assert resumed and all(fired[policy][t] == 1 for t in resumed)


SCHEDULES_FILE = """
[schedules.{name}]
cron = "{cron}"
[schedules.{name}.task]
queue = "{name}"
kind = "tick"
"""


def wait_for(predicate, timeout: float = 6.0) -> float:
    """Poll until predicate() is true; returns how long it took."""
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < timeout, "condition not reached in time"
        time.sleep(0.1)
    return time.monotonic() - start


def test_schedules_file_edits_apply_without_restart(broker_factory, tmp_path):
    path = tmp_path / "schedules.toml"
    path.write_text(SCHEDULES_FILE.format(name="file-a", cron="* * * * * *"))
    broker = broker_factory("--schedules", str(path))
    stub = schedule_stub(broker.address)

    def names() -> set[str]:
        listed = stub.ListSchedules(pb2.ListSchedulesRequest()).schedules
        return {s.name for s in listed if s.source == pb2.SCHEDULE_SOURCE_FILE}

    def cron_of(name: str) -> str:
        return stub.GetSchedule(pb2.GetScheduleRequest(name=name)).schedule.cron

    assert names() == {"file-a"}
    workers = connect(broker.address).workers
    lease = worker_service_pb2.LeaseRequest(queues=["file-a"], wait=seconds(3))
    assert workers.Lease(lease).tasks

    # Replace a with b: picked up by the periodic stat, no restart.
    path.write_text(SCHEDULES_FILE.format(name="file-b", cron="*/2 * * * * *"))
    took = wait_for(lambda: names() == {"file-b"})
    print(f"\nschedules file change applied after {took:.1f} s")
    lease = worker_service_pb2.LeaseRequest(queues=["file-b"], wait=seconds(4))
    assert workers.Lease(lease).tasks

    # Same size and mtime: the stat sees nothing, SIGHUP forces the reload.
    before = path.stat()
    path.write_text(SCHEDULES_FILE.format(name="file-b", cron="*/3 * * * * *"))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    time.sleep(1.5)
    assert cron_of("file-b") == "*/2 * * * * *"
    assert broker.process is not None
    broker.process.send_signal(signal.SIGHUP)
    wait_for(lambda: cron_of("file-b") == "*/3 * * * * *", timeout=3)

    # A broken file changes nothing; the broker keeps serving the last good schedules.
    path.write_text("[schedules.file-c\n")
    time.sleep(1.5)
    assert names() == {"file-b"}
    assert "schedules file not applied" in broker.log


def _load(address: str, stop: threading.Event) -> None:
    tasks = connect(address).tasks
    specs = [task_pb2.TaskSpec(queue="load", kind="noise", payload=b"x" * 200)] * 100
    while not stop.is_set():
        tasks.EnqueueBatch(task_service_pb2.EnqueueBatchRequest(tasks=specs))


def test_ticks_fire_on_time_under_load(broker):
    first = create_every_second(broker.address, "loaded", POLICIES["all"])
    stop = threading.Event()
    threads = [threading.Thread(target=_load, args=(broker.address, stop)) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(4.5)
    stop.set()
    for thread in threads:
        thread.join()
    tasks = drain(broker.address, "loaded")
    lags = [t.created_at.ToMilliseconds() / 1000 - tick_of(t) for t in tasks]
    print(f"\nlag under load: max {max(lags) * 1000:.0f} ms over {len(lags)} ticks")
    assert sorted(tick_of(t) for t in tasks)[0] == first
    assert len(tasks) >= 4
    assert max(lags) < 0.5
