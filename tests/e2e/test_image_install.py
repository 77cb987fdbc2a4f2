"""The Dockerfile's install steps, run in a venv (no Docker engine here): a wheel built from
the folders the Dockerfile copies, installed with the server extra, has no `bench`, serves
with the image's environment, and answers the HEALTHCHECK's probe."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def _build_stage_copies() -> list[str]:
    build = DOCKERFILE.split("\nFROM ", 2)[1]
    sources: list[str] = []
    for line in build.splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            sources += line.split()[1:-1]
    return sources


def _image_env() -> dict[str, str]:
    block = re.search(r"^ENV (.*?)\n(?=\S)", DOCKERFILE, re.S | re.M)
    assert block is not None
    return {k: v for k, v in re.findall(r"(CONVEYOR_\w+)=(\S+)", block.group(1))}


def test_dockerfile_keeps_its_promises() -> None:
    assert _build_stage_copies() == [
        "pyproject.toml",
        "README.md",
        "server",
        "client_py",
        "worker_sdk",
    ]
    assert re.search(r"^USER (?!root)\w+", DOCKERFILE, re.M)
    assert re.search(r'^VOLUME \["/data"\]', DOCKERFILE, re.M)
    assert re.search(r"^EXPOSE 7470 9470$", DOCKERFILE, re.M)
    assert re.search(r'^HEALTHCHECK .*\n\s+CMD \["conveyor", "health"', DOCKERFILE, re.M)
    assert len(re.findall(r"^FROM ", DOCKERFILE, re.M)) == 2  # multi-stage
    assert _image_env()["CONVEYOR_LISTEN"] == "0.0.0.0:7470"
    assert _image_env()["CONVEYOR_DATA_DIR"] == "/data"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run(*command: str | Path) -> str:
    """Run from / so that the checkout's own folders (bench/) are not on sys.path."""
    done = subprocess.run(
        [str(c) for c in command], capture_output=True, text=True, timeout=600, cwd="/"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.timeout(900)
def test_image_install_steps_serve_and_pass_the_health_probe(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in _build_stage_copies():
        if (ROOT / name).is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
            shutil.copytree(ROOT / name, src / name, ignore=ignore)
        else:
            shutil.copy(ROOT / name, src / name)
    wheels = tmp_path / "wheels"
    _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir", wheels, src)
    [wheel] = wheels.glob("*.whl")
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", venv)
    _run(venv / "bin" / "pip", "install", "-q", f"{wheel}[server]")
    probe = "import importlib.util as u, sys; print(*(bool(u.find_spec(m)) for m in sys.argv[1:]))"
    found = _run(venv / "bin" / "python", "-c", probe, "bench", "conveyor_worker", "rich")
    assert found.split() == ["False", "True", "True"]  # no benchmarks; worker SDK, rich there
    assert "bench" not in _run(venv / "bin" / "conveyor", "--help")

    port = _free_port()
    env = {**os.environ, **_image_env(), "PATH": f"{venv / 'bin'}:{os.environ['PATH']}"}
    env["CONVEYOR_LISTEN"] = f"0.0.0.0:{port}"  # all interfaces, as in the image
    env["CONVEYOR_DATA_DIR"] = str(tmp_path / "data")
    env.pop("CONVEYOR_METRICS_LISTEN", None)  # the image's metrics port may be taken here
    env["CONVEYOR_AUTH_TOKEN"] = "image-token"  # as the docs tell: health needs none
    health = [str(venv / "bin" / "conveyor"), "health", "--target", f"127.0.0.1:{port}"]
    broker = subprocess.Popen(
        [str(venv / "bin" / "conveyor"), "serve"],
        cwd="/",
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert broker.stdout is not None
        line = ""
        for line in broker.stdout:
            if line.startswith("conveyor serving on"):
                break
        assert f"0.0.0.0:{port}" in line, line
        assert "SERVING" in _run(*health)
    finally:
        broker.terminate()
        broker.communicate(timeout=30)
    down = subprocess.run(health, capture_output=True, text=True, timeout=60, cwd="/")
    assert down.returncode == 1, down.stdout
