"""Cron on two brokers sharing one PostgreSQL database, both started with the same
schedules file (two 1 s interval schedules), across SIGKILLs of one broker at a time and
then of both at once.

No leader: a tick's task id is deterministic, so a second fire is a unique violation
rolled back alone. Misfire policy `all` must fire every tick exactly once (no gaps, no
double fires, both brokers down or not); `skip` never fires a tick twice and drops ticks
only around a restart. CI: 4 single kills + 1 double kill; CONVEYOR_LONG_TESTS=1: 20 + 1.
"""

from __future__ import annotations

import random
import time
from collections import Counter

import pytest

from tests.e2e.test_cron_e2e import drain, last_fire, missing_runs, schedule_stub, tick_of
from tests.reliability.conftest import ClusterFactory
from tests.reliability.sizes import pick

pytestmark = pytest.mark.postgres

KILLS = pick(4, 20)

SCHEDULES = """
[schedules.c-all]
interval = "1s"
misfire_policy = "all"
[schedules.c-all.task]
queue = "c-all"
kind = "tick"

[schedules.c-skip]
interval = "1s"
misfire_policy = "skip"
[schedules.c-skip.task]
queue = "c-skip"
kind = "tick"
"""


@pytest.mark.timeout(pick(120, 900))
def test_cron_on_two_brokers_fires_every_tick_once_across_sigkills(
    pg_cluster: ClusterFactory, tmp_path, capsys
):
    from conveyor.v1 import schedule_service_pb2 as pb2

    path = tmp_path / "schedules.toml"
    path.write_text(SCHEDULES)
    brokers = pg_cluster(2, "--schedules", str(path))
    get = pb2.GetScheduleRequest(name="c-all")
    first_cursor = schedule_stub(brokers[0].address).GetSchedule(get).schedule.next_fire_time
    rng = random.Random(77)
    windows: list[tuple[float, float]] = []  # (killed at, serving again at)
    for i in range(KILLS + 1):
        time.sleep(rng.uniform(1.0, 2.5))
        victims = [brokers[i % 2]] if i < KILLS else brokers  # the last round kills both
        killed_at = time.time()
        for victim in victims:
            victim.kill()
        time.sleep(rng.uniform(0.3, 1.5) if i < KILLS else 2.5)
        for victim in victims:
            victim.start()
        windows.append((killed_at, time.time()))
    time.sleep(2.0)

    address = brokers[1].address
    until = last_fire(address, "c-all")  # ticks after it may fire during the drain
    fired = {name: Counter(map(tick_of, drain(address, name))) for name in ("c-all", "c-skip")}
    start = min(fired["c-all"])
    covered = range(start, until + 1)
    every = fired["c-all"]
    double = {t: n for name in fired for t, n in fired[name].items() if n > 1}
    missing = [t for t in covered if every[t] == 0]
    skipped = missing_runs(range(max(start, min(fired["c-skip"])), until + 1), fired["c-skip"])
    with capsys.disabled():
        print(
            f"\ncron on two brokers: {len(covered)} ticks, {sum(every.values())} tasks (all), "
            f"double fires={len(double)}, gaps (all)={len(missing)}, "
            f"ticks skipped (skip policy)={sum(map(len, skipped))}, kills={len(windows)}"
        )
    assert start <= first_cursor.seconds  # the first tick after the files were read fired
    assert len(covered) >= 10
    assert double == {}
    assert missing == []

    def near_a_restart(tick: int) -> bool:
        return any(killed - 0.5 <= tick <= up + 0.5 for killed, up in windows)

    for run in skipped:
        assert all(near_a_restart(t) for t in run), (run, windows)
