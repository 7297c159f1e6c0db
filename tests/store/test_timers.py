"""The timer wheel against a real Redis: claimed once, ahead of time, taken over from a dead
worker (and only a dead one), re-offered after a failed delivery, long timers; a conversation's
one entry (its wake) re-armed while claimed, and timers of their own (older versions') beside it."""

from __future__ import annotations

from redis.asyncio import Redis

from bot.store import keys as k
from bot.store.timers import WRITE, TimerWheel, wake_member, write_command


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def _schedule(redis: Redis, wheel: TimerWheel, timer_id: str, at: float) -> None:
    cid = timer_id[1:-1] if timer_id.startswith("{") else timer_id.rsplit(":", 1)[0]
    await redis.script_load(WRITE)
    await redis.execute_command(*write_command(cid, wheel.shards, [(timer_id, at)]))  # its bucket, its top


async def test_due_timers_are_claimed_once_in_due_order(redis: Redis) -> None:
    wheel, other = TimerWheel(redis, shards=4, worker="a"), TimerWheel(redis, shards=4, worker="b")
    await _schedule(redis, wheel, "a:x:t2", 1002.0)
    await _schedule(redis, wheel, "b:y:t1", 1001.0)
    await _schedule(redis, wheel, "c:z:t9", 5000.0)
    first = await wheel.claim(now=1500.0)
    assert [(t.timer_id, t.due) for t in first] == [("b:y:t1", 1001.0), ("a:x:t2", 1002.0)]
    assert await other.claim(now=1500.0) == []  # a second worker gets nothing
    assert await wheel.claimed() == 2
    await wheel.ack(first)
    assert await wheel.claimed() == 0
    assert await wheel.claim(now=1510.0) == []
    assert await wheel.pending() == 1  # the 5000 s one still waits


async def test_a_worker_claims_up_to_its_horizon_and_keeps_the_due_times(redis: Redis) -> None:
    wheel = TimerWheel(redis, shards=2, worker="a")
    await _schedule(redis, wheel, "a:x:t1", 100.1)
    await _schedule(redis, wheel, "a:y:t1", 100.3)
    ahead = await wheel.claim(now=100.0, horizon=100.25)
    assert [(t.timer_id, t.due) for t in ahead] == [("a:x:t1", 100.1)]  # fired at 100.1 by the loop
    assert await wheel.pending() == 1


async def test_a_dead_workers_claims_are_taken_over_with_their_due_times(redis: Redis) -> None:
    clock = Clock(1000.0)
    dead = TimerWheel(redis, shards=4, worker="dead", dead_after=3, clock=clock)
    alive = TimerWheel(redis, shards=4, worker="alive", dead_after=3, clock=clock)
    for i in range(6):
        await _schedule(redis, dead, f"c{i}:x:t1", 1000.0 + i)
    held = await dead.claim(now=1000.0, horizon=1010.0)  # "dead" claims all six, then says nothing more
    assert len(held) == 6
    await alive.heartbeat()
    clock.now = 1002.9
    assert await alive.take_over() == []  # not silent for dead_after yet
    clock.now = 1003.1
    await alive.heartbeat()
    taken = await alive.take_over()
    assert sorted((t.timer_id, t.due) for t in taken) == sorted((t.timer_id, t.due) for t in held)
    assert await alive.take_over() == []  # moved once: nobody else gets them again
    assert await redis.zrange(k.timer_workers_key(), 0, -1) == [b"alive"]  # the dead one is forgotten
    await alive.ack(taken)
    assert await alive.claimed() == 0


async def test_a_worker_that_beats_again_is_not_forgotten(redis: Redis) -> None:
    clock = Clock(1000.0)
    paused = TimerWheel(redis, shards=2, worker="paused", dead_after=3, clock=clock)
    other = TimerWheel(redis, shards=2, worker="other", dead_after=3, clock=clock)
    await _schedule(redis, paused, "a:x:t1", 1000.0)
    await paused.claim(now=1000.0)
    clock.now = 1005.0
    assert len(await other.take_over()) == 1  # silent past dead_after: its claim moves
    await _schedule(redis, paused, "b:x:t1", 1005.0)
    await paused.claim(now=1005.0)  # back (a claim stamps the registry first): its new claim is its own
    assert await other.take_over() == []
    assert b"paused" in await redis.zrange(k.timer_workers_key(), 0, -1)


async def test_a_claim_never_acknowledged_is_offered_again_to_its_live_worker(redis: Redis) -> None:
    wheel = TimerWheel(redis, shards=2, claim_ttl=10, worker="a")
    await _schedule(redis, wheel, "a:x:t1", 100.0)
    claimed = await wheel.claim(now=100.0)
    assert [t.timer_id for t in claimed] == ["a:x:t1"]
    # The delivery failed: within the claim's TTL it is not offered again ...
    assert await wheel.claim(now=105.0) == []
    # ... after it, it comes back (marked as a retry), and the dedupe in the store makes it fire once.
    again = await wheel.claim(now=111.0)
    assert [(t.timer_id, t.due) for t in again] == [("a:x:t1", None)]
    assert await wheel.claim(now=115.0) == []  # not again before another TTL
    await wheel.ack(again)
    assert await wheel.claim(now=500.0) == []


async def test_claims_of_the_shared_leased_set_of_older_versions_are_offered_when_their_lease_ends(
        redis: Redis) -> None:
    wheel = TimerWheel(redis, shards=1, worker="a")
    await redis.zadd(k.timer_claimed_key(0), {"a:x:t1": 130.0})  # leased until 130 by an old worker
    assert await wheel.claim(now=120.0) == []
    again = await wheel.claim(now=130.0)
    assert [(t.timer_id, t.due) for t in again] == [("a:x:t1", None)]
    assert await redis.zcard(k.timer_claimed_key(0)) == 0
    await wheel.ack(again)
    assert await wheel.claimed() == 0


async def test_a_year_long_timer_is_just_an_entry(redis: Redis) -> None:
    wheel = TimerWheel(redis, shards=16)
    year = 8760 * 3600 + 3660
    await _schedule(redis, wheel, "a:x:t1", 1000.0 + year)
    assert await wheel.claim(now=1000.0 + year - 1) == []
    assert [t.timer_id for t in await wheel.claim(now=1000.0 + year)] == ["a:x:t1"]
    assert await wheel.due_at("a:x:t1") is None


async def test_a_wake_re_armed_while_claimed_waits_for_the_first_claims_ack(redis: Redis) -> None:
    """A conversation's wake claimed, then armed again (its turn, or a message, set a timer)
    before the worker acknowledged the claim: claiming it again would overwrite the claim, and
    the first ack would remove both. It stays in its shard until that ack, then it is claimed."""
    wheel = TimerWheel(redis, shards=2, worker="a")
    wake = wake_member("livechat:demo:x")
    await _schedule(redis, wheel, wake, 100.0)
    first = await wheel.claim(now=100.0, horizon=110.0)
    assert [(t.timer_id, t.cid, t.wake) for t in first] == [(wake, "livechat:demo:x", True)]
    await _schedule(redis, wheel, wake, 105.0)  # armed again
    await _schedule(redis, wheel, "livechat:demo:y:t1", 101.0)  # an older version's timer beside it
    assert [t.timer_id for t in await wheel.claim(now=101.0, horizon=110.0)] == ["livechat:demo:y:t1"]
    assert await wheel.due_at(wake) == 105.0
    await wheel.ack(first)
    again = await wheel.claim(now=102.0, horizon=110.0)
    assert [(t.timer_id, t.due) for t in again] == [(wake, 105.0)]
    await wheel.ack(again)
    assert await wheel.claimed() == 1 and await wheel.pending() == 0  # y's claim, not acknowledged here


async def test_a_wake_and_an_older_versions_timer_of_one_conversation_name_their_queue(redis: Redis) -> None:
    wheel = TimerWheel(redis, shards=4, worker="a")
    cid = "livechat:demo:t5"  # an id that itself ends like a timer's
    await _schedule(redis, wheel, wake_member(cid), 10.0)
    await _schedule(redis, wheel, f"{cid}:t1", 11.0)
    claimed = await wheel.claim(now=20.0)
    assert [(t.cid, t.wake) for t in claimed] == [(cid, True), (cid, False)]
