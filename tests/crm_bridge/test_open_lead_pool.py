"""``CrmDirectory.open_lead`` on one Redis holds one pooled connection per caller: as many callers
at once as the pool has connections never wait on each other for a second one (the WATCH path;
a Redis Cluster has no WATCH: tests/cluster does not import this module)."""

from __future__ import annotations

import asyncio

from redis.asyncio import BlockingConnectionPool, Redis

from crm_bridge import RedisCrm
from crm_bridge.directory import CrmDirectory
from crm_bridge.indexes import leads_of


async def test_as_many_callers_as_the_pool_has_connections_do_not_wait_for_each_other(redis_url: str) -> None:
    """Each caller holds one connection at a time: one that held its WATCH connection while it read
    through the pool deadlocked with the others until the pool's timeout (ConnectionError)."""
    n = 4
    redis = Redis.from_pool(BlockingConnectionPool.from_url(redis_url, max_connections=n, timeout=2))
    try:
        directory = CrmDirectory(RedisCrm(redis))
        with_lead = [str((await directory.create_contact({"name": f"Has {i}"}))["id"]) for i in range(n)]
        leads = [str((await directory.create_lead({}, contact_id=cid))["id"]) for cid in with_lead]
        assert await asyncio.gather(*(directory.open_lead(cid) for cid in with_lead)) == leads
        without = [str((await directory.create_contact({"name": f"New {i}"}))["id"]) for i in range(n)]
        made = await asyncio.gather(*(directory.open_lead(cid) for cid in without))
        assert [(await leads_of(redis, [cid]))[cid] for cid in without] == [[lid] for lid in made]
    finally:
        await redis.aclose()
