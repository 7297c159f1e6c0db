"""Fixtures of the store's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from bot.store.embedded import EmbeddedRedis


@pytest.fixture
async def private_redis() -> AsyncIterator[Redis]:
    """A Redis of the test's own: its maxmemory is changed with CONFIG SET (a full Redis)."""
    server = EmbeddedRedis(None, persist=False)
    client = Redis.from_url(await server.astart())
    try:
        yield client
    finally:
        await client.aclose()
        await server.astop()
