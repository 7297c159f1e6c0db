"""The move of a contact list's big hash (the previous layout) into its buckets, as the start
runs it: also on a Redis Cluster (tests/cluster imports these bodies), where the buckets are in
other slots than the old hash and the move reads, merges and writes without a script."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from bot.store.buckets import MOVE_PAGE, bucket, move_unbucketed
from crm_bridge.indexes import LEADS_OF
from tests.fullredis import refusing_writes


async def test_the_old_hash_is_moved_into_the_buckets_its_members_first(redis: Redis) -> None:
    await redis.hset(LEADS_OF, mapping={"5": "6,7", "300": "301"})
    await redis.hset(bucket(LEADS_OF, "5"), "5", "9,6")  # an edit that reached the bucket first
    assert await move_unbucketed(redis, LEADS_OF, ",") == 2
    assert not await redis.exists(LEADS_OF)
    assert await redis.hget(bucket(LEADS_OF, "5"), "5") == b"6,7,9"
    assert await redis.hget(bucket(LEADS_OF, "300"), "300") == b"301"
    assert await move_unbucketed(redis, LEADS_OF, ",") == 0


async def test_a_big_old_hash_is_moved_page_by_page(redis: Redis) -> None:
    n = MOVE_PAGE * 3 + 7
    await redis.hset(LEADS_OF, mapping={str(i): str(i + 1) for i in range(0, 2 * n, 2)})
    assert await move_unbucketed(redis, LEADS_OF, ",") == n
    assert not await redis.exists(LEADS_OF)
    for i in (0, 2 * MOVE_PAGE, 2 * n - 2):
        assert await redis.hget(bucket(LEADS_OF, str(i)), str(i)) == str(i + 1).encode()


async def test_a_map_of_single_values_keeps_the_value_this_version_wrote(redis: Redis) -> None:
    key = "sb:test:single"
    await redis.hset(key, mapping={"2": "livechat:demo:old", "3": "livechat:demo:other"})
    await redis.hset(bucket(key, "2"), "2", "livechat:demo:new")  # written by this version meanwhile
    assert await move_unbucketed(redis, key, "") == 2
    assert await redis.hget(bucket(key, "2"), "2") == b"livechat:demo:new"
    assert await redis.hget(bucket(key, "3"), "3") == b"livechat:demo:other"
    assert not await redis.exists(key)


async def test_a_move_refused_midway_loses_no_field_and_the_next_start_finishes_it(redis: Redis) -> None:
    """A Redis that refuses the buckets' writes (full, ``noeviction``; on a cluster a node away)
    while it still runs deletes: the old hash's fields go only once their buckets hold them."""
    await redis.hset(LEADS_OF, mapping={"5": "6,7", "300": "301"})
    async with refusing_writes(redis):
        with pytest.raises(ResponseError):
            await move_unbucketed(redis, LEADS_OF, ",")
    for owner, value in (("5", b"6,7"), ("300", b"301")):
        assert value in (await redis.hget(LEADS_OF, owner), await redis.hget(bucket(LEADS_OF, owner), owner))
    await move_unbucketed(redis, LEADS_OF, ",")  # the next start: the rest moved
    assert not await redis.exists(LEADS_OF)
    assert await redis.hget(bucket(LEADS_OF, "5"), "5") == b"6,7"
    assert await redis.hget(bucket(LEADS_OF, "300"), "300") == b"301"
