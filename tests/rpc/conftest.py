"""RPC-level fixtures: generated stubs on a channel to a real broker subprocess."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from conveyor_server.testing import BrokerProcess
from tests.conftest import BOTH_STORES
from tests.rpc.helpers import Stubs, connect


@pytest.fixture(scope="module", params=BOTH_STORES)
def broker_store(request: pytest.FixtureRequest) -> str:
    """Every broker fixture here runs on LMDB, then on PostgreSQL."""
    return str(request.param)


@pytest.fixture
def stubs(shared_broker: BrokerProcess) -> Iterator[Stubs]:
    s = connect(shared_broker.address)
    yield s
    s.channel.close()


@pytest.fixture
def queue() -> str:
    """A queue name no other test uses, so tests can share one broker."""
    return f"q-{uuid.uuid4().hex[:12]}"
