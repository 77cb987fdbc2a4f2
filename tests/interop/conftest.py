"""Interop fixtures: the Node and Go examples, built once per session, run as real processes.

Under CI=true a missing node, go or protoc fails the tests (see require_tool); elsewhere
they skip. Go builds in GOPATH mode against Debian's Go sources, in a temp GOPATH; the
compile cache is Go's own (GOCACHE), so a second session builds in seconds.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parents[2]
NODE_DIR = ROOT / "examples" / "node"
GO_DIR = ROOT / "examples" / "go"
#: Where Debian's golang-*-dev packages put their sources (a GOPATH entry).
DEBIAN_GOCODE = Path("/usr/share/gocode")
_END = object()


def _missing(what: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is required in CI (see .ci/run)")
    pytest.skip(what)


@dataclass(frozen=True)
class Language:
    """How to run one language's example producer and worker."""

    name: str
    producer: list[str]
    worker: list[str]
    cwd: Path


@pytest.fixture(scope="session")
def node() -> Language:
    executable = require_tool("node")
    if not (NODE_DIR / "node_modules" / "@grpc" / "grpc-js").is_dir():
        _missing("examples/node/node_modules (run `npm ci` in examples/node)")
    return Language(
        "node",
        [executable, str(NODE_DIR / "producer.js")],
        [executable, str(NODE_DIR / "worker.js")],
        NODE_DIR,
    )


@pytest.fixture(scope="session")
def go(tmp_path_factory: pytest.TempPathFactory) -> Language:
    for tool in ("go", "protoc", "protoc-gen-go", "protoc-gen-go-grpc"):
        require_tool(tool)
    if not (DEBIAN_GOCODE / "src" / "google.golang.org" / "grpc").is_dir():
        _missing("Debian's golang-google-grpc-dev (GOPATH mode needs its sources)")
    gopath = tmp_path_factory.mktemp("gopath")
    source = gopath / "src" / "conveyor.dev" / "go"
    shutil.copytree(GO_DIR, source, ignore=shutil.ignore_patterns("bin", "conveyor"))
    env = {
        **os.environ,
        "GOPATH": f"{gopath}{os.pathsep}{DEBIAN_GOCODE}",
        "GO111MODULE": "off",
        "GOFLAGS": "",
        "CONVEYOR_PROTO_DIR": str(ROOT / "proto"),
    }
    if "GOCACHE" not in env and "HOME" not in env:
        env["GOCACHE"] = str(gopath / "cache")
    for command in (["./gen.sh"], ["go", "build", "-o", "bin/", "./cmd/..."]):
        built = subprocess.run(
            command, cwd=source, env=env, capture_output=True, text=True, timeout=300
        )
        assert built.returncode == 0, f"{command}: {built.stdout}{built.stderr}"
    return Language(
        "go", [str(source / "bin" / "producer")], [str(source / "bin" / "worker")], source
    )


@pytest.fixture(params=["node", "go"])
def lang(request: pytest.FixtureRequest) -> Language:
    """Each test that takes `lang` runs once with Node and once with Go."""
    return request.getfixturevalue(request.param)


class Proc:
    """An example process whose stdout is JSON lines, read on a thread; every wait is bounded."""

    def __init__(self, command: list[str], address: str, cwd: Path, env: dict[str, str]) -> None:
        self.command = command
        self.lines: queue.Queue[object] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        self.process = subprocess.Popen(
            command,
            cwd=cwd,
            env={**os.environ, "CONVEYOR_ADDRESS": address, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(json.loads(line))
        self.lines.put(_END)

    def next(self, timeout: float = 15.0) -> dict[str, Any] | None:
        """The next JSON line, or None at end of output."""
        try:
            item = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(
                f"{self.command[0]}: no output in {timeout} s; {self.seen}"
            ) from None
        if item is _END:
            return None
        assert isinstance(item, dict)
        self.seen.append(item)
        return item

    def wait_for(self, event: str, timeout: float = 15.0) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while (line := self.next(max(0.01, end - time.monotonic()))) is not None:
            if line.get("event") == event:
                return line
        raise AssertionError(f"no {event!r} event: {self.seen}\n{self.stderr()}")

    def finish(self, timeout: float = 20.0) -> list[dict[str, Any]]:
        """Wait for a clean exit; returns every line it printed."""
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"{self.command} still running after {timeout} s: {self.seen}"
            ) from None
        while self.next(5) is not None:
            pass
        assert code == 0, f"{self.command} exited {code}: {self.stderr()}"
        return self.seen

    def stderr(self) -> str:
        if self.process.poll() is None or self.process.stderr is None:
            return ""
        return self.process.stderr.read()

    def signal(self, number: signal.Signals) -> None:
        self.process.send_signal(number)

    def kill(self) -> None:
        """End the process (if it still runs) and close its pipes: no leaked file."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        self._reader.join(10)
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def spawn() -> Iterator[Callable[..., Proc]]:
    """spawn(lang, "worker"|"producer", address, *args, env={}) -> Proc; killed at teardown."""
    started: list[Proc] = []

    def start(
        language: Language, role: str, address: str, *args: str, env: dict[str, str] | None = None
    ) -> Proc:
        base = language.worker if role == "worker" else language.producer
        proc = Proc([*base, *args], address, language.cwd, env or {})
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()
