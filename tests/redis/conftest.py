from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from tests.redis.server import RedisServer, running_redis


@pytest.fixture(scope="session")
def shared_redis() -> Iterator[RedisServer]:
    """One server for the tests that never stop it (each uses its own key prefix)."""
    with running_redis() as server:
        yield server


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A server of the test's own, which it may kill and restart."""
    with running_redis() as server:
        yield server
    # What the client left of failed connections is collected here, under the
    # test's own warning filters, not in a later test.
    gc.collect()
