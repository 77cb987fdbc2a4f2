"""Edges of the worker SDK: results over the broker's limit, content types, bad settings."""

from __future__ import annotations

import pytest

from conveyor import Client, TaskFailed, TaskState, errors
from conveyor.serializer import Encoded
from conveyor_worker import Worker


@pytest.mark.parametrize("transport", ["stream", "unary"])
def test_a_result_over_the_broker_limit_fails_the_task_for_good(
    broker_factory, run_worker, transport
):
    broker = broker_factory("--max-payload-bytes", "1000")
    worker = Worker(broker.address, queues=["big"], poll_wait=1, transport=transport)
    runs: list[int] = []

    @worker.handler("big")
    def big(payload, ctx):
        runs.append(ctx.attempt)
        return "x" * 2000

    with Client(broker.address) as client:
        task = client.enqueue("big", None, queue="big", lease_duration=2, max_attempts=3)
        with run_worker(worker), pytest.raises(TaskFailed) as info:
            client.result(task.id, timeout=15)
    assert info.value.error_type == "ResultTooLarge"
    assert "2002 bytes" in info.value.error_message and "1000 bytes" in info.value.error_message
    assert info.value.task.state is TaskState.DEAD and runs == [1]


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("application/json; charset=utf-8", {"type": "dict", "value": {"path": "s.png"}}),
        ("APPLICATION/JSON", {"type": "dict", "value": {"path": "s.png"}}),
        # No type: opaque bytes, as docs/protocol.md says (the handler sees bytes).
        ("", {"type": "bytes", "value": '{"path": "s.png"}'}),
    ],
)
def test_json_content_types_reach_the_handler_decoded(
    shared_broker, client, run_worker, content_type, expected
):
    worker = Worker(shared_broker.address, queues=["ct"], poll_wait=1)

    @worker.handler("echo")
    def echo(payload, ctx):
        value = payload.decode() if isinstance(payload, bytes) else payload
        return {"type": type(payload).__name__, "value": value}

    task = client.enqueue("echo", Encoded(b'{"path": "s.png"}', content_type), queue="ct")
    with run_worker(worker):
        assert client.result(task.id, timeout=10) == expected


def test_an_undecodable_json_payload_is_a_clear_task_error(shared_broker, client, run_worker):
    worker = Worker(shared_broker.address, queues=["ct-bad"], poll_wait=1)

    @worker.handler("echo")
    def echo(payload, ctx):
        return payload

    task = client.enqueue("echo", Encoded(b"{not json", "application/json"), queue="ct-bad")
    with run_worker(worker), pytest.raises(TaskFailed) as info:
        client.result(task.id, timeout=10)
    assert info.value.error_type == "PayloadDecodeError"
    assert "application/json" in info.value.error_message
    assert info.value.task.attempt == 1


@pytest.mark.parametrize("concurrency", [0, -1])
def test_a_worker_without_slots_is_refused(concurrency):
    with pytest.raises(ValueError, match="concurrency"):
        Worker("127.0.0.1:1", concurrency=concurrency)


@pytest.mark.parametrize("transport", ["stream", "unary"])
def test_a_bad_queue_name_stops_the_worker_with_the_brokers_message(shared_broker, transport):
    worker = Worker(shared_broker.address, queues=["bad queue!"], transport=transport)
    with pytest.raises(errors.InvalidArgument, match="queue"):
        worker.run()
