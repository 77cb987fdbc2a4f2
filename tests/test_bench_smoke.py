"""The benchmark suite runs end to end at its tiny size. Not a timed test: it only proves
every scenario produces figures, so the suite cannot rot between performance runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.scenarios import SCENARIOS

ROOT = Path(__file__).resolve().parent.parent


def test_benchmark_runs_at_a_tiny_size(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--size", "tiny", "--repeat", "1", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    figures = json.loads(out.read_text())
    rows = {row["scenario"]: row for row in figures["rows"]}
    main_scenarios = [name for name in SCENARIOS if name not in ("depth", "floor")]
    floor_rows = ["floor-bare", "floor-lmdb"]
    depth_rows = [f"depth-{op}-{q}" for op in ("enqueue", "lease") for q in ("shallow", "deep")]
    assert set(rows) == {*main_scenarios, *floor_rows, *depth_rows}, sorted(rows)
    for name, row in rows.items():
        assert row["tasks"] > 0 and row["rate"] > 0, (name, row)
        assert row["label"] in result.stdout, (row["label"], result.stdout)
    for name in ("roundtrip", *floor_rows):
        assert rows[name]["p50_ms"] > 0 and rows[name]["p99_ms"] > 0, (name, rows[name])
    assert rows["drain"]["worker_cpu_s"] > 0
    depth = figures["depth"]
    assert depth["depth_tasks"] > 0 and depth["restart_s"] > 0
    assert depth["rss_empty_mib"] > 0 and depth["rss_deep_mib"] > 0
    assert "| depth figure |" in result.stdout


def test_benchmark_runs_on_postgres_with_two_brokers(tmp_path: Path) -> None:
    """`--store postgres --brokers 2`: a throwaway PostgreSQL, two brokers on one database,
    clients and workers spread over both; every PostgreSQL scenario gives figures, and the
    server's CPU is measured."""
    from tests.conftest import require_postgres

    require_postgres()
    out = tmp_path / "bench.json"
    picked = ["enqueue-many", "drain", "drain-raw", "drain-limited", "roundtrip"]
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--store", "postgres", "--brokers", "2", "--size", "tiny"]
        + ["--repeat", "1", "--json", str(out)]
        + [f"--scenario={name}" for name in picked],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {row["scenario"]: row for row in json.loads(out.read_text())["rows"]}
    assert set(rows) == set(picked), sorted(rows)
    for name, row in rows.items():
        assert row["tasks"] > 0 and row["rate"] > 0, (name, row)
        assert "over 2 brokers" in row["label"], row["label"]
        assert row["database_cpu_s"] is not None and row["database_cpu_s"] > 0, (name, row)
    assert rows["roundtrip"]["p50_ms"] > 0
    assert "store=postgres" in result.stdout and "| PostgreSQL CPU s |" in result.stdout


def test_store_flags_that_cannot_run_are_one_line_errors() -> None:
    for args in (["--brokers", "2"], ["--store", "postgres", "--scenario", "depth"]):
        result = subprocess.run(
            [sys.executable, "-m", "bench", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2, result.stdout + result.stderr
        assert result.stderr.startswith("conveyor bench: ") and result.stderr.count("\n") == 1


def test_table_prints_a_row_whose_broker_used_no_measurable_cpu() -> None:
    from bench.table import main_table

    row = dict.fromkeys(
        (
            "tasks",
            "rate",
            "p50_ms",
            "p95_ms",
            "p99_ms",
            "broker_cpu_s",
            "broker_cpu_us_per_task",
            "client_cpu_s",
            "worker_cpu_s",
            "rpcs_per_task",
        )
    )
    row.update(label="tiny", broker_util=0.0, broker_sys_share=None)
    assert "| tiny | — |" in main_table([row])
