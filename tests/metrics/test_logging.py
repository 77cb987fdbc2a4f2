"""--log-format json writes one JSON object per line; task outcomes appear at debug level;
a bearer token never appears in the log, whatever the format."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable

import pytest

from conveyor import Client
from conveyor.errors import Unauthenticated
from conveyor_server.log_format import REDACTED, JsonFormatter, RedactSecrets
from conveyor_server.testing import BrokerProcess

TOKEN = "s3cret-token-value-42"


def _workload(broker: BrokerProcess, token: str) -> None:
    client = Client(broker.address, token=token)
    try:
        task = client.enqueue("job", {"a": 1}, queue="logged")
        (leased,) = client.lease("logged", 1)
        client.fail(leased, "ValueError", f"worker saw {token}", retryable=False)
        assert client.get_task(task.id).state.name == "DEAD"
    finally:
        client.close()
    wrong = Client(broker.address, token="wrong-" + token)
    try:
        with pytest.raises(Unauthenticated):
            wrong.enqueue("job", {}, queue="logged")
    finally:
        wrong.close()


def test_json_lines_debug_outcomes_and_no_token(broker_factory: Callable[..., BrokerProcess]):
    broker = broker_factory(
        "--log-format", "json", "--log-level", "DEBUG", "--auth-token", TOKEN
    )  # fmt: skip
    _workload(broker, TOKEN)
    broker.stop()
    lines = [line for line in broker.log.splitlines() if line.strip()]
    records = [json.loads(line) for line in lines if not line.startswith("conveyor ")]
    assert records, broker.log
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    messages = [r["message"] for r in records if r["logger"] == "conveyor.tasks"]
    assert any(" enqueued: now READY" in m for m in messages), messages
    assert any(" leased: now LEASED" in m for m in messages), messages
    assert any(" failed: now DEAD" in m for m in messages), messages
    assert TOKEN not in broker.log
    assert REDACTED in broker.log  # the failure message carried it, and was logged


def test_text_format_at_info_has_no_per_task_lines(broker_factory):
    broker = broker_factory("--auth-token", TOKEN)
    _workload(broker, TOKEN)
    broker.stop()
    assert "now READY" not in broker.log and "now LEASED" not in broker.log
    assert TOKEN not in broker.log
    assert " INFO conveyor" in broker.log


def test_redaction_covers_arguments_and_tracebacks() -> None:
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "token %s used", (TOKEN,), None)
    try:
        raise RuntimeError(f"bad {TOKEN}")
    except RuntimeError:
        record.exc_info = sys.exc_info()
    assert RedactSecrets([TOKEN]).filter(record)
    line = JsonFormatter().format(record)
    assert TOKEN not in line
    entry = json.loads(line)
    assert entry["message"] == f"token {REDACTED} used"
    assert REDACTED in entry["exception"] and "RuntimeError" in entry["exception"]
