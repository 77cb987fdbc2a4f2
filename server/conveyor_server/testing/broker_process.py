"""Run a real `conveyor serve` subprocess on a loopback port: for tests, benchmarks and demos."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

_SERVING = re.compile(r"conveyor serving on (\S+:\d+)")
_METRICS = re.compile(r"^conveyor serving on \S+:\d+, metrics on (\S+:\d+)")


class BrokerProcess:
    """A broker subprocess with its own data dir. `start`, `stop` (SIGTERM), `kill` (SIGKILL).

    With `database_url` it serves the PostgreSQL store there (`--database-url`) instead of
    LMDB in the data dir; several processes may share one database.

    Unless `extra_args` name `--metrics-listen`, /metrics listens on a free loopback port
    (kept on restart, like the gRPC port): `metrics_address` once started.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        extra_args: Sequence[str] = (),
        port: int = 0,
        *,
        database_url: str = "",
    ) -> None:
        self.data_dir = Path(data_dir)
        self.database_url = database_url
        self.extra_args = list(extra_args)
        self.port = port
        self.process: subprocess.Popen[str] | None = None
        self.address = ""
        self.metrics_address = ""
        self.metrics_port = 0
        self._picks_metrics_port = not any(
            arg.split("=", 1)[0] == "--metrics-listen" for arg in self.extra_args
        )
        self.log_lines: list[str] = []
        self._drainer: threading.Thread | None = None

    def start(self, timeout: float = 20.0) -> str:
        """Start the broker and return its address once it serves. The port is kept on restart."""
        command = [
            sys.executable,
            "-m",
            "conveyor_server",
            "serve",
            "--listen",
            f"127.0.0.1:{self.port}",
            "--data-dir",
            str(self.data_dir),
            *self.extra_args,
        ]
        if self.database_url:
            command += ["--database-url", self.database_url]
        if self._picks_metrics_port:
            command += ["--metrics-listen", f"127.0.0.1:{self.metrics_port}"]
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        deadline = time.monotonic() + timeout
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.log_lines.append(line)
            metrics = _METRICS.search(line)
            if metrics:
                self.metrics_address = metrics.group(1)
                if self._picks_metrics_port:
                    self.metrics_port = int(self.metrics_address.rsplit(":", 1)[1])
            match = _SERVING.search(line)
            if match and "INFO" not in line:
                self.address = match.group(1)
                self.port = int(self.address.rsplit(":", 1)[1])
                break
            if time.monotonic() > deadline:
                break
        if not self.address or self.process.poll() is not None:
            self.kill()
            raise RuntimeError("broker did not start:\n" + "".join(self.log_lines))
        self._drainer = threading.Thread(target=self._drain, args=(self.process,), daemon=True)
        self._drainer.start()
        return self.address

    def _drain(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.log_lines.append(line)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait: the graceful path. Returns the exit code."""
        if self.process is None:
            return 0
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout)
        self._reap()
        return code

    def kill(self) -> None:
        """SIGKILL: the crash path."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self._reap()

    def _reap(self) -> None:
        """After the exit: read the rest of the output, then close the pipe (no leaked fd)."""
        assert self.process is not None
        if self._drainer is not None:
            self._drainer.join(timeout=10)
            self._drainer = None
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.process = None

    def restart(self) -> str:
        self.kill()
        return self.start()

    @property
    def log(self) -> str:
        return "".join(self.log_lines)
