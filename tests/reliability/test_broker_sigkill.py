"""Broker SIGKILL under load, counted: producers and workers keep running while a real
`conveyor serve` is killed and restarted on the same data dir, again and again.

Lost, resurrected, completed twice and unexpected must all be 0; duplicate deliveries are
allowed (at-least-once) and reported. CI: 50 short cycles; CONVEYOR_LONG_TESTS=1: 200.
"""

from __future__ import annotations

import random
import time

import pytest

from tests.reliability.ledger import SUCCEEDED, Ledger, count
from tests.reliability.load import Load, read_back
from tests.reliability.sizes import is_long, pick

CYCLES = pick(50, 200)
UP_SECONDS = (0.15, 0.45) if not is_long() else (0.2, 1.5)
LEASE_SECONDS = 2.0
BUDGET_SECONDS = pick(150, 3000)  # the cycles stop here even if a slow machine is not done


def _drain(load: Load, address: str, timeout: float) -> None:
    """Let the workers finish every acknowledged task, then watch one lease period more so a
    resurrection (an accepted Ack delivered again) has time to show."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        open_ids = load.ledger.unfinished()
        if open_ids:  # an Ack that committed while its call failed is not in the ledger
            finals = read_back(address, open_ids) if len(open_ids) < 200 else {}
            open_ids -= {i for i, f in finals.items() if f.state == SUCCEEDED}
        if not open_ids:
            break
        time.sleep(0.5)
    time.sleep(LEASE_SECONDS + 1.0)


@pytest.mark.timeout(pick(240, 3600))
def test_broker_sigkill_under_load_loses_nothing_and_resurrects_nothing(broker, capsys):
    rng = random.Random(20240611)
    ledger = Ledger()
    load = Load(broker.address, ledger, lease_seconds=LEASE_SECONDS)
    load.start(producers=2, workers=1, stream_workers=1)
    started = time.monotonic()
    cycles = 0
    try:
        while cycles < CYCLES and time.monotonic() - started < BUDGET_SECONDS:
            time.sleep(rng.uniform(*UP_SECONDS))
            broker.kill()
            broker.start()
            cycles += 1
        time.sleep(0.3)
        load.stop_producers()
        _drain(load, broker.address, timeout=60)
    finally:
        load.stop()
    elapsed = time.monotonic() - started
    counts = count(ledger, read_back(broker.address, ledger.ids()))
    with capsys.disabled():
        print(f"\nbroker SIGKILL: cycles={cycles} seconds={elapsed:.0f} {counts.line()}")
    assert not load.errors, load.errors
    assert cycles == CYCLES, f"only {cycles} cycles in {BUDGET_SECONDS} s: the machine is too slow"
    assert counts.tasks > 10 * cycles  # the producers really ran between the kills
    assert counts.lost == [], counts.lost[:20]
    assert counts.resurrected == [], counts.resurrected[:20]
    assert counts.twice == [], counts.twice[:20]
    assert counts.unexpected == [], counts.unexpected[:20]
