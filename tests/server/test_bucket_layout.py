"""A store of the previous layout (issue 14's fourth wave: one big hash per map) is moved into the
maps' buckets by the start (``bot/store/buckets.py``) and read through the new code: the leads'
conversations, the identities, the contacts' identities and lead ids; and the timer shards' members
into their buckets (``bot/store/layout.py``)."""

from __future__ import annotations

from pathlib import Path

from redis.asyncio import Redis

from bot.config import load_config
from bot.runtime.service import LEAD_CONVERSATIONS_KEY, lead_conversation_key
from bot.server.services import open_services
from bot.store import keys as k
from bot.store.buckets import bucket
from bot.store.layout import TIMER_BUCKETS_DONE
from bot.store.timers import wake_member
from crm_bridge import ChannelIdentity, CrmRef, RedisCrm
from crm_bridge.indexes import LEADS_OF, leads_of
from crm_bridge.redis_crm import IDENTITIES, IDENTITY


async def test_the_start_moves_the_previous_layouts_maps_into_buckets(redis: Redis, redis_url: str,
                                                                       tmp_path: Path) -> None:
    await redis.hset(LEAD_CONVERSATIONS_KEY, mapping={"2": "livechat:demo:old", "300": "telegram:shop:7"})
    await redis.hset(IDENTITIES, "1", "livechat:demo:old")
    await redis.hset(IDENTITY, "livechat:demo:old", "1:2")
    await redis.hset(LEADS_OF, "1", "2,5")
    cfg = load_config(env={}, overrides={"redis_url": redis_url, "flows_dir": str(tmp_path),
                                         "automations_dir": str(tmp_path / "automations"), "admin_token": "t"})
    async with open_services(cfg, start_hub=False) as services:
        assert not await redis.exists(LEAD_CONVERSATIONS_KEY, IDENTITY, IDENTITIES, LEADS_OF)
        assert await redis.hget(lead_conversation_key("2"), "2") == b"livechat:demo:old"
        assert await redis.hget(lead_conversation_key("300"), "300") == b"telegram:shop:7"
        assert bucket(LEAD_CONVERSATIONS_KEY, "2") != bucket(LEAD_CONVERSATIONS_KEY, "300")
        assert isinstance(services.crm, RedisCrm)
        assert await services.crm.identities("1") == [("livechat", "demo", "old")]
        assert await services.crm.identify(ChannelIdentity("livechat", "demo", "old")) == CrmRef("1", "2")
        assert (await leads_of(redis, ["1"]))["1"] == ["2", "5"]



async def test_the_start_moves_the_timer_shards_members_into_their_buckets(redis: Redis, redis_url: str,
                                                                          tmp_path: Path) -> None:
    """A store of the layout before timer buckets: its shards' members (a wake, an older version's
    timer, in the renamed shard key and in the one before it) are in their buckets after the start."""
    await redis.zadd(k.timer_shard_key(k.shard_of("livechat:demo:old", 16)), {wake_member("livechat:demo:old"): 9e9})
    await redis.zadd(f"sb:timers:{k.shard_of('livechat:demo:older', 16)}", {"livechat:demo:older:t3": 8e9})
    cfg = load_config(env={}, overrides={"redis_url": redis_url, "flows_dir": str(tmp_path),
                                         "automations_dir": str(tmp_path / "automations"), "admin_token": "t"})
    async with open_services(cfg, start_hub=False) as services:
        assert not await redis.exists(*(k.timer_shard_key(s) for s in range(16)))
        assert await redis.exists(TIMER_BUCKETS_DONE)
        assert await services.timers.due_at(wake_member("livechat:demo:old")) == 9e9
        assert await redis.zscore(k.timer_keys("livechat:demo:older", 16)[0], "livechat:demo:older:t3") == 8e9
        assert await services.timers.pending() == 2
