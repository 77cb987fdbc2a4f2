"""`conveyor worker`: bad paths, bad settings and permanent refusals end in one line."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conveyor import Client

MAIN = "import sys; from conveyor_server.cli import main; main(sys.argv[1:])"

APP = textwrap.dedent(
    """
    from conveyor_worker import Worker

    worker = Worker("127.0.0.1:1", queues=["cli-token"], poll_wait=1)
    not_a_worker = 42

    @worker.handler("hello")
    def hello(payload, ctx):
        return {"hello": payload}
    """
)


def conveyor(tmp_path: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 30):
    (tmp_path / "cli_app.py").write_text(APP)
    return subprocess.run(
        [sys.executable, "-c", MAIN, *args],
        cwd=tmp_path,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("nosuch:worker", "nosuch"),
        ("cli_app:missing", "missing"),
        ("cli_app:not_a_worker", "not a Worker"),
        ("no-colon", "module:attribute"),
    ],
)
def test_a_bad_worker_path_is_one_line_and_exit_2(tmp_path, path, says):
    done = conveyor(tmp_path, "worker", path)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert says in done.stderr and len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("value", ["0", "-3"])
def test_concurrency_below_one_is_refused(tmp_path, value):
    done = conveyor(tmp_path, "worker", "cli_app:worker", "--concurrency", value)
    assert done.returncode == 2 and "--concurrency" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_bad_queue_name_stops_the_worker_with_the_brokers_message(tmp_path, shared_broker):
    done = conveyor(
        tmp_path, "worker", "cli_app:worker", "--target", shared_broker.address,
        "--queues", "bad queue!",
    )  # fmt: skip
    assert done.returncode != 0
    assert "queue" in done.stderr and "Traceback" not in done.stderr


def test_the_worker_takes_its_token_from_conveyor_token(tmp_path, broker_factory):
    broker = broker_factory("--auth-token", "s3cret")
    (tmp_path / "cli_app.py").write_text(APP)
    process = subprocess.Popen(
        [sys.executable, "-c", MAIN, "worker", "cli_app:worker", "--target", broker.address],
        cwd=tmp_path,
        env={**os.environ, "CONVEYOR_TOKEN": "s3cret"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        with Client(broker.address, token="s3cret") as client:
            task = client.enqueue("hello", "you", queue="cli-token")
            assert client.result(task.id, timeout=15) == {"hello": "you"}
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
