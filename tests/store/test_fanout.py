"""The parts of every live stream (``bot/store/fanout.py``): bounded queues that each get every
item, and a channel subscription held while someone listens, against a real Redis."""

from __future__ import annotations

import asyncio
import logging

from redis.asyncio import Redis

from bot.store.fanout import Fanout, Subscription
from tests.waiting import wait_for

CHANNEL = "sb:test:fanout"


async def test_a_reader_far_behind_is_told_to_reload_and_still_learns_of_the_end() -> None:
    feed: Fanout[str] = Fanout(backlog=3, resync="resync", closing="end")
    async with feed.subscribe() as slow, feed.subscribe() as quick:
        for item in ("a", "b", "c"):
            feed.put(item)
            assert await quick.get() == item
        feed.put("d")  # slow is full: what it holds is dropped for one "resync"
        assert [slow.get_nowait() for _ in range(slow.qsize())] == ["resync"]
        assert await quick.get() == "d"
        for item in ("e", "f", "g"):
            feed.put(item)
        feed.close()  # slow is full again: the end still reaches it
        assert [slow.get_nowait() for _ in range(slow.qsize())] == ["end"]
    assert not feed.subscribers


async def _subscribers(redis: Redis) -> int:
    return int((await redis.pubsub_numsub(CHANNEL))[0][1])


async def test_a_subscription_is_held_while_someone_listens(redis: Redis, redis_url: str) -> None:
    got: list[str] = []
    resyncs: list[int] = []
    listeners: set[str] = set()
    # Its own named client: the test drops this subscription's connection only, not the other
    # pub/sub clients of a shared server (SALESBOT_TEST_REDIS_URL).
    name = f"test_fanout_{id(listeners)}"
    own = Redis.from_url(redis_url, client_name=name)
    sub = Subscription(lambda: own, CHANNEL, on_message=got.append, on_resync=lambda: resyncs.append(1),
                       listening=lambda: bool(listeners), linger=0, name="test_fanout",
                       log=logging.getLogger("test"))
    try:
        listeners.add("one")
        await sub.acquire()
        assert await redis.publish(CHANNEL, "hello") == 1
        await wait_for(lambda: got == ["hello"], what="the message")
        ids = [c["id"] for c in await redis.client_list(_type="pubsub") if c.get("name") == name]
        assert len(ids) == 1
        assert await redis.client_kill_filter(_id=ids[0]) == 1
        await wait_for(lambda: resyncs == [1], 5.0, what="a resync after the subscription came back")
        listeners.clear()
        sub.release()  # linger 0: at once
        await wait_for(lambda: _no_subscribers(redis), what="the subscription to go")
    finally:
        await sub.stop()
        await own.aclose()
    assert got == ["hello"]
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "test_fanout"]  # stop ended its task


async def _no_subscribers(redis: Redis) -> bool:
    return await _subscribers(redis) == 0

