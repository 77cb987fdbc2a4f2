"""`conveyor schedules` and `conveyor schedule ...` against a real broker, with tokens and TLS."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conveyor import Client
from tests.e2e.test_security import pki  # noqa: F401 (a fixture)

MAIN = "import sys; from conveyor_server.cli import main; main(sys.argv[1:])"


def conveyor(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {
        k: v for k, v in os.environ.items() if k not in ("CONVEYOR_TOKEN", "CONVEYOR_TARGET")
    }
    return subprocess.run(
        [sys.executable, "-c", MAIN, *args],
        env={**environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def one_line_error(done: subprocess.CompletedProcess[str], code: int) -> str:
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    return done.stderr


def test_payload_is_json_by_default_and_the_readmes_handler_gets_a_dict(shared_broker):
    target = ("--target", shared_broker.address)
    added = conveyor("schedule", "add", "thumbs", "--cron", "@hourly", "--kind", "thumbnails.make",
                     "--queue", "cli-json", "--payload", '{"path": "s.png"}', *target)  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert conveyor("schedule", "trigger", "thumbs", *target).returncode == 0
    with Client(shared_broker.address) as client:
        [task] = client.lease("cli-json", wait=5)
    assert task.payload == {"path": "s.png"} and task.content_type == "application/json"


def test_content_type_overrides_json(shared_broker):
    target = ("--target", shared_broker.address)
    added = conveyor("schedule", "add", "plain", "--every", "1h", "--kind", "k",
                     "--queue", "cli-text", "--payload", "not json",
                     "--content-type", "text/plain", *target)  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert conveyor("schedule", "trigger", "plain", *target).returncode == 0
    with Client(shared_broker.address) as client:
        [task] = client.lease("cli-text", wait=5)
    assert task.payload_bytes == b"not json" and task.content_type == "text/plain"


def test_show_prints_readable_times(shared_broker):
    target = ("--target", shared_broker.address)
    assert (
        conveyor("schedule", "add", "shown", "--every", "5m", "--kind", "k", *target).returncode
        == 0
    )
    shown = conveyor("schedule", "show", "shown", *target)
    assert shown.returncode == 0, shown.stderr
    assert "seconds:" not in shown.stdout
    assert "every 300s" in shown.stdout or "every 5m" in shown.stdout
    lines = {line.split(":", 1)[0].strip(): line for line in shown.stdout.splitlines()}
    assert "next fire" in lines and "Z" in lines["next fire"], shown.stdout


@pytest.mark.parametrize(
    "args",
    [
        ("schedule", "add", "bad-json", "--cron", "@hourly", "--kind", "k", "--payload", "{oops"),
        ("schedule", "add", "bad-cron", "--cron", "99 * * * *", "--kind", "k"),
        ("schedule", "add", "bad-header", "--cron", "@hourly", "--kind", "k", "--header", "nokey"),
        (
            "schedule",
            "add",
            "bad-start",
            "--cron",
            "@hourly",
            "--kind",
            "k",
            "--start",
            "2026-01-01",
        ),
        ("schedule", "add", "bad-every", "--every", "soon", "--kind", "k"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(shared_broker, args):
    one_line_error(conveyor(*args, "--target", shared_broker.address), 2)


def test_a_missing_schedule_and_an_unreachable_broker_are_one_line(shared_broker):
    assert "not found" in one_line_error(
        conveyor("schedule", "show", "nosuch", "--target", shared_broker.address), 1
    )
    one_line_error(conveyor("schedules", "--target", "127.0.0.1:1", "--timeout", "2"), 1)


def test_token_comes_from_the_flag_or_conveyor_token(broker_factory):
    broker = broker_factory("--auth-token", "s3cret")
    target = ("--target", broker.address)
    assert "UNAUTHENTICATED" in one_line_error(conveyor("schedules", *target), 1).upper()
    assert conveyor("schedules", *target, "--token", "s3cret").returncode == 0
    env = {"CONVEYOR_TOKEN": "s3cret", "CONVEYOR_TARGET": broker.address}
    listed = conveyor("schedules", env=env)
    assert listed.returncode == 0 and "NAME" in listed.stdout, listed.stderr


def test_tls_and_mutual_tls_options(broker_factory, pki):  # noqa: F811
    broker = broker_factory(
        "--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key"),
        "--tls-client-ca", str(pki / "ca.pem"),
    )  # fmt: skip
    tls = ("--target", broker.address, "--tls-ca", str(pki / "ca.pem"))
    client_cert = ("--tls-cert", str(pki / "client.pem"), "--tls-key", str(pki / "client.key"))
    added = conveyor("schedule", "add", "tls", "--every", "1h", "--kind", "k", *tls, *client_cert)
    assert added.returncode == 0, added.stderr
    one_line_error(conveyor("schedules", *tls, "--timeout", "3"), 1)  # no client certificate
