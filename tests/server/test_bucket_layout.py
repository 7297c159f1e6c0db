"""A store of the previous layout (issue 14's fourth wave: one big hash per map) is moved into the
maps' buckets by the start (``bot/store/buckets.py``) and read through the new code: the leads'
conversations, the identities, the contacts' identities and lead ids."""

from __future__ import annotations

from pathlib import Path

from redis.asyncio import Redis

from bot.config import load_config
from bot.runtime.service import LEAD_CONVERSATIONS_KEY, lead_conversation_key
from bot.server.services import open_services
from bot.store.buckets import bucket
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

