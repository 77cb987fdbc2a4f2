"""What happens to a task when its handler raises, retries, times out, or is cancelled."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from datetime import timedelta

import pytest

from conveyor import RetryPolicy, TaskCancelled, TaskFailed, TaskState
from conveyor_worker import Fatal, Retry, Worker

FAST_RETRY = RetryPolicy(initial_backoff=timedelta(milliseconds=100), jitter=0)


def make_worker(shared_broker, queue, **kwargs):
    kwargs.setdefault("poll_wait", 1)
    return Worker(shared_broker.address, queues=[queue], **kwargs)


def test_exceptions_retry_with_backoff_then_succeed(shared_broker, client, run_worker):
    worker = make_worker(shared_broker, "o-retry")
    attempts: list[tuple[int, float]] = []

    @worker.handler("flaky")
    def flaky(payload, ctx):
        attempts.append((ctx.attempt, time.monotonic()))
        if ctx.attempt < 3:
            raise ValueError(f"attempt {ctx.attempt} failed")
        return "finally"

    retry_policy = RetryPolicy(initial_backoff=timedelta(milliseconds=200), multiplier=2, jitter=0)
    t = client.enqueue("flaky", None, queue="o-retry", max_attempts=3, retry_policy=retry_policy)
    with run_worker(worker):
        assert client.result(t.id, timeout=15) == "finally"
    got = client.get_task(t.id)
    assert got.attempt == 3 and got.last_error.type == "ValueError"
    assert "attempt 2 failed" in got.last_error.message
    assert "Traceback" in got.last_error.details
    gaps = [b[1] - a[1] for a, b in itertools.pairwise(attempts)]
    assert gaps[0] >= 0.18 and gaps[1] >= 0.38  # 200 ms, then 400 ms


def test_exhausted_attempts_end_dead(shared_broker, client, run_worker):
    worker = make_worker(shared_broker, "o-exhaust")

    @worker.handler("always")
    def always(payload, ctx):
        raise RuntimeError("nope")

    t = client.enqueue("always", None, queue="o-exhaust", max_attempts=2, retry_policy=FAST_RETRY)
    with run_worker(worker), pytest.raises(TaskFailed) as info:
        client.result(t.id, timeout=15)
    assert info.value.error_type == "RuntimeError" and info.value.task.attempt == 2


def test_retry_after_delays_the_next_attempt(shared_broker, client, run_worker):
    worker = make_worker(shared_broker, "o-retry-after")
    seen: list[float] = []

    @worker.handler("later")
    def later(payload, ctx):
        seen.append(time.monotonic())
        if ctx.attempt == 1:
            raise Retry("not yet", after=timedelta(seconds=1))
        return ctx.attempt

    t = client.enqueue("later", None, queue="o-retry-after", retry_policy=FAST_RETRY)
    with run_worker(worker):
        assert client.result(t.id, timeout=15) == 2
    assert seen[1] - seen[0] >= 0.95


def test_fatal_and_non_retryable_go_straight_to_dead(shared_broker, client, run_worker):
    worker = make_worker(shared_broker, "o-fatal")

    @worker.handler("fatal")
    def fatal(payload, ctx):
        raise Fatal("bad payload")

    @worker.handler("bad.input", non_retryable=[KeyError])
    def bad_input(payload, ctx):
        return payload["missing"]

    a = client.enqueue("fatal", None, queue="o-fatal", max_attempts=5)
    b = client.enqueue("bad.input", {}, queue="o-fatal", max_attempts=5)
    with run_worker(worker):
        for t, error_type in ((a, "Fatal"), (b, "KeyError")):
            with pytest.raises(TaskFailed) as info:
                client.result(t.id, timeout=10)
            assert info.value.error_type == error_type
            assert info.value.task.state is TaskState.DEAD and info.value.task.attempt == 1


def test_handler_past_its_timeout_fails_with_a_timeout_error(shared_broker, client, run_worker):
    worker = make_worker(shared_broker, "o-timeout", concurrency=2)
    stopped = threading.Event()

    @worker.handler("sync.slow", timeout=timedelta(milliseconds=300))
    def sync_slow(payload, ctx):
        if ctx.wait_for_cancel(5):
            stopped.set()

    @worker.handler("async.slow", timeout=0.3)
    async def async_slow(payload, ctx):
        await asyncio.sleep(5)

    a = client.enqueue("sync.slow", None, queue="o-timeout", max_attempts=1)
    b = client.enqueue("async.slow", None, queue="o-timeout", max_attempts=1)
    started = time.monotonic()
    with run_worker(worker):
        for t in (a, b):
            with pytest.raises(TaskFailed) as info:
                client.result(t.id, timeout=10)
            assert info.value.error_type == "HandlerTimeout"
            assert "timeout" in info.value.error_message
    assert time.monotonic() - started < 4.5  # without the timeouts: 5 s or more
    assert stopped.is_set()  # the sync handler was told to stop


def test_unknown_kind_is_failed_with_a_clear_error(shared_broker, client, run_worker):
    worker = make_worker(shared_broker, "o-unknown")

    @worker.handler("known")
    def known(payload, ctx):
        return 1

    t = client.enqueue("mystery.kind", None, queue="o-unknown", max_attempts=3)
    with run_worker(worker), pytest.raises(TaskFailed) as info:
        client.result(t.id, timeout=10)
    assert info.value.error_type == "UnknownKind"
    assert "mystery.kind" in info.value.error_message and "known" in info.value.error_message
    assert info.value.task.state is TaskState.DEAD


@pytest.mark.parametrize("transport", ["stream", "unary"])
def test_a_burst_of_unknown_kinds_larger_than_the_stack_is_failed_and_work_goes_on(
    shared_broker, client, run_worker, transport
):
    # Tasks that end without running finish synchronously; each freed slot must not start
    # the next one inside the previous call (hundreds deep, that was a RecursionError).
    queue = f"o-burst-{transport}"
    worker = make_worker(shared_broker, queue, concurrency=600, transport=transport)

    @worker.handler("known")
    def known(payload, ctx):
        return "ran"

    unknown = client.enqueue_many([("mystery.kind", None)] * 500, queue=queue, max_attempts=1)
    with run_worker(worker):
        for task in unknown[::50]:
            with pytest.raises(TaskFailed):
                client.result(task.id, timeout=15)
        assert client.result(client.enqueue("known", None, queue=queue).id, timeout=15) == "ran"
    states = {client.get_task(t.id).state for t in unknown}
    assert states == {TaskState.DEAD}


def test_cancel_reaches_a_running_sync_handler(shared_broker, client, run_worker):
    worker = make_worker(shared_broker, "o-cancel", heartbeat=timedelta(milliseconds=200))
    started, saw_cancel = threading.Event(), threading.Event()

    @worker.handler("long")
    def long(payload, ctx):
        started.set()
        for _ in range(100):
            if ctx.is_cancelled:
                saw_cancel.set()
                return "stopped early"
            time.sleep(0.05)
        return "finished"

    t = client.enqueue("long", None, queue="o-cancel")
    with run_worker(worker):
        assert started.wait(10)
        client.cancel(t.id)
        with pytest.raises(TaskCancelled):
            client.result(t.id, timeout=10)
    assert saw_cancel.is_set()
    assert client.get_task(t.id).state is TaskState.CANCELLED


def test_cancel_reaches_a_running_async_handler(shared_broker, client, run_worker):
    worker = make_worker(shared_broker, "o-cancel-async", heartbeat=0.2)
    started = threading.Event()
    outcome: list[str] = []

    @worker.handler("long.async", cancel_on_request=False)
    async def long_async(payload, ctx):
        started.set()
        try:
            await asyncio.wait_for(ctx.wait_cancelled(), 10)
            outcome.append("saw cancel")
        except TimeoutError:
            outcome.append("timed out")

    @worker.handler("long.async.cancelled")
    async def long_async_cancelled(payload, ctx):
        started.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise

    a = client.enqueue("long.async", None, queue="o-cancel-async")
    with run_worker(worker):
        assert started.wait(10)
        client.cancel(a.id)
        with pytest.raises(TaskCancelled):
            client.result(a.id, timeout=10)
        started.clear()
        b = client.enqueue("long.async.cancelled", None, queue="o-cancel-async")
        assert started.wait(10)
        client.cancel(b.id)
        with pytest.raises(TaskCancelled):
            client.result(b.id, timeout=10)
    assert outcome == ["saw cancel", "cancelled"]
