"""Fail over a replicated PostgreSQL under load: nothing a broker acknowledged is lost.

Not collected by pytest and not run in CI (it takes a minute and two more servers); run it
by hand:

    .venv/bin/python -m tests.reliability.pg_failover [--seconds 20] [--brokers 2]

A primary and a synchronous standby (testing/pg_replica.py), brokers on a URL naming
both hosts, producers and workers (tests/reliability/load.py) on every broker. Halfway
through, the primary is stopped in immediate mode (as if it crashed) and the standby is
promoted; the brokers answer UNAVAILABLE until libpq finds the new primary. Then the
producers stop, the workers drain, every task is read back and counted as the broker
SIGKILL test counts (tests/reliability/ledger.py). Exit status 1 if anything was lost,
completed twice or unexpected.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from conveyor_server.testing.broker_process import BrokerProcess
from conveyor_server.testing.pg_replica import ReplicatedPostgres
from tests.reliability.ledger import SUCCEEDED, Ledger, count
from tests.reliability.load import Load, read_back

LEASE_SECONDS = 2.0


def _wait_synchronous(cluster: ReplicatedPostgres, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cluster.is_synchronous():
        if time.monotonic() > deadline:
            raise SystemExit("the standby never became synchronous")
        time.sleep(0.2)


def _drain(ledger: Ledger, address: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        open_ids = ledger.unfinished()
        if open_ids and len(open_ids) < 500:  # an Ack committed while its call failed
            finals = read_back(address, open_ids)
            open_ids -= {i for i, f in finals.items() if f.state == SUCCEEDED}
        if not open_ids:
            break
        time.sleep(0.5)
    time.sleep(LEASE_SECONDS + 1.0)


def run(seconds: float, brokers: int) -> int:
    with tempfile.TemporaryDirectory(prefix="conveyor-failover-") as tmp:
        cluster = ReplicatedPostgres(base_dir=Path(tmp)).start()
        processes: list[BrokerProcess] = []
        loads: list[Load] = []
        try:
            _wait_synchronous(cluster)
            cluster.primary.create_database("conveyor")
            url = cluster.url_for("conveyor")
            ledger = Ledger()
            for i in range(brokers):
                process = BrokerProcess(Path(tmp) / f"b{i}", ["--database-url", url])
                process.start()
                processes.append(process)
                load = Load(process.address, ledger, lease_seconds=LEASE_SECONDS)
                load.start(producers=2, workers=1, stream_workers=1)
                loads.append(load)
            time.sleep(seconds / 2)
            before = len(ledger.enqueued)
            started = time.monotonic()
            cluster.fail_over()
            promoted = time.monotonic() - started
            time.sleep(seconds / 2)
            for load in loads:
                load.stop_producers()
            _drain(ledger, processes[0].address, timeout=60)
            for load in loads:
                load.stop()
            counts = count(ledger, read_back(processes[0].address, ledger.ids()))
            errors = [e for load in loads for e in load.errors]
        finally:
            for process in processes:
                process.kill()
            cluster.stop()
    print(
        f"failover: brokers={brokers} promoted in {promoted:.1f} s, "
        f"{before} tasks acknowledged before it; {counts.line()}"
    )
    if errors:
        print("load errors:", errors[:5])
    bad = counts.lost or counts.twice or counts.unexpected or counts.resurrected
    return 1 if bad or errors or after_too_few(counts.tasks, before) else 0


def after_too_few(total: int, before: int) -> bool:
    """The producers must have gone on after the promotion, or nothing was tested."""
    return total <= before


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="load time in all")
    parser.add_argument("--brokers", type=int, default=2)
    args = parser.parse_args(argv)
    return run(args.seconds, args.brokers)


if __name__ == "__main__":
    sys.exit(main())
