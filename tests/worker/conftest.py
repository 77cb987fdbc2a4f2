"""Worker fixtures: run a Worker in a background thread against the test broker."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from conveyor import Client
from conveyor_worker import Worker


@contextmanager
def running(worker: Worker) -> Iterator[Worker]:
    """Run the worker in a thread; stop it gracefully and check it ended."""
    thread = threading.Thread(target=worker.run, name="test-worker", daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(30)
        assert not thread.is_alive(), "the worker did not stop"


@pytest.fixture
def run_worker() -> Callable[[Worker], object]:
    return running


@pytest.fixture(scope="module")
def client(shared_broker) -> Iterator[Client]:
    with Client(shared_broker.address) as c:
        yield c
