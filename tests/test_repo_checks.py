"""Repository checks: proto lint, generated code in sync (layer rules: test_layers.py)."""

from __future__ import annotations

import filecmp
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parent.parent
SERVER = ROOT / "server" / "conveyor_server"


def _tool(name: str) -> str:
    local = ROOT / "node_modules" / ".bin" / name
    return str(local) if local.exists() else require_tool(name)


def test_proto_passes_buf_lint():
    result = subprocess.run(
        [_tool("buf"), "lint"], cwd=ROOT / "proto", capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_generated_code_matches_the_proto(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable}
    subprocess.run(
        [str(ROOT / "tools" / "gen_proto.sh"), str(tmp_path)],
        check=True,
        env=env,
        capture_output=True,
    )
    fresh = tmp_path / "conveyor" / "v1"
    committed = ROOT / "client_py" / "conveyor" / "v1"
    names = sorted(p.name for p in fresh.iterdir() if p.is_file())
    assert names == sorted(p.name for p in committed.iterdir() if p.is_file())
    _, mismatch, errors = filecmp.cmpfiles(fresh, committed, names, shallow=False)
    assert not mismatch and not errors, f"run tools/gen_proto.sh: stale {mismatch + errors}"
