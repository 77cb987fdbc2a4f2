"""Two brokers on one PostgreSQL database, producers and workers spread over both, while
broker A is SIGKILLed and restarted again and again (B stays up and takes over A's
leases when they expire).

Lost, resurrected, completed twice and unexpected must all be 0; duplicate deliveries are
allowed (at-least-once) and printed. CI: 3 kills in ~30 s; CONVEYOR_LONG_TESTS=1: 30.
"""

from __future__ import annotations

import random
import time

import pytest

from tests.reliability.conftest import ClusterFactory
from tests.reliability.ledger import Ledger, count
from tests.reliability.load import Load, read_back
from tests.reliability.sizes import is_long, pick
from tests.reliability.test_broker_sigkill import LEASE_SECONDS, _drain

pytestmark = pytest.mark.postgres

KILLS = pick(3, 30)
UP_SECONDS = (5.0, 8.0) if not is_long() else (2.0, 10.0)
DOWN_SECONDS = (0.2, 1.5)
BUDGET_SECONDS = pick(60, 900)


@pytest.mark.timeout(pick(180, 1800))
def test_two_brokers_one_killed_again_and_again_lose_nothing(pg_cluster: ClusterFactory, capsys):
    a, b = pg_cluster(2)
    rng = random.Random(1414)
    ledger = Ledger()
    loads = [
        Load(a.address, ledger, lease_seconds=LEASE_SECONDS, name_prefix="a"),
        Load(b.address, ledger, lease_seconds=LEASE_SECONDS, name_prefix="b"),
    ]
    for load in loads:
        load.start(producers=2, workers=1, stream_workers=1)
    started = time.monotonic()
    kills = 0
    try:
        while kills < KILLS and time.monotonic() - started < BUDGET_SECONDS:
            time.sleep(rng.uniform(*UP_SECONDS))
            a.kill()
            time.sleep(rng.uniform(*DOWN_SECONDS))
            a.start()
            kills += 1
        time.sleep(1.0)
        for load in loads:
            load.stop_producers()
        _drain(loads[1], b.address, timeout=60)
    finally:
        for load in loads:
            load.stop()
    elapsed = time.monotonic() - started
    counts = count(ledger, read_back(b.address, ledger.ids()))
    with capsys.disabled():
        print(f"\ntwo brokers, A SIGKILLed: kills={kills} seconds={elapsed:.0f} {counts.line()}")
    errors = loads[0].errors + loads[1].errors
    assert not errors, errors
    assert kills == KILLS, f"only {kills} kills in {BUDGET_SECONDS} s: the machine is too slow"
    assert counts.tasks > 100 * kills  # the producers really ran on both brokers
    assert any(i.startswith("a") for i in ledger.enqueued)
    assert any(i.startswith("b") for i in ledger.enqueued)
    assert counts.lost == [], counts.lost[:20]
    assert counts.resurrected == [], counts.resurrected[:20]
    assert counts.twice == [], counts.twice[:20]
    assert counts.unexpected == [], counts.unexpected[:20]
