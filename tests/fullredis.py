"""A Redis that refuses writes which may grow memory (``maxmemory`` 1, ``noeviction``) while it
still runs deletes: how a full node, or on a cluster a node away, meets a pipeline of writes and
deletes. On a Redis Cluster every primary is set."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from bot.store.clusterclient import is_cluster


async def _maxmemory(redis: Redis, value: int) -> None:
    if is_cluster(redis):
        await redis.config_set("maxmemory", value, target_nodes=RedisCluster.PRIMARIES)
    else:
        await redis.config_set("maxmemory", value)


@asynccontextmanager
async def refusing_writes(redis: Redis) -> AsyncIterator[None]:
    """Within: every write that may grow memory is refused with ``OOM``; after: as before."""
    await _maxmemory(redis, 1)
    try:
        yield
    finally:
        await _maxmemory(redis, 0)
