"""The queues file (`conveyor serve --queues-file`): what the parser accepts and refuses,
then a real broker applying it at start, on change, on SIGHUP, and keeping the last good
settings when a reload finds a bad file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from conveyor import Client, QueueInfo
from conveyor import QueueLimits as ClientLimits
from conveyor_server.core.flow import MAX_COUNT, QueueLimits
from conveyor_server.service.queue_file import QueueFileError, QueueSetting, load_queue_file
from conveyor_server.testing import BrokerProcess

GOOD = """
[queues.emails]
rate = 10
burst = 20
concurrency = 5
key_concurrency = 1
paused = false

[queues."reports.nightly"]
rate = 0.5

[queues.cleared]
"""


def _load(tmp_path: Path, text: str) -> list[QueueSetting]:
    path = tmp_path / "queues.toml"
    path.write_text(text)
    return load_queue_file(path)


def test_a_good_file_gives_each_queue_its_whole_limits(tmp_path: Path) -> None:
    emails, nightly, cleared = _load(tmp_path, GOOD)
    assert emails == QueueSetting("emails", QueueLimits(10.0, 20, 5, 1), paused=False)
    assert isinstance(emails.limits.rate, float)
    assert nightly == QueueSetting("reports.nightly", QueueLimits(rate=0.5))
    assert nightly.paused is None  # absent: the pause is left as it is
    assert cleared == QueueSetting("cleared", QueueLimits(), None)


def test_an_empty_file_lists_no_queue(tmp_path: Path) -> None:
    assert _load(tmp_path, "") == []


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("[queues.q]\nrate = -1\n", "rate: -1.0 must be a finite number"),
        ("[queues.q]\nrate = nan\n", "rate: nan must be a finite number"),
        ("[queues.q]\nrate = inf\n", "rate: inf must be a finite number"),
        ("[queues.q]\nrate = '10'\n", "rate: '10' is not a number"),
        ("[queues.q]\nrate = true\n", "rate: True is not a number"),
        ("[queues.q]\nburst = 2.5\n", "burst: 2.5 is not a whole number"),
        ("[queues.q]\nburst = 20\n", "queue 'q': burst: burst needs a rate"),
        ("[queues.q]\nburst = 20\nconcurrency = 2\n", "burst: burst needs a rate"),
        ("[queues.q]\nconcurrency = -1\n", "concurrency: -1 must be a whole number 0-"),
        ("[queues.q]\nrate = 1e12\n", "rate: 1e+12 is over the limit"),
        (f"[queues.q]\nkey_concurrency = {MAX_COUNT + 1}\n", "key_concurrency: 4294967296"),
        ("[queues.q]\npaused = 'yes'\n", "paused: 'yes' is not true or false"),
        ("[queues.q]\nratee = 1\n", "unknown keys ['ratee']"),
        ("[queues]\nq = 1\n", "queue 'q': must be a table"),
        ('[queues."bad name"]\n', "may only use letters"),
        ("[queue.q]\n", "unknown top-level keys ['queue']"),
        ("queues = 1\n", "'queues' must be a table of tables"),
        ("[queues.q\n", "queues.toml"),
    ],
)
def test_a_bad_file_is_refused_naming_the_file_queue_and_value(
    tmp_path: Path, text: str, complaint: str
) -> None:
    with pytest.raises(QueueFileError) as refused:
        _load(tmp_path, text)
    assert complaint in str(refused.value)
    assert str(tmp_path / "queues.toml") in str(refused.value)
    assert "\n" not in str(refused.value)


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(QueueFileError, match="No such file"):
        load_queue_file(tmp_path / "absent.toml")


def test_bytes_that_are_not_utf8_are_refused_naming_the_file(tmp_path: Path) -> None:
    """The schedules, queues and tokens files share one reader (service/background.py)."""
    from conveyor_server.rpc.token_file import TokenFileError, load_token_file
    from conveyor_server.service.schedule_file import ScheduleFileError, load_schedule_file

    path = tmp_path / "latin1.toml"
    path.write_bytes(b"[queues.caf\xe9]\nrate = 1\n")
    for load, error in (
        (load_queue_file, QueueFileError),
        (load_schedule_file, ScheduleFileError),
        (lambda p: load_token_file(p, {}), TokenFileError),
    ):
        with pytest.raises(error, match=r"latin1\.toml"):
            load(path)


def test_the_largest_count_is_accepted(tmp_path: Path) -> None:
    [q] = _load(tmp_path, f"[queues.q]\nconcurrency = {MAX_COUNT}\n")
    assert q.limits.concurrency == MAX_COUNT


def _wait_for(predicate: Callable[[], bool], timeout: float = 6.0) -> float:
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < timeout, "condition not reached in time"
        time.sleep(0.1)
    return time.monotonic() - start


def test_the_file_applies_at_start_and_its_limits_hold(broker_factory, tmp_path: Path) -> None:
    path = tmp_path / "queues.toml"
    path.write_text(GOOD)
    broker = broker_factory("--queues-file", str(path))
    with Client(broker.address) as client:
        emails = client.get_queue("emails")
        assert emails.limits == ClientLimits(10.0, 20, 5, 1) and not emails.paused
        assert client.get_queue("reports.nightly").limits == ClientLimits(rate=0.5)
        # Enforced by the lease path: the file's concurrency of 5 holds.
        client.enqueue_many([("send", {})] * 8, queue="emails")
        assert len(client.lease("emails", 8)) == 5
    assert "queues file applied: emails (rate 10, burst 20, concurrency 5" in broker.log


def test_edits_apply_without_restart_and_a_bad_reload_keeps_the_last_good(
    broker_factory, tmp_path: Path
) -> None:
    path = tmp_path / "queues.toml"
    path.write_text("[queues.a]\nconcurrency = 3\n[queues.b]\nrate = 5\n")
    broker = broker_factory("--queues-file", str(path))
    client = Client(broker.address)

    def limits(name: str) -> ClientLimits:
        return client.get_queue(name).limits

    # An edit is seen by the periodic stat; a limit left out of a table is no limit.
    path.write_text("[queues.a]\nrate = 2\nburst = 4\npaused = true\n[queues.b]\nrate = 5\n")
    took = _wait_for(lambda: limits("a") == ClientLimits(rate=2.0, burst=4))
    print(f"\nqueues file change applied after {took:.1f} s")
    assert client.get_queue("a").paused

    # An API pause is kept by a reload that does not mention paused.
    client.pause_queue("b")
    # Same size and mtime: the stat sees nothing; SIGHUP forces the reload.
    before = path.stat()
    path.write_text("[queues.a]\nrate = 3\nburst = 4\npaused = true\n[queues.b]\nrate = 6\n")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    time.sleep(1.5)
    assert limits("b") == ClientLimits(rate=5.0)
    assert broker.process is not None
    broker.process.send_signal(signal.SIGHUP)
    _wait_for(lambda: limits("b") == ClientLimits(rate=6.0), timeout=3)
    assert client.get_queue("b").paused  # the file said nothing of it

    # A bad file changes nothing; the last good settings stay.
    path.write_text("[queues.a]\nrate = -1\n")
    _wait_for(lambda: "queues file not applied" in broker.log)
    assert limits("a") == ClientLimits(rate=3.0, burst=4)

    # A queue dropped from the file keeps its settings, and the log says so.
    path.write_text("[queues.a]\n")
    _wait_for(lambda: limits("a") == ClientLimits())
    assert limits("b") == ClientLimits(rate=6.0)
    assert "b no longer listed; their settings stay as they are" in broker.log
    client.close()


def test_settings_made_through_the_api_are_replaced_at_the_next_start(tmp_path: Path) -> None:
    path = tmp_path / "queues.toml"
    path.write_text("[queues.a]\nconcurrency = 3\n")
    broker = BrokerProcess(tmp_path / "data", ["--queues-file", str(path)])
    broker.start()
    try:
        with Client(broker.address) as client:
            client.update_queue("a", concurrency=9, rate=1.0)
            client.update_queue("untouched", key_concurrency=2)
        broker.stop()
        broker.start()
        with Client(broker.address) as client:
            info: QueueInfo = client.get_queue("a")
            assert info.limits == ClientLimits(concurrency=3)  # the file's, whole
            assert client.get_queue("untouched").limits == ClientLimits(key_concurrency=2)
    finally:
        broker.kill()


@pytest.mark.parametrize("via", ["flag", "variable"])
def test_a_bad_file_at_start_is_one_line_and_exit_2(tmp_path: Path, via: str) -> None:
    path = tmp_path / "queues.toml"
    path.write_text("[queues.q]\nconcurrency = 2.5\n")
    args = ["--queues-file", str(path)] if via == "flag" else []
    env = {**os.environ, "CONVEYOR_QUEUES_FILE": str(path)} if via == "variable" else None
    result = subprocess.run(
        [sys.executable, "-m", "conveyor_server", "serve", "--listen", "127.0.0.1:0",
         "--metrics-listen", "", "--data-dir", str(tmp_path / "data"), *args],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "concurrency: 2.5 is not a whole number" in line and str(path) in line
