"""The timer wheel against a real Redis: claimed once, re-offered after a crash, long timers."""

from __future__ import annotations

from redis.asyncio import Redis

from bot.store import keys as k
from bot.store.timers import TimerWheel


async def _schedule(redis: Redis, wheel: TimerWheel, timer_id: str, at: float) -> None:
    cid = timer_id.rsplit(":", 1)[0]
    await redis.zadd(k.timer_shard_key(k.shard_of(cid, wheel.shards)), {timer_id: at})


async def test_due_timers_are_claimed_once_in_due_order(redis: Redis) -> None:
    wheel = TimerWheel(redis, shards=4, lease=30)
    await _schedule(redis, wheel, "a:x:t2", 1002.0)
    await _schedule(redis, wheel, "b:y:t1", 1001.0)
    await _schedule(redis, wheel, "c:z:t9", 5000.0)
    first = await wheel.claim(now=1500.0)
    assert [(t.timer_id, t.due) for t in first] == [("b:y:t1", 1001.0), ("a:x:t2", 1002.0)]
    assert await wheel.claim(now=1500.0) == []  # a second worker gets nothing
    await wheel.ack(first)
    assert await wheel.claim(now=1600.0) == []
    assert await wheel.pending() == 1  # the 5000 s one still waits


async def test_a_claim_never_acknowledged_is_offered_again_after_its_lease(redis: Redis) -> None:
    wheel = TimerWheel(redis, shards=2, lease=10)
    await _schedule(redis, wheel, "a:x:t1", 100.0)
    claimed = await wheel.claim(now=100.0)
    assert [t.timer_id for t in claimed] == ["a:x:t1"]
    # The worker died before ack: within the lease nobody else takes it ...
    assert await wheel.claim(now=105.0) == []
    # ... after the lease it comes back (marked as a retry), and the dedupe in the store makes it fire once.
    again = await wheel.claim(now=111.0)
    assert [(t.timer_id, t.due) for t in again] == [("a:x:t1", None)]
    await wheel.ack(again)
    assert await wheel.claim(now=500.0) == []


async def test_a_year_long_timer_is_just_an_entry(redis: Redis) -> None:
    wheel = TimerWheel(redis, shards=16)
    year = 8760 * 3600 + 3660
    await _schedule(redis, wheel, "a:x:t1", 1000.0 + year)
    assert await wheel.claim(now=1000.0 + year - 1) == []
    assert [t.timer_id for t in await wheel.claim(now=1000.0 + year)] == ["a:x:t1"]
    assert await wheel.due_at("a:x:t1") is None
