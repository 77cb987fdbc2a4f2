"""Repository checks: proto lint, generated code in sync (layer rules: test_layers.py)."""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parent.parent
SERVER = ROOT / "server" / "conveyor_server"
#: The API as released in v0.1.0 (`buf build -o`); a new release adds its own image.
BASELINE = ROOT / "proto" / "baseline" / "v0.1.0.binpb"


def _tool(name: str) -> str:
    local = ROOT / "node_modules" / ".bin" / name
    return str(local) if local.exists() else require_tool(name)


def test_proto_passes_buf_lint():
    result = subprocess.run(
        [_tool("buf"), "lint"], cwd=ROOT / "proto", capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_proto_is_buf_formatted():
    result = subprocess.run(
        [_tool("buf"), "format", "--diff", "--exit-code"],
        cwd=ROOT / "proto",
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, "run `buf format -w` in proto/:\n" + result.stdout


def _buf_breaking(proto_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_tool("buf"), "breaking", str(proto_dir), "--against", str(BASELINE)],
        capture_output=True,
        text=True,
    )


def test_proto_is_wire_compatible_with_the_last_release():
    result = _buf_breaking(ROOT / "proto")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("old", "new", "complaint"),
    [
        ("  string queue = 2;", "  string queue = 22;", 'field "2" with name "queue"'),
        ("  uint32 max_tasks = 2;", "  reserved 2;", "max_tasks"),
        ("  bool cancel_requested = 3;", "  string cancel_requested = 3;", "type"),
    ],
    ids=["renumbered", "removed", "retyped"],
)
def test_buf_breaking_fails_on_a_wire_incompatible_change(tmp_path, old, new, complaint):
    """The check above could pass only because nothing was compared: plant a violation."""
    copy = tmp_path / "proto"
    shutil.copytree(ROOT / "proto", copy, ignore=shutil.ignore_patterns("baseline"))
    [path] = [path for path in copy.rglob("*.proto") if old + "\n" in path.read_text()]
    path.write_text(path.read_text().replace(old + "\n", new + "\n", 1))
    result = _buf_breaking(copy)
    assert result.returncode != 0, result.stdout
    assert complaint in result.stdout.lower(), result.stdout


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
