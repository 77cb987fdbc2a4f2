"""Values no argparse type catches still get one line and exit 2 from every `conveyor` command."""

from __future__ import annotations

import subprocess
import sys

import pytest

BAD = [
    ["schedule", "add", "s", "--every", "99999999999999999d", "--kind", "k"],
    ["enqueue", "k", "--delay", "99999999999999999d"],
    ["enqueue", "k", "--max-attempts", "-1"],
    ["schedule", "add", "s", "--every", "5m", "--kind", "k", "--misfire-limit", "-1"],
    ["worker", "bad_values_app:worker", "--queues", ","],
    ["worker", "bad_values_app:worker", "--grace-period", "-1"],
    ["serve", "--max-payload-bytes", "100GiB", "--listen", "127.0.0.1:0"],
    ["limit", "q", "--rate", "-1"],
    ["limit", "q", "--rate", "nan"],
    ["limit", "q", "--rate", "inf"],
    ["limit", "q", "--burst", "-3"],
    ["limit", "q", "--concurrency", "1.5"],
    ["limit", "q", "--key-concurrency", "4294967296"],
]


@pytest.mark.parametrize("argv", BAD, ids=lambda argv: " ".join(argv[:4]))
def test_a_bad_value_is_one_line_and_exit_2(argv: list[str], tmp_path) -> None:
    (tmp_path / "bad_values_app.py").write_text(
        "from conveyor_worker import Worker\nworker = Worker('127.0.0.1:1', queues=['q'])\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "conveyor_server", *argv, *(["--target", "127.0.0.1:1"]
         if argv[0] in ("schedule", "enqueue") else [])],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr
    if argv[0] == "worker":
        assert argv[3] in result.stderr  # refused for the option, not for the path
