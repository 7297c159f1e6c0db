"""Keys renamed for Redis Cluster are merged into their new names at start (bot/store/layout.py)."""

from __future__ import annotations

from redis.asyncio import Redis

from bot.config import load_config
from bot.server.services import open_services
from bot.store import keys as k
from tests.server.conftest import NO_AUTOMATIONS


async def test_timers_of_the_old_layout_are_kept_under_the_new_keys(redis: Redis, redis_url: str) -> None:
    await redis.zadd("sb:timers:3", {"livechat:demo:a:t1": 100.0, "livechat:demo:b:t2": 50.0})
    await redis.zadd(k.timer_shard_key(3), {"livechat:demo:b:t2": 70.0, "livechat:demo:c:t3": 10.0})
    await redis.zadd("sb:timers:3:claimed", {"livechat:demo:d:t4": 5.0})
    config = load_config(env={}, overrides={"redis_url": redis_url, "admin_token": "t", "flows_dir": "/nonexistent",
                                            "automations_dir": str(NO_AUTOMATIONS)})
    async with open_services(config, start_hub=False, load_flows=False):
        pass
    assert not await redis.exists("sb:timers:3", "sb:timers:3:claimed")
    merged = {m.decode(): s for m, s in await redis.zrange(k.timer_shard_key(3), 0, -1, withscores=True)}
    assert merged == {"livechat:demo:a:t1": 100.0, "livechat:demo:b:t2": 50.0, "livechat:demo:c:t3": 10.0}
    assert await redis.zrange(k.timer_claimed_key(3), 0, -1, withscores=True) == [(b"livechat:demo:d:t4", 5.0)]
