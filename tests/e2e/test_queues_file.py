"""The queues file (`conveyor serve --queues-file`): what the parser accepts and refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor_server.service.queue_file import (
    MAX_COUNT,
    QueueFileError,
    QueueSetting,
    load_queue_file,
)

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
    assert emails == QueueSetting("emails", 10.0, 20, 5, 1, paused=False)
    assert isinstance(emails.rate, float)
    assert nightly == QueueSetting("reports.nightly", rate=0.5)
    assert nightly.paused is None  # absent: the pause is left as it is
    assert cleared.limits() == {"rate": 0.0, "burst": 0, "concurrency": 0, "key_concurrency": 0}


def test_an_empty_file_lists_no_queue(tmp_path: Path) -> None:
    assert _load(tmp_path, "") == []


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("[queues.q]\nrate = -1\n", "rate: -1 must be a finite number"),
        ("[queues.q]\nrate = nan\n", "rate: nan must be a finite number"),
        ("[queues.q]\nrate = inf\n", "rate: inf must be a finite number"),
        ("[queues.q]\nrate = '10'\n", "rate: '10' is not a number"),
        ("[queues.q]\nrate = true\n", "rate: True is not a number"),
        ("[queues.q]\nburst = 2.5\n", "burst: 2.5 is not a whole number"),
        ("[queues.q]\nconcurrency = -1\n", "concurrency: -1 is out of range"),
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


def test_the_largest_count_is_accepted(tmp_path: Path) -> None:
    [q] = _load(tmp_path, f"[queues.q]\nconcurrency = {MAX_COUNT}\n")
    assert q.concurrency == MAX_COUNT
