"""The fsync audit: `sync` mode fsyncs every acknowledged commit, `nosync` does not.

Kill tests cannot show fsync (a SIGKILL loses nothing either way), so this watches the
broker's system calls with strace. The `nosync` run is the control: the same count of
acknowledged enqueues with (almost) no fsync shows that the audit can tell them apart.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

from conveyor import Client
from conveyor_server.testing import BrokerProcess
from tests.conftest import require_tool

ENQUEUES = 30
_SYNC_CALL = re.compile(r"\b(fsync|fdatasync|msync)\(")


def _audit(tmp_path: Path, durability: str) -> int:
    """fsync-family calls the broker made while acknowledging ENQUEUES sequential enqueues."""
    strace = require_tool("strace")
    trace = tmp_path / f"{durability}.trace"
    broker = BrokerProcess(tmp_path / durability, ["--durability", durability])
    broker.start(timeout=60)
    assert broker.process is not None
    tracer = subprocess.Popen(
        [strace, "-f", "-qq", "-e", "trace=fsync,fdatasync,msync", "-o", str(trace),
         "-p", str(broker.process.pid)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        with Client(broker.address, timeout=30) as client:
            deadline = time.monotonic() + 30  # attached once a traced commit shows up
            while time.monotonic() < deadline:
                client.enqueue("warm-up", None)
                if trace.exists() and _SYNC_CALL.search(trace.read_text()):
                    break
                if durability == "nosync" and time.monotonic() > deadline - 25:
                    break  # nosync shows none: give strace its few seconds, then go on
                time.sleep(0.05)
            before = len(_SYNC_CALL.findall(trace.read_text())) if trace.exists() else 0
            for i in range(ENQUEUES):
                client.enqueue("audited", i)  # one at a time: each is its own commit
            after = len(_SYNC_CALL.findall(trace.read_text())) if trace.exists() else 0
    finally:
        broker.kill()
        tracer.wait(30)
    return after - before


@pytest.mark.timeout(180)
def test_sync_mode_fsyncs_every_acknowledged_enqueue(tmp_path: Path) -> None:
    assert _audit(tmp_path, "sync") >= ENQUEUES


@pytest.mark.timeout(180)
def test_nosync_mode_is_the_control_with_no_fsync_per_commit(tmp_path: Path) -> None:
    assert _audit(tmp_path, "nosync") < ENQUEUES // 3
