"""The flat activity index and the per-channel and per-bot sets of older versions are moved into
the partitions at start (bot/store/layout.py ``move_partitions``): the same listings after, once,
and a move cut short (a full Redis refusing its writes) is finished by the next start."""

from __future__ import annotations

from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from bot.config import load_config
from bot.server.services import open_services
from bot.store import indexes, partitions
from bot.store import keys as k
from bot.store.indexes import ConversationIndex, Filters
from bot.store.layout import PARTITIONS_DONE, move_partitions
from tests.fullredis import refusing_writes

#: cid -> (channel, bot, status, activity); "nochan:x:7" is in no channel set nor bot set.
OLD = {
    "livechat:demo:1": ("livechat", "demo", "bot", 10.0),
    "livechat:demo:2": ("livechat", "sales", "human", 20.0),
    "whatsapp:main:3": ("whatsapp", "demo", "idle", 30.0),
    "whatsapp:main:4": ("whatsapp", "", "bot", 40.0),
    "nochan:x:7": ("", "", "bot", 50.0),
}
CASES = [Filters(), Filters(channel="livechat"), Filters(bot="demo"), Filters(channel="whatsapp", bot="demo"),
         Filters(status="bot"), Filters(status="bot", channel="whatsapp"), Filters(status="human")]


async def _old_layout(redis: Redis) -> None:
    """What the previous version wrote: the metadata, the flat index and the filter sets."""
    for cid, (channel, bot, status, at) in OLD.items():
        meta = {"status": status, "activity": f"{at:.3f}", **({"channel": channel} if channel else {}),
                **({"bot": bot} if bot else {})}
        await redis.hset(k.ConversationKey(cid).meta, mapping=meta)
        await redis.zadd(k.FLAT_ACTIVITY_INDEX, {cid: at})
        if channel:
            await redis.sadd(indexes.channel_key(channel), cid)
        if bot:
            await redis.sadd(indexes.bot_key(bot), cid)
        if status != indexes.DERIVED_STATUS:
            await redis.sadd(indexes.status_key(status), cid)


def _expected(filters: Filters) -> list[str]:
    ranked = sorted(OLD, key=lambda c: OLD[c][3], reverse=True)
    return [c for c in ranked if (not filters.channel or OLD[c][0] == filters.channel)
            and (not filters.bot or OLD[c][1] == filters.bot) and (not filters.status or OLD[c][2] == filters.status)]


async def _listings(redis: Redis) -> list[list[str]]:
    index = ConversationIndex(redis)
    return [[cid for cid, _, _ in (await index.page(f)).rows] for f in CASES]


async def _assert_moved(redis: Redis) -> None:
    assert await _listings(redis) == [_expected(f) for f in CASES]
    assert not await redis.exists(k.FLAT_ACTIVITY_INDEX)
    assert not await redis.keys("sb:idx:{conv}:f:channel:*") and not await redis.keys("sb:idx:{conv}:f:bot:*")
    assert await redis.smembers(partitions.REGISTRY) == {
        b"livechat:demo", b"livechat:sales", b"whatsapp:demo", b"whatsapp:", b":"}
    assert await redis.zrange(partitions.key(":"), 0, -1) == [b"nochan:x:7"]  # in no set: no channel, no bot


async def test_a_start_moves_the_old_index_into_partitions_once(redis: Redis, redis_url: str, tmp_path: Path) -> None:
    await _old_layout(redis)
    cfg = load_config(env={}, overrides={"redis_url": redis_url, "flows_dir": str(tmp_path),
                                         "automations_dir": str(tmp_path / "automations"), "admin_token": "t"})
    async with open_services(cfg, start_hub=False):
        pass
    await _assert_moved(redis)
    assert await redis.get(PARTITIONS_DONE) == str(len(OLD)).encode()
    await redis.zadd(k.FLAT_ACTIVITY_INDEX, {"late:x:1": 1.0})  # after the marker: later starts read one key
    assert await move_partitions(redis) == 0
    assert await redis.zcard(k.FLAT_ACTIVITY_INDEX) == 1


async def test_a_move_refused_midway_is_finished_by_the_next_start(private_redis: Redis) -> None:
    redis = private_redis
    await _old_layout(redis)
    assert await move_partitions(redis, page=2, pages=1) == 2  # a first page moved, then cut short
    assert await redis.zcard(k.FLAT_ACTIVITY_INDEX) == len(OLD) - 2 and not await redis.exists(PARTITIONS_DONE)
    async with refusing_writes(redis):
        with pytest.raises(ResponseError, match="OOM"):
            await move_partitions(redis, page=2)
    assert await redis.zcard(k.FLAT_ACTIVITY_INDEX) == len(OLD) - 2  # nothing lost, nothing half moved
    assert not await redis.exists(PARTITIONS_DONE)
    assert await move_partitions(redis, page=2) == len(OLD) - 2
    await _assert_moved(redis)


async def test_a_member_moved_into_a_partition_its_metadata_does_not_name_is_listed(redis: Redis) -> None:
    """The old index scored a member by the save's activity (full precision), the metadata kept it
    to the millisecond (``f"{activity:.3f}"``): a member the move put in the wrong partition (stale
    sets) with a score that rounds down is still stale, moved where its metadata says and listed."""
    cid = "livechat:demo:r"
    at = 1_733_570_000.1234  # the metadata's "1733570000.123" is lower than the index's score
    await redis.hset(k.ConversationKey(cid).meta, mapping={"status": "bot", "channel": "livechat", "bot": "sales",
                                                           "activity": f"{at:.3f}"})
    await redis.zadd(k.FLAT_ACTIVITY_INDEX, {cid: at})
    await redis.sadd(indexes.channel_key("livechat"), cid)
    await redis.sadd(indexes.bot_key("demo"), cid)  # stale: the metadata says "sales"
    assert await move_partitions(redis) == 1
    index = ConversationIndex(redis)
    await index.page(Filters())  # meets it in livechat:demo: moves it
    assert [c for c, _, _ in (await index.page(Filters())).rows] == [cid]
    assert [c for c, _, _ in (await index.page(Filters(bot="sales"))).rows] == [cid]
