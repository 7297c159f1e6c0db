"""The process's pub/sub fan-out (``bot/store/livehub.py``) against a real Redis.

The hub holds its ``sb:events`` subscription only while something watches (and ``linger``
seconds after the last watcher leaves); messages reach the queues of the conversation watched
and every ``watch_all`` queue.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from bot.store.keys import EVENTS_CHANNEL
from bot.store.livehub import LiveHub
from tests.waiting import wait_for

#: Bounds a queue read: a message that should come comes at once; a lost one fails the test.
READ = 2.0


async def _subscribers(redis: Redis) -> int:
    ((channel, count),) = await redis.pubsub_numsub(EVENTS_CHANNEL)
    assert channel == EVENTS_CHANNEL.encode()
    return int(count)


async def _unsubscribed(redis: Redis) -> bool:
    return await _subscribers(redis) == 0


@pytest.fixture
async def hub(redis: Redis) -> AsyncIterator[LiveHub]:
    h = LiveHub(redis, linger=0.05)
    await h.start()
    try:
        yield h
    finally:
        await h.stop()
    await wait_for(lambda: _unsubscribed(redis), 2.0, what="the hub's subscription to go after stop()")


async def test_no_subscription_without_watchers(hub: LiveHub, redis: Redis) -> None:
    assert await _subscribers(redis) == 0
    assert await redis.publish(EVENTS_CHANNEL, "test:a 1") == 0  # nobody hears it: no cost


async def test_watch_subscribes_and_a_message_right_after_is_delivered(hub: LiveHub, redis: Redis) -> None:
    async with hub.watch("test:a:1") as q:
        assert await _subscribers(redis) == 1
        assert await redis.publish(EVENTS_CHANNEL, "test:a:1 7") == 1
        assert await asyncio.wait_for(q.get(), READ) == 7
        await redis.publish(EVENTS_CHANNEL, "test:a:1 8")
        assert await asyncio.wait_for(q.get(), READ) == 8


async def test_a_cid_with_spaces_and_colons_is_split_on_the_last_space(hub: LiveHub, redis: Redis) -> None:
    cid = "livechat:demo:a b"
    async with hub.watch(cid) as q, hub.watch_all() as every:
        await redis.publish(EVENTS_CHANNEL, f"{cid} 12")
        assert await asyncio.wait_for(q.get(), READ) == 12
        assert await asyncio.wait_for(every.get(), READ) == (cid, 12)


async def test_watch_all_gets_every_conversation_and_watch_only_its_own(hub: LiveHub, redis: Redis) -> None:
    async with hub.watch("test:a:1") as mine, hub.watch("test:a:1") as also_mine, \
            hub.watch("test:a:2") as theirs, hub.watch_all() as every:
        assert await _subscribers(redis) == 1  # one subscription for all the watchers
        await redis.publish(EVENTS_CHANNEL, "test:a:2 3")
        await redis.publish(EVENTS_CHANNEL, "test:a:1 4")
        await redis.publish(EVENTS_CHANNEL, "test:a:3 5")
        assert [await asyncio.wait_for(every.get(), READ) for _ in range(3)] == [
            ("test:a:2", 3), ("test:a:1", 4), ("test:a:3", 5)]
        assert await asyncio.wait_for(mine.get(), READ) == 4
        assert await asyncio.wait_for(also_mine.get(), READ) == 4
        assert await asyncio.wait_for(theirs.get(), READ) == 3
        # every message was handled (watch_all saw the last): nothing else for these queues
        assert mine.empty() and also_mine.empty() and theirs.empty()


async def test_the_subscription_goes_after_the_linger_and_comes_back(hub: LiveHub, redis: Redis) -> None:
    async with hub.watch("test:a:1"):
        assert await _subscribers(redis) == 1
    await wait_for(lambda: _unsubscribed(redis), 2.0, what="the subscription to go after the linger")
    assert await redis.publish(EVENTS_CHANNEL, "test:a:1 1") == 0
    async with hub.watch("test:a:1") as q:
        assert await _subscribers(redis) == 1
        await redis.publish(EVENTS_CHANNEL, "test:a:1 2")
        assert await asyncio.wait_for(q.get(), READ) == 2
    await wait_for(lambda: _unsubscribed(redis), 2.0, what="the subscription to go again")


async def test_a_watcher_within_the_linger_keeps_the_same_subscription(redis: Redis) -> None:
    hub = LiveHub(redis, linger=30.0)
    try:
        async with hub.watch_all():
            (before,) = [c for c in await redis.client_list() if c.get("sub") == "1"]
        async with hub.watch("test:a:1") as q:  # within the linger: no new subscription
            (after,) = [c for c in await redis.client_list() if c.get("sub") == "1"]
            assert after["id"] == before["id"]
            await redis.publish(EVENTS_CHANNEL, "test:a:1 9")
            assert await asyncio.wait_for(q.get(), READ) == 9
        assert await _subscribers(redis) == 1  # still lingering
    finally:
        await hub.stop()
    await wait_for(lambda: _unsubscribed(redis), 2.0, what="stop() to end a lingering subscription")


async def test_stop_cancels_while_watched_and_a_later_watch_subscribes_again(hub: LiveHub, redis: Redis) -> None:
    async with hub.watch("test:a:1"):
        assert await _subscribers(redis) == 1
        await hub.stop()
        await wait_for(lambda: _unsubscribed(redis), 2.0, what="stop() to end the subscription")
    async with hub.watch("test:a:1") as q:
        assert await _subscribers(redis) == 1
        await redis.publish(EVENTS_CHANNEL, "test:a:1 3")
        assert await asyncio.wait_for(q.get(), READ) == 3


async def test_wake_all_puts_minus_one_in_every_waiting_queue(hub: LiveHub, redis: Redis) -> None:
    async with hub.watch("test:a:1") as one, hub.watch("test:a:1") as two, hub.watch("test:a:2") as three:
        waiting = asyncio.create_task(one.get())
        hub.wake_all()
        assert await asyncio.wait_for(waiting, READ) == -1
        assert two.get_nowait() == -1 and three.get_nowait() == -1
        assert one.empty() and two.empty() and three.empty()  # one wake-up each
    hub.wake_all()  # nobody watches: nothing to wake, no error


async def test_a_watcher_that_leaves_gets_nothing_more(hub: LiveHub, redis: Redis) -> None:
    async with hub.watch_all() as every:
        async with hub.watch("test:a:1") as gone:
            pass
        await redis.publish(EVENTS_CHANNEL, "test:a:1 6")
        assert await asyncio.wait_for(every.get(), READ) == ("test:a:1", 6)
        assert gone.empty()


async def test_a_dropped_subscription_is_made_again_and_every_waiter_rereads(hub: LiveHub, redis: Redis) -> None:
    async with hub.watch("test:a:1") as q, hub.watch_all() as everything:
        assert await redis.execute_command("CLIENT", "KILL", "TYPE", "pubsub") == 1
        # Whatever was published while the hub reconnected is lost, so once subscribed again it
        # wakes every waiter to re-read: 0 for a conversation, ("", 0) for a stream.
        assert await asyncio.wait_for(q.get(), 5.0) == 0
        assert await asyncio.wait_for(everything.get(), 5.0) == ("", 0)
        await wait_for(lambda: _subscribers(redis), 2.0, what="the hub to be subscribed again")
        assert await redis.publish(EVENTS_CHANNEL, "test:a:1 21") == 1
        assert await asyncio.wait_for(q.get(), READ) == 21
        assert await asyncio.wait_for(everything.get(), READ) == ("test:a:1", 21)
