"""Start and drive `bench.worker_main` processes from the benchmark."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from bench.common import RunConfig


@dataclass
class WorkerReport:
    handled: int
    rpcs: int | None  # None: a stream carried the work, calls alone say nothing
    transport: str = ""


class WorkerProcesses:
    """N worker processes on one queue, started together; `go`, then `stop` for the counts.
    Given a list of addresses, one process per address (workers spread over brokers)."""

    def __init__(
        self, address: str | Sequence[str], queue: str, config: RunConfig, processes: int = 1
    ) -> None:
        targets = [address] * processes if isinstance(address, str) else list(address)
        command = [
            sys.executable,
            "-m",
            "bench.worker_main",
            "--queue",
            queue,
            "--handler",
            config.drain_handler,
            *(["--transport", config.drain_transport] if config.drain_transport else []),
            # None: the SDK's own default (the drain-default scenario).
            *(
                []
                if config.drain_concurrency is None
                else ["--concurrency", str(config.drain_concurrency)]
            ),
            *([] if config.drain_prefetch is None else ["--prefetch", str(config.drain_prefetch)]),
        ]
        self.procs = [
            subprocess.Popen(
                [*command, "--target", target],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for target in targets
        ]
        for proc in self.procs:
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            if line != "ready":
                self.kill()
                raise RuntimeError(f"bench worker did not start (said {line!r})")

    @property
    def pids(self) -> list[int]:
        return [proc.pid for proc in self.procs]

    def _say(self, line: str) -> None:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(line + "\n")
            proc.stdin.flush()

    def go(self) -> None:
        self._say("go")

    def stop(self, timeout: float = 30.0) -> WorkerReport:
        """Graceful stop; the totals of handled tasks and RPCs over all processes."""
        self._say("stop")
        report = WorkerReport(0, 0)
        for proc in self.procs:
            out, _ = proc.communicate(timeout=timeout)
            words = out.split()
            if "handled" not in words:
                continue
            report.handled += int(words[words.index("handled") + 1])
            rpcs = int(words[words.index("rpcs") + 1])
            report.rpcs = None if rpcs < 0 or report.rpcs is None else report.rpcs + rpcs
            report.transport = words[words.index("transport") + 1]
        return report

    def kill(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
