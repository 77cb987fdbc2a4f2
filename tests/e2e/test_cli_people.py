"""The commands for people against a real broker: `conveyor queues|tasks|task|enqueue|pause|
resume|purge|retry|delete|workers|top|health`, each run as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

from conveyor import Client


def conveyor(*args: str, target: str | None = None, stdin: str | None = None, **env: str):  # type: ignore[no-untyped-def]
    full_env = {**os.environ, **env, "COLUMNS": "200"}
    command = [sys.executable, "-m", "conveyor_server", *args]
    if target is not None:
        command += ["--target", target]
    return subprocess.run(
        command, input=stdin, capture_output=True, text=True, timeout=60, env=full_env
    )


@pytest.fixture
def queue() -> str:
    return f"cli-{uuid.uuid4().hex[:8]}"


def test_enqueue_then_queues_tasks_and_task(shared_broker, queue) -> None:
    address = shared_broker.address
    made = conveyor(
        "enqueue", "mail.send", "--queue", queue, "--json", '{"to": "a"}', target=address
    )
    assert made.returncode == 0, made.stderr
    task_id = made.stdout.split()[0]
    piped = conveyor("enqueue", "mail.send", "--queue", queue, target=address, stdin='{"to": "b"}')
    assert piped.returncode == 0, piped.stderr
    listed = conveyor("queues", "--json", target=address)
    [mine] = [q for q in json.loads(listed.stdout) if q["name"] == queue]
    assert mine["counts"] == {"READY": 2}
    table = conveyor("queues", target=address)
    assert queue in table.stdout and "READY" in table.stdout
    tasks = json.loads(conveyor("tasks", "--queue", queue, "--json", target=address).stdout)
    assert len(tasks) == 2 and tasks[0]["id"] == task_id
    assert tasks[0]["payload"] is None  # ListTasks leaves payloads out
    shown = json.loads(conveyor("task", task_id, "--json", target=address).stdout)
    assert shown["payload"] == {"to": "a"} and shown["state"] == "READY"


def test_task_shows_the_error_and_traceback_of_a_dead_task(shared_broker, queue) -> None:
    with Client(shared_broker.address) as client:
        task = client.enqueue("job", {}, queue=queue, max_attempts=1)
        [leased] = client.lease(queue)
        client.fail(leased, "KeyError", "'x'", details="Traceback (most recent call last):\n  boom")
    out = conveyor("task", task.id, target=shared_broker.address)
    assert out.returncode == 0, out.stderr
    assert "DEAD" in out.stdout and "KeyError: 'x'" in out.stdout
    assert "Traceback (most recent call last):" in out.stdout
    retried = conveyor("retry", task.id, target=shared_broker.address)
    assert retried.stdout.strip() == "retried 1 task(s)"
    again = conveyor("retry", task.id, target=shared_broker.address)
    assert again.returncode == 1 and "READY" in again.stderr


def test_pause_resume_purge_retry_by_queue(shared_broker, queue) -> None:
    address = shared_broker.address
    assert conveyor("pause", queue, target=address).stdout.startswith(f"queue {queue} paused")
    with Client(address) as client:
        for n in range(3):
            client.enqueue("job", {"n": n}, queue=queue)
        assert client.lease(queue) == []
        assert conveyor("resume", queue, target=address).returncode == 0
        for task in client.lease(queue, 2):
            client.fail(task, "E", "bad", retryable=False)
    refused = conveyor("purge", queue, target=address, stdin="")
    assert refused.returncode == 2 and "--yes" in refused.stderr
    purged = conveyor("purge", queue, "--yes", target=address)
    assert purged.stdout.strip() == f"purged 1 task(s) from {queue}"
    retried = conveyor("retry", "--queue", queue, "--state", "dead", target=address)
    assert retried.stdout.strip() == "retried 2 task(s)", retried.stderr
    top = conveyor("top", "--iterations", "2", "--interval", "0.1", target=address)
    assert top.returncode == 0 and top.stdout.count("conveyor top") == 2 and queue in top.stdout
    frames = conveyor("top", "--iterations", "1", "--json", target=address).stdout
    assert queue in {q["name"] for q in json.loads(frames)["queues"]}


def test_workers_lists_a_lease_caller(shared_broker, queue) -> None:
    with Client(shared_broker.address) as client:
        client.lease(queue, worker_id="cli-w1")
    workers = json.loads(conveyor("workers", "--json", target=shared_broker.address).stdout)
    assert queue in {q for w in workers if w["id"] == "cli-w1" for q in w["queues"]}


def test_bad_input_is_one_line_and_exit_2(shared_broker, queue) -> None:
    address = shared_broker.address
    for args in (
        ("enqueue", "job", "--json", "{nope"),
        ("pause", "bad name"),
        ("tasks", "--limit", "0"),
        ("tasks", "--state", "WAITING"),
        ("retry", "--state", "READY", "--queue", queue),
        ("retry",),
    ):
        out = conveyor(*args, target=address)
        assert out.returncode == 2, (args, out.stdout, out.stderr)
        assert len(out.stderr.strip().splitlines()) == 1, (args, out.stderr)
    missing = conveyor("task", "no-such-task", target=address)
    assert missing.returncode == 1 and "not found" in missing.stderr


def test_health_exit_codes_and_target_from_env(shared_broker) -> None:
    ok = conveyor("health", CONVEYOR_TARGET=shared_broker.address)
    assert ok.returncode == 0 and "SERVING" in ok.stdout
    down = conveyor("health", "--target", "127.0.0.1:1")
    assert down.returncode == 1 and "UNREACHABLE" in down.stdout


def test_token_is_sent(broker_factory) -> None:
    broker = broker_factory("--auth-token", "s3cret")
    refused = conveyor("queues", target=broker.address)
    assert refused.returncode == 1 and "token" in refused.stderr.lower()
    ok = conveyor("queues", "--json", target=broker.address, CONVEYOR_TOKEN="s3cret")
    assert ok.returncode == 0, ok.stderr
