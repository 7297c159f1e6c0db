"""Keys renamed for Redis Cluster are merged into their new names at start (bot/store/layout.py)."""

from __future__ import annotations

from redis.asyncio import Redis

from bot.store import indexes
from bot.store import keys as k
from bot.store.layout import FILTER_SETS_DONE, move_activity_index, move_filter_sets, rename_old_keys


async def test_timers_of_the_old_layout_are_kept_under_the_new_keys(redis: Redis) -> None:
    await redis.zadd("sb:timers:3", {"livechat:demo:a:t1": 100.0, "livechat:demo:b:t2": 50.0})
    await redis.zadd(k.timer_shard_key(3), {"livechat:demo:b:t2": 70.0, "livechat:demo:c:t3": 10.0})
    await redis.zadd("sb:timers:3:claimed", {"livechat:demo:d:t4": 5.0})
    assert await rename_old_keys(redis, shards=16) == 2  # what every start on a single Redis runs
    assert await rename_old_keys(redis, shards=16) == 0  # once: nothing left to merge
    assert not await redis.exists("sb:timers:3", "sb:timers:3:claimed")
    merged = {m.decode(): s for m, s in await redis.zrange(k.timer_shard_key(3), 0, -1, withscores=True)}
    assert merged == {"livechat:demo:a:t1": 100.0, "livechat:demo:b:t2": 50.0, "livechat:demo:c:t3": 10.0}
    assert await redis.zrange(k.timer_claimed_key(3), 0, -1, withscores=True) == [(b"livechat:demo:d:t4", 5.0)]


async def test_the_old_activity_index_is_merged_into_the_conv_slot_the_later_activity_winning(redis: Redis) -> None:
    await redis.zadd(k.OLD_ACTIVITY_INDEX, {"livechat:demo:a": 100.0, "livechat:demo:b": 50.0})
    await redis.zadd(k.FLAT_ACTIVITY_INDEX, {"livechat:demo:b": 70.0, "livechat:demo:c": 10.0})
    assert await rename_old_keys(redis, shards=16) == 1
    assert await rename_old_keys(redis, shards=16) == 0
    assert not await redis.exists(k.OLD_ACTIVITY_INDEX)
    merged = {m.decode(): s for m, s in await redis.zrange(k.FLAT_ACTIVITY_INDEX, 0, -1, withscores=True)}
    assert merged == {"livechat:demo:a": 100.0, "livechat:demo:b": 70.0, "livechat:demo:c": 10.0}


async def test_on_a_cluster_the_activity_index_is_copied_a_page_at_a_time(redis: Redis) -> None:
    old = {f"livechat:demo:{n}": float(n) for n in range(2500)}  # more than one page
    await redis.zadd(k.OLD_ACTIVITY_INDEX, old)
    await redis.zadd(k.FLAT_ACTIVITY_INDEX, {"livechat:demo:7": 9000.0, "livechat:demo:new": 1.0})
    assert await move_activity_index(redis) >= 2500
    assert await move_activity_index(redis) == 0
    assert not await redis.exists(k.OLD_ACTIVITY_INDEX)
    merged = {m.decode(): s for m, s in await redis.zrange(k.FLAT_ACTIVITY_INDEX, 0, -1, withscores=True)}
    assert merged == {**old, "livechat:demo:7": 9000.0, "livechat:demo:new": 1.0}


async def test_the_old_filter_sorted_sets_are_moved_into_plain_sets_once(redis: Redis) -> None:
    many = {f"livechat:demo:{n}": float(n) for n in range(2500)}  # more than one page
    await redis.zadd("sb:idx:{conv}:status:bot", many)
    await redis.zadd("sb:idx:{conv}:channel:livechat", {"livechat:demo:1": 1.0, "livechat:demo:2": 2.0})
    await redis.zadd("sb:idx:{conv}:bot:demo", {"livechat:demo:1": 1.0})
    await redis.zadd("sb:idx:{conv}:waiting", {"livechat:demo:2": 2.0})
    await redis.sadd(indexes.status_key("bot"), "livechat:demo:new")  # a newer process wrote it already
    await redis.zadd(k.FLAT_ACTIVITY_INDEX, {"livechat:demo:1": 5.0})  # not a filter set: stays
    await redis.zadd(indexes.SEARCH_KEY, {"ann\0livechat:demo:1": 0})
    assert await move_filter_sets(redis) == 2500 + 2 + 1 + 1
    assert await move_filter_sets(redis) == 0  # once: the next start reads one key
    assert await redis.get(FILTER_SETS_DONE) == b"2504"
    assert not await redis.exists("sb:idx:{conv}:status:bot", "sb:idx:{conv}:channel:livechat",
                                  "sb:idx:{conv}:bot:demo", "sb:idx:{conv}:waiting")
    assert await redis.smembers(indexes.status_key("bot")) == {c.encode() for c in [*many, "livechat:demo:new"]}
    assert await redis.smembers(indexes.channel_key("livechat")) == {b"livechat:demo:1", b"livechat:demo:2"}
    assert await redis.smembers(indexes.bot_key("demo")) == {b"livechat:demo:1"}
    assert await redis.smembers(indexes.WAITING_KEY) == {b"livechat:demo:2"}
    assert await redis.zcard(k.FLAT_ACTIVITY_INDEX) == 1 and await redis.zcard(indexes.SEARCH_KEY) == 1


async def test_a_new_store_has_no_filter_sets_to_move(redis: Redis) -> None:
    assert await move_filter_sets(redis) == 0
    assert await redis.get(FILTER_SETS_DONE) == b"0"
