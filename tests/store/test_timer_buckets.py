"""Timer buckets (bot/store/timers.py): a shard's members spread over small sorted sets, each
bucket's top a lower bound of its earliest due time that the claim makes exact; the older
shard keys moved into the buckets at start (bot/store/layout.py) and drained by the claim until
then; and a seeded random differential test against a model of "members due by the horizon"."""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import Any

from redis.asyncio import Redis

from bot.store import keys as k
from bot.store.clusterclient import ClusterRespClient, is_cluster
from bot.store.conversations import ConversationStore, SaveRequest
from bot.store.layout import TIMER_BUCKETS_DONE, move_timer_buckets
from bot.store.timers import WRITE, DueTimer, TimerWheel, cid_of, wake_member, write_command
from tests.clocks import Clock

CID = "livechat:demo:b1"


async def _write(redis: Redis, cid: str, entries: list[tuple[str, float]], *, lt: bool = False) -> None:
    await redis.script_load(WRITE)
    await redis.execute_command(*(write_command(cid, 4, earlier=entries) if lt else write_command(cid, 4, entries)))


async def _top(redis: Redis, cid: str) -> float | None:
    _, tops, bucket = k.timer_keys(cid, 4)
    score = await redis.zscore(tops, bucket)
    return None if score is None else float(score)


async def test_a_member_lives_in_its_bucket_of_its_shard_and_the_top_is_its_earliest(redis: Redis) -> None:
    shard, bucket = k.timer_bucket(CID, 4)
    assert shard == k.shard_of(CID, 4) and 0 <= bucket < k.TIMER_BUCKETS
    await _write(redis, CID, [(wake_member(CID), 50.0), (f"{CID}:t1", 40.0)])
    members = await redis.zrange(k.timer_bucket_key(shard, bucket), 0, -1)
    assert members == [f"{CID}:t1".encode(), wake_member(CID).encode()]
    assert await _top(redis, CID) == 40.0
    assert await redis.object("encoding", k.timer_bucket_key(shard, bucket)) in (b"ziplist", b"listpack")
    assert not await redis.exists(k.timer_shard_key(shard))


async def test_a_top_stays_a_lower_bound_and_a_claim_fixes_a_stale_low_one_claiming_nothing_early(redis: Redis) -> None:
    wheel = TimerWheel(redis, shards=4, worker="a")
    await _write(redis, CID, [(wake_member(CID), 50.0)])
    await _write(redis, CID, [(wake_member(CID), 80.0)])  # moved later (a plain ZADD): the top stays 50
    assert await _top(redis, CID) == 50.0
    assert await wheel.claim(now=60.0) == []  # visits the bucket: nothing due yet
    assert await _top(redis, CID) == 80.0  # exact again
    await redis.zrem(k.timer_keys(CID, 4)[0], wake_member(CID))  # cancelled: the top stays, stale-low
    assert await _top(redis, CID) == 80.0
    assert await wheel.claim(now=90.0) == []
    assert await _top(redis, CID) is None  # the bucket is empty: its top is dropped


async def test_a_wake_moved_earlier_is_claimed_on_time(redis: Redis) -> None:
    wheel = TimerWheel(redis, shards=4, worker="a")
    await _write(redis, CID, [(wake_member(CID), 500.0)], lt=True)
    assert await wheel.claim(now=100.0) == []
    await wheel.arm(wake_member(CID), 120.0)  # ZADD LT: the bucket and its top
    assert await _top(redis, CID) == 120.0
    assert await wheel.claim(now=119.0) == []
    assert [(t.timer_id, t.due) for t in await wheel.claim(now=120.0)] == [(wake_member(CID), 120.0)]
    assert await _top(redis, CID) is None


async def test_a_claim_cut_short_by_its_limit_keeps_the_rest_of_a_bucket_due(redis: Redis) -> None:
    wheel = TimerWheel(redis, shards=4, worker="a")
    await _write(redis, CID, [(f"{CID}:t{n}", 10.0 + n) for n in range(5)])
    first = await wheel.claim(now=20.0, batch=2)
    assert [t.timer_id for t in first] == [f"{CID}:t0", f"{CID}:t1"]
    assert await _top(redis, CID) == 12.0
    assert [t.timer_id for t in await wheel.claim(now=20.0, batch=10)] == [f"{CID}:t{n}" for n in (2, 3, 4)]


def _same_shard_other_buckets(n: int) -> list[str]:
    """``n`` conversation ids of one shard (of 4), each in a bucket of its own."""
    found: dict[int, str] = {}
    for i in range(10_000):
        cid = f"livechat:demo:s{i}"
        shard, bucket = k.timer_bucket(cid, 4)
        if shard == 0 and bucket not in found:
            found[bucket] = cid
            if len(found) == n:
                break
    return list(found.values())


async def test_a_claim_cut_short_by_its_limit_takes_the_shards_earliest_across_buckets(redis: Redis) -> None:
    """Fails on a claim that takes a bucket's due members before looking at the next bucket's:
    with the limit binding (the loop's room), an earlier member of another bucket would wait a round."""
    a, b, c = _same_shard_other_buckets(3)
    await _write(redis, a, [(f"{a}:t1", 10.0), (f"{a}:t2", 30.0), (f"{a}:t3", 31.0)])
    await _write(redis, b, [(f"{b}:t1", 20.0)])
    await _write(redis, c, [(f"{c}:t1", 25.0)])
    wheel = TimerWheel(redis, shards=4, worker="a")
    assert [t.timer_id for t in await wheel.claim(now=5.0, horizon=40.0, batch=2)] == [f"{a}:t1", f"{b}:t1"]
    assert await _top(redis, a) == 30.0 and await _top(redis, b) is None and await _top(redis, c) == 25.0
    assert [t.timer_id for t in await wheel.claim(now=5.0, horizon=40.0, batch=2)] == [f"{c}:t1", f"{a}:t2"]
    assert [t.timer_id for t in await wheel.claim(now=5.0, horizon=40.0, batch=0)] == []
    assert [t.timer_id for t in await wheel.claim(now=5.0, horizon=40.0, batch=2)] == [f"{a}:t3"]


async def _old_shards(redis: Redis, n: int) -> dict[str, float]:
    members = {}
    for i in range(n):
        cid = f"livechat:demo:o{i}"
        members[wake_member(cid) if i % 3 else f"{cid}:t1"] = 1000.0 + i
    for member, at in members.items():
        cid = member[1:-1] if member.startswith("{") else member.rsplit(":", 1)[0]
        await redis.zadd(k.timer_shard_key(k.shard_of(cid, 4)), {member: at})
    return members


async def _everything(wheel: TimerWheel) -> dict[str, float]:
    claimed = await wheel.claim(now=10_000.0, batch=10_000)
    await wheel.ack(claimed)
    assert len({t.timer_id for t in claimed}) == len(claimed)  # none twice
    return {t.timer_id: t.due for t in claimed if t.due is not None}


async def test_the_old_shard_keys_are_moved_into_buckets_once_the_earlier_due_time_winning(redis: Redis) -> None:
    old = await _old_shards(redis, 300)
    await _write(redis, "livechat:demo:o1", [(wake_member("livechat:demo:o1"), 500.0)])  # earlier in its bucket
    await _write(redis, "livechat:demo:o2", [(wake_member("livechat:demo:o2"), 5000.0)])  # later
    assert await move_timer_buckets(redis, shards=4, page=7) == 300
    assert await redis.exists(TIMER_BUCKETS_DONE) and not await redis.exists(*(k.timer_shard_key(s) for s in range(4)))
    assert await move_timer_buckets(redis, shards=4) == 0  # once
    wheel = TimerWheel(redis, shards=4, worker="a")
    assert await wheel.due_at(wake_member("livechat:demo:o2")) == old[wake_member("livechat:demo:o2")]
    assert await _everything(wheel) == old | {wake_member("livechat:demo:o1"): 500.0}


async def test_a_move_cut_short_loses_nothing_and_the_claim_drains_the_old_keys_meanwhile(redis: Redis) -> None:
    old = await _old_shards(redis, 200)
    assert await move_timer_buckets(redis, shards=4, page=10, pages=3) == 30  # interrupted
    assert not await redis.exists(TIMER_BUCKETS_DONE)
    wheel = TimerWheel(redis, shards=4, worker="a")
    early = await wheel.claim(now=1050.0, batch=1000)  # from the buckets and the old keys alike
    assert sorted(t.timer_id for t in early) == sorted(m for m, at in old.items() if at <= 1050.0)
    await wheel.ack(early)
    moves = await asyncio.gather(move_timer_buckets(redis, shards=4, page=9),  # two processes at once
                                 move_timer_buckets(redis, shards=4, page=4))
    assert 0 < sum(moves) < 170  # the rest: claimed from the old keys, or moved by the other one
    rest = await _everything(wheel)
    assert rest == {m: at for m, at in old.items() if at > 1050.0}
    assert await redis.exists(TIMER_BUCKETS_DONE)


async def test_random_writes_moves_cancels_claims_and_acks_match_a_model(redis: Redis) -> None:
    """Seeded: the members claimed by each horizon are exactly the model's due members, none
    twice, none early, and every bucket's top stays at or below its earliest member."""
    rng = random.Random(1414)
    wheel = TimerWheel(redis, shards=4, worker="a")
    cids = [f"livechat:demo:r{i}" for i in range(60)]
    model: dict[str, float] = {}  # member -> due, waiting in the shards
    claimed: list[DueTimer] = []
    now = 1000.0
    for _ in range(1500):
        op = rng.random()
        cid = rng.choice(cids)
        member = wake_member(cid) if rng.random() < 0.7 else f"{cid}:t{rng.randrange(3)}"
        at = now + rng.uniform(-5, 60)
        if op < 0.35:  # a wake moved earlier only (ZADD LT), or a timer set
            lt = member.startswith("{")
            await _write(redis, cid, [(member, at)], lt=lt)
            model[member] = min(at, model.get(member, at)) if lt and member in model else at
        elif op < 0.45:
            await redis.zrem(k.timer_keys(cid, 4)[0], member)
            model.pop(member, None)
        elif op < 0.7:
            now += rng.uniform(0, 8)
            horizon = now + rng.choice([0.0, 2.0])
            batch = rng.choice([3, 100])
            got = await wheel.claim(now=now, horizon=horizon, batch=batch)
            held = {t.timer_id for t in claimed}
            for s in range(4):  # each shard's earliest first: none left earlier than one taken
                taken = [t.due for t in got if t.due is not None and k.shard_of(t.cid, 4) == s]
                waiting = [at for m, at in model.items() if k.shard_of(m[1:-1] if m[0] == "{" else
                                                                        m.rsplit(":", 1)[0], 4) == s
                           and m not in held and m not in {t.timer_id for t in got}]
                assert not taken or not waiting or min(waiting) >= max(taken)
            for t in got:
                if t.due is None:  # a claim not acknowledged for claim_ttl, offered again
                    assert t.timer_id in held
                    continue
                assert t.due <= horizon and model.pop(t.timer_id) == t.due
                assert not t.wake or t.timer_id not in held
            claimed += got
            if batch == 100:  # more than a shard holds: nothing due left but wakes held (skipped)
                left = {m for m, at in model.items() if at <= horizon}
                assert left <= held, left - held
        else:
            acked, claimed = claimed[:len(claimed) // 2], claimed[len(claimed) // 2:]
            await wheel.ack(acked)
        await _tops_are_lower_bounds(redis)
    assert await wheel.pending() == len(model)


async def _tops_are_lower_bounds(redis: Redis) -> None:
    pipe = redis.pipeline(transaction=False)
    for s in range(4):
        pipe.zrange(k.timer_tops_key(s), 0, -1, withscores=True)
        for b in range(k.TIMER_BUCKETS):
            pipe.zrange(k.timer_bucket_key(s, b), 0, 0, withscores=True)
    replies = iter(await pipe.execute())
    for _ in range(4):
        tops = dict(next(replies))
        for b in range(k.TIMER_BUCKETS):
            first = next(replies)
            if first:
                assert tops[str(b).encode()] <= first[0][1]


class _Cut(Exception):
    """The process died: Redis ran only the commands it had received."""


async def test_a_write_cut_after_any_of_its_commands_leaves_no_member_unclaimable(redis: Redis, redis_url: str) -> None:
    """A process dying mid-write (a save with its timers and wake, a worker's ``arm``): Redis ran a
    prefix of what it sent. Whatever the prefix, every member in a bucket is claimed by its due
    time. Fails with a member's ``ZADD`` and its top's ``ZADD LT`` sent as two commands: cut
    between them, the member has no top and is never claimed."""
    cid = "livechat:demo:cut"
    for cut in range(10):  # more than the save and the arm send
        await redis.flushdb()
        fast = ClusterRespClient.from_url(redis_url, max_connections=2) if is_cluster(redis) else None
        store = ConversationStore(redis, lock_ttl=30, batch=2, clock=Clock(), fast=fast)
        await store.load_scripts()
        pushed = await store.push(cid, b"e1", dedupe_id="m1")
        assert pushed.batch is not None
        wheel = TimerWheel(redis, shards=store.shards, worker="a", fast=store.fast)
        send = store.fast.send
        sent: list[int] = []

        async def cut_short(commands: Any, send: Any = send, sent: list[int] = sent, cut: int = cut) -> Any:
            room = cut - sum(sent)
            sent.append(min(room, len(commands)))
            if room < len(commands):
                await send(list(commands[:room])) if room > 0 else None
                raise _Cut
            return await send(commands)

        store.fast.send = cut_short  # type: ignore[method-assign]
        req = SaveRequest(state=b"s", processed=1, log=[b"e1"], out=[], meta={},
                          timers_set=[(f"{cid}:t1", 90.0)], wake=(wake_member(cid), 100.0))
        with contextlib.suppress(_Cut):
            await store.save(cid, pushed.batch.token, req)
            await wheel.arm(wake_member(cid), 80.0)
        store.fast.send = send  # type: ignore[method-assign]
        written = {m.decode() for m in await redis.zrange(k.timer_keys(cid, store.shards)[0], 0, -1)}
        claimed = await wheel.claim(now=200.0, batch=100)
        assert {t.timer_id for t in claimed} == written, (cut, sent)
        await store.close()


async def test_random_interleavings_of_two_workers_takeovers_old_keys_and_a_move_match_a_model(
        redis: Redis) -> None:
    """Seeded: two workers claim and acknowledge while timers are written, moved earlier and
    cancelled, an older version's members wait in the keys before buckets and are moved a page at a
    time, and a worker dies and its claims are taken over. Each claim takes exactly the model's due
    members (none twice, none early, the shard's earliest first); every top stays a lower bound;
    at the end, everything written and not cancelled has been claimed once."""
    rng = random.Random(2718)
    clock = Clock(1000.0)
    wheels = {w: TimerWheel(redis, shards=4, worker=w, clock=clock, dead_after=3.0) for w in "ab"}
    held: dict[str, list[DueTimer]] = {"a": [], "b": []}
    cids = [f"livechat:demo:i{i}" for i in range(40)]
    model: dict[str, float] = {}  # member -> due, waiting in a bucket or a key before buckets
    old = 0
    for _ in range(1500):
        op, w = rng.random(), rng.choice("ab")
        cid = rng.choice(cids)
        member = wake_member(cid) if rng.random() < 0.6 else f"{cid}:t{rng.randrange(3)}"
        at = clock.now + rng.uniform(-5, 60)
        if op < 0.3:
            lt = member.startswith("{")
            await _write(redis, cid, [(member, at)], lt=lt)
            model[member] = min(at, model[member]) if lt and member in model else at
        elif op < 0.36:  # an older version's timer, in the shard's key before buckets
            old += 1
            await redis.zadd(k.timer_shard_key(k.shard_of(cid, 4)), {f"{cid}:o{old}": at})
            model[f"{cid}:o{old}"] = at
        elif op < 0.4:
            await move_timer_buckets(redis, shards=4, page=rng.choice([1, 3, 7]), pages=1)
        elif op < 0.46:
            await redis.zrem(k.timer_keys(cid, 4)[0], member)
            model.pop(member, None)
        elif op < 0.7:
            clock.now += rng.uniform(0, 8)
            horizon = clock.now + rng.choice([0.0, 2.0])
            batch = rng.choice([3, 1000])
            got = await wheels[w].claim(now=clock.now, horizon=horizon, batch=batch)
            mine = {t.timer_id for t in held[w]}
            taken = {t.timer_id for t in got}
            for s in range(4):
                firsts = [t.due for t in got if t.due is not None and k.shard_of(t.cid, 4) == s]
                waiting = [at for m, at in model.items() if k.shard_of(cid_of(m), 4) == s
                           and not (m in mine and m[0] == "{") and m not in taken]
                assert not firsts or not waiting or min(waiting) >= max(firsts)
            for t in got:
                if t.due is None:  # not acknowledged for claim_ttl: offered to its worker again
                    assert t.timer_id in mine
                    continue
                assert t.due <= horizon and model.pop(t.timer_id) == t.due
                assert not t.wake or t.timer_id not in mine
            held[w] += [t for t in got if t.due is not None]  # (one offered again: held already)
            if batch == 1000:
                left = {m for m, at in model.items() if at <= horizon}
                assert left <= mine, left - mine
        elif op < 0.75:  # a worker dies: the other takes its claims over
            dead, alive = w, "b" if w == "a" else "a"
            await redis.zadd(k.timer_workers_key(), {dead: clock.now - 10})
            back = await wheels[alive].take_over()
            both = {t.timer_id for t in held[alive] if t.wake} & {t.timer_id for t in held[dead]}
            assert sorted(t.timer_id for t in back) == sorted({t.timer_id for t in held[dead]} - both)
            held[alive] += back
            held[dead] = [t for t in held[dead] if t.timer_id in both]  # taken once the other acked
        else:  # an ack removes a member from the claim set: a timer's every claim (deduplicated by
            rng.shuffle(held[w])  # its id when fired), a wake's one (never held twice)
            acked = held[w][:len(held[w]) // 2]
            await wheels[w].ack(acked)
            gone = {t.timer_id for t in acked}
            held[w] = [t for t in held[w] if t.timer_id not in gone]
        for w, timers in held.items():  # every wake held is still claimed: none acknowledged away
            for t in timers:
                assert not t.wake or await redis.zscore(k.timer_worker_claims_key(k.shard_of(t.cid, 4), w),
                                                         t.timer_id) is not None, t
        await _tops_are_lower_bounds(redis)
    assert await wheels["a"].pending() == len(model)
    for w in "ab":
        await wheels[w].ack(held[w])
    clock.now += 1000
    rest = await wheels["a"].claim(now=clock.now, batch=10_000)
    assert sorted((t.timer_id, t.due) for t in rest) == sorted(model.items())
    assert await wheels["a"].pending() == 0


async def test_a_wake_taken_over_from_a_dead_worker_while_the_taker_holds_it_too_is_not_lost(redis: Redis) -> None:
    """Worker a holds a wake (claimed, firing); the wake is armed again, worker b claims it and
    dies. Its claim must come back to a after a acknowledged its own: a claim set holds a member
    once, so merged into a's, a's ack of its first claim removed the one taken over, which a's loop
    never delivered (it skips a wake it holds): the wake, and the timers it was armed for, lost."""
    clock = Clock(1000.0)
    a, b = (TimerWheel(redis, shards=4, worker=w, clock=clock, dead_after=3.0) for w in "ab")
    wake = wake_member(CID)
    await _write(redis, CID, [(wake, 1000.0)], lt=True)
    [first] = await a.claim(now=1000.0)
    await _write(redis, CID, [(wake, 1005.0)], lt=True)  # armed again by a message's turn meanwhile
    assert [t.timer_id for t in await a.claim(now=1005.0)] == []  # a holds it: skipped
    assert await b.claim(now=1005.0) == [DueTimer(wake, 1005.0)]
    clock.now = 1010.0  # b is dead
    assert await a.take_over() == []  # a holds the wake: b's claim waits for a's ack
    assert await a.claimed() == 2
    await a.ack([first])
    assert await a.take_over() == [DueTimer(wake, 1005.0)]
    assert await a.claimed() == 1 and await a.take_over() == []
