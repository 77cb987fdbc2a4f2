"""Client fixtures: the brokers the client tests talk to run on LMDB, then on PostgreSQL."""

from __future__ import annotations

import pytest

from tests.conftest import BOTH_STORES


@pytest.fixture(scope="module", params=BOTH_STORES)
def broker_store(request: pytest.FixtureRequest) -> str:
    """Every broker fixture here runs on LMDB, then on PostgreSQL."""
    return str(request.param)
