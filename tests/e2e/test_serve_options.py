"""`conveyor serve` options: declared once, a bad flag or variable refused in one line (exit 2)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conveyor_server import cli
from conveyor_server.config import SERVE_OPTIONS, format_duration, format_size, parse_listen

#: A value each option refuses (every option that parses at all has one here).
_BAD = {
    "--listen": "127.0.0.1:99999",
    "--durability": "maybe",
    "--max-store-bytes": "lots",
    "--max-payload-bytes": "0",
    "--max-batch": "0",
    "--max-waiters": "-1",
    "--max-wait": "soon",
    "--default-lease-duration": "0",
    "--default-max-attempts": "-2",
    "--result-retention": "forever",
    "--shutdown-grace": "1 week",
    "--log-level": "LOUD",
    "--log-format": "xml",
    "--metrics-listen": "127.0.0.1:99999",
    "--auth-token": ",",
    "--database-url": "mysql://localhost/db",
}
_FREE_FORM = {"--data-dir", "--schedules", "--tls-cert", "--tls-key", "--tls-client-ca",
              "--auth-tokens", "--queues-file"}  # fmt: skip


def _serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conveyor_server", "serve", *args],
        capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})},
    )  # fmt: skip


def test_every_option_is_covered_here():
    assert {o.flag for o in SERVE_OPTIONS} == set(_BAD) | _FREE_FORM


@pytest.mark.parametrize("option", [o for o in SERVE_OPTIONS if o.flag in _BAD], ids=str)
def test_a_bad_variable_is_refused_exactly_like_the_flag(option, capsys):
    bad = _BAD[option.flag]
    with pytest.raises(SystemExit) as flag_exit:
        cli.build_parser().parse_args(["serve", option.flag, bad])
    flag_error = capsys.readouterr().err
    os.environ[option.env] = bad
    try:
        with pytest.raises(SystemExit) as env_exit:
            cli.main(["serve"])  # refused before anything opens
    finally:
        del os.environ[option.env]
    env_error = capsys.readouterr().err
    assert flag_exit.value.code == env_exit.value.code == 2
    assert len(flag_error.strip().splitlines()) == len(env_error.strip().splitlines()) == 1
    assert option.env in env_error and bad in env_error
    # The same parser said the same thing about the value.
    assert flag_error.split(": ", 2)[-1].split(" (see")[0] in env_error


@pytest.mark.parametrize(
    "option",
    ["--max-wait", "--default-lease-duration", "--result-retention", "--shutdown-grace"],
)
def test_a_duration_beyond_its_range_is_refused(option, capsys):
    with pytest.raises(SystemExit) as refused:
        cli.build_parser().parse_args(["serve", option, "99999999999999999d"])
    assert refused.value.code == 2 and "out of range" in capsys.readouterr().err


def test_a_bad_serve_variable_leaves_other_commands_and_the_flag_working(tmp_path):
    env = {"CONVEYOR_DURABILITY": "maybe"}
    help_text = subprocess.run(
        [sys.executable, "-m", "conveyor_server", "schedules", "--help"],
        capture_output=True, text=True, timeout=60, env={**os.environ, **env},
    )  # fmt: skip
    assert help_text.returncode == 0, help_text.stderr
    with pytest.raises(SystemExit):  # the flag replaces the bad variable: --help runs
        os.environ.update(env)
        try:
            cli.build_parser().parse_args(["serve", "--durability", "sync", "--help"])
        finally:
            del os.environ["CONVEYOR_DURABILITY"]
    args = None
    os.environ.update(env)
    try:
        args = cli.build_parser().parse_args(["serve", "--durability", "nosync"])
    finally:
        del os.environ["CONVEYOR_DURABILITY"]
    assert args.durability == "nosync"


def test_a_durability_typo_in_the_environment_does_not_start_without_fsync(tmp_path):
    result = _serve("--data-dir", str(tmp_path / "d"), "--listen", "127.0.0.1:0",
                    env={"CONVEYOR_DURABILITY": "maybe"})  # fmt: skip
    assert result.returncode == 2
    assert "CONVEYOR_DURABILITY" in result.stderr and "sync, nosync" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "d").exists(), "refused before anything opened"


@pytest.mark.parametrize(
    "listen", ["127.0.0.1:99999", ":72470", "127.0.0.1", "localhost:", "::1:7"]
)
def test_a_listen_address_that_would_serve_elsewhere_is_refused(listen, tmp_path):
    result = _serve("--listen", listen, "--data-dir", str(tmp_path / "d"))
    assert result.returncode == 2, result.stderr
    assert "--listen" in result.stderr and "Traceback" not in result.stderr


def test_a_bad_log_level_and_a_data_dir_that_is_a_file_get_one_line(tmp_path):
    level = _serve("--log-level", "LOUD", "--listen", "127.0.0.1:0")
    a_file = tmp_path / "file"
    a_file.write_text("x")
    data_dir = _serve("--data-dir", str(a_file), "--listen", "127.0.0.1:0")
    for result in (level, data_dir):
        assert result.returncode == 2
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "not a directory" in data_dir.stderr


def test_a_second_broker_on_a_served_port_refuses_to_start(broker, tmp_path):
    port = broker.address.rsplit(":", 1)[1]
    result = _serve("--listen", f"127.0.0.1:{port}", "--data-dir", str(tmp_path / "second"))
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
    with socket.create_connection(("127.0.0.1", int(port)), timeout=5):
        pass  # the first broker still serves


def test_listen_values_are_normalised_and_checked():
    assert parse_listen(" 127.0.0.1:0 ") == "127.0.0.1:0"
    assert parse_listen("[::1]:7470") == "[::1]:7470"
    with pytest.raises(ValueError, match="brackets"):
        parse_listen("::1:7470")


def test_help_shows_defaults_as_people_write_them():
    text = subprocess.run(
        [sys.executable, "-m", "conveyor_server", "serve", "--help"],
        capture_output=True, text=True, timeout=60,
    ).stdout  # fmt: skip
    flat = " ".join(text.split())
    for expected in ("default 32GiB", "default 1MiB", "default 24h", "default 30s", "default 1m"):
        assert expected in flat
    assert (format_size(600 * 1024), format_duration(0.25), format_duration(90)) == (
        "600KiB", "250ms", "90s",
    )  # fmt: skip


def test_version(tmp_path: Path):
    result = subprocess.run(
        [sys.executable, "-m", "conveyor_server", "--version"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    from conveyor_server import __version__

    assert result.stdout.strip() == f"conveyor {__version__}"
