"""The worker's timer loop over a few thousand real conversation timers: two live workers and
one that claimed a share and died; every timer fires exactly once, nothing stays claimed."""

from __future__ import annotations

import asyncio
import json
import random
import time
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from bot.config import ConfigError, load_config
from bot.engine import events as ev
from bot.runtime.timerloop import SLOT, TimerLoop
from bot.runtime.worker import Worker
from bot.server.services import open_services
from bot.store import codec
from bot.store import keys as k
from bot.store.timers import WRITE, DueTimer, TimerWheel, write_command
from tests import transcripts
from tests.server.conftest import REMINDER, make_config, nudge_flow
from tests.waiting import wait_for

FLOW = nudge_flow("2s")
CHATS = 2000


async def _reminders(redis: Redis, cids: list[str]) -> list[int]:
    """How many reminders each conversation's transcript holds."""
    rows = await transcripts.many(redis, cids)
    return [sum(codec.unpack(raw).get("text") == REMINDER for raw in r) for r in rows]


async def test_thousands_of_timers_fire_once_each_across_workers_one_of_which_died(
        tmp_path: Path, redis: Redis, redis_url: str) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "nudge.json").write_text(json.dumps(FLOW))
    cids = [f"livechat:demo:loop-{i:05d}" for i in range(CHATS)]
    async with open_services(make_config(redis_url, flows), start_hub=False) as svc:  # type: ignore[arg-type]
        for i in range(0, CHATS, 200):  # each waits with a 2 s no-answer timer
            await asyncio.gather(*(svc.conversations.deliver(cid, ev.InboundMessage(text="hi", greeting="nudge"),
                                                             meta={"channel": "livechat", "account": "demo"})
                                   for cid in cids[i:i + 200]))
        assert await svc.timers.pending() == CHATS
        # A worker claims a share a minute ahead, then dies before firing any of it.
        dead = TimerWheel(redis, shards=svc.config.timer_shards, worker="dead")
        held = await dead.claim(await _now(redis), 40, horizon=await _now(redis) + 60)
        assert held
        deliver = Worker(svc)._deliver_timer
        loops = [TimerLoop(TimerWheel(redis, shards=svc.config.timer_shards, worker=f"live{n}", dead_after=1.0),
                           deliver, poll=0.05) for n in (1, 2)]
        stop = asyncio.Event()
        running = [asyncio.create_task(loop.run(stop)) for loop in loops]
        try:
            async def fired() -> bool:
                return min(await _reminders(redis, cids)) >= 1

            await wait_for(fired, 120, interval=0.2, what="every timer to fire")

            async def settled() -> bool:  # nothing pending, nothing claimed (the dead one's claims too)
                return await svc.timers.pending() == 0 and await loops[0].wheel.claimed() == 0

            await wait_for(settled, 30, what="every claim to be acknowledged")
        finally:
            stop.set()
            await asyncio.gather(*running)
        counts = await _reminders(redis, cids)
        assert counts == [1] * CHATS  # none lost, none doubled
        workers = {w.decode() for w in await redis.zrange(k.timer_workers_key(), 0, -1)}
        assert "dead" not in workers and {"live1", "live2"} <= workers


async def test_a_round_claims_what_falls_due_before_the_round_after_next(redis: Redis) -> None:
    """A round starting late (a busy event loop, a starved CPU) still finds the timers due before
    it already claimed by the round before, to fire on time; later ones stay for later rounds."""
    wheel = TimerWheel(redis, shards=2, worker="w")
    now = await _now(redis)
    due = {"livechat:demo:soon:t1": now + 90, "livechat:demo:later:t1": now + 150}  # polls of 60 s
    for timer_id, at in due.items():
        await redis.script_load(WRITE)
        await redis.execute_command(*write_command(timer_id.rsplit(":", 1)[0], 2, [(timer_id, at)]))

    async def deliver(timer: Any) -> None:
        raise AssertionError(f"fired before its time: {timer}")

    stop = asyncio.Event()
    running = asyncio.create_task(TimerLoop(wheel, deliver, poll=60).run(stop))
    try:
        async def claimed() -> bool:
            return await wheel.claimed() == 1

        await wait_for(claimed, what="the first round's claim")
    finally:
        stop.set()
        await running
    claims = [m for s in range(2) for m in await redis.zrange(k.timer_worker_claims_key(s, "w"), 0, -1)]
    assert claims == [b"livechat:demo:soon:t1"] and await wheel.pending() == 1


async def _never(timer: DueTimer) -> None:
    raise AssertionError(f"started: {timer}")


def test_a_slot_widens_with_the_due_rate_up_to_the_coalesce_setting(redis: Redis) -> None:
    wheel = TimerWheel(redis, shards=2, worker="w")
    loop = TimerLoop(wheel, _never, poll=0.25, coalesce=0.1)
    # timers due within the look-ahead (two polls, 0.5 s) -> the slot's width
    assert [loop.width(n) for n in (0, 10, 50, 250, 500, 5000)] == pytest.approx([SLOT, SLOT, SLOT, 0.05, 0.1, 0.1])
    assert TimerLoop(wheel, _never, poll=0.25, coalesce=0).width(5000) == SLOT


@pytest.mark.parametrize(("count", "width"), [(5, SLOT), (500, 0.1)])
async def test_timers_start_together_at_their_slots_end_never_before_their_due_time(
        redis: Redis, count: int, width: float) -> None:
    """A light load keeps each timer's slot at 10 ms; 500 due over 0.5 s (1,000 a second) share
    slots of 100 ms. Either way a slot starts at its end: no timer in it is due later."""
    loop = TimerLoop(TimerWheel(redis, shards=2, worker="w"), _never, poll=0.25, coalesce=0.1)
    now = time.time()
    timers = [DueTimer(f"livechat:demo:c{i}:t1", now + 60 + i * 0.5 / count) for i in range(count)]
    aio = asyncio.get_running_loop()
    loop._schedule(timers)
    loop._schedule(timers[:3])  # offered again while held: not scheduled twice
    try:
        slots = list(loop._slots.values())
        assert sorted(t.timer_id for group, _ in slots for t in group) == sorted(t.timer_id for t in timers)
        offset = aio.time() - time.time()  # wall clock -> the loop's clock, as _schedule (1 ms slack)
        for group, handle in slots:
            end = handle.when()
            assert all(end - width - 1e-3 <= (t.due or 0) + offset <= end + 1e-3 for t in group)
        assert len(slots) <= 0.5 / width + 2
        assert loop._waiting == count
    finally:
        await loop._drain()
    assert loop._slots == {} and loop._waiting == 0


async def test_no_slot_of_any_width_starts_before_a_timer_in_it_is_due(redis: Redis) -> None:
    """Rounds of varied sizes give slots of varied widths, whose ends may fall within one
    millisecond of each other: each timer still waits in a slot that ends at or after its due time."""
    rng = random.Random(7)
    loop = TimerLoop(TimerWheel(redis, shards=2, worker="w"), _never, poll=0.25, coalesce=0.1)
    aio = asyncio.get_running_loop()
    now = time.time()
    try:
        for r in range(60):  # 1-15 a round: 10 ms slots first, then wider with every round
            count = rng.randint(1, 15)
            loop._schedule([DueTimer(f"livechat:demo:r{r}-{i}:t1", now + 60 + rng.random() * 0.5)
                            for i in range(count)])
        offset = aio.time() - time.time()
        early = [(t.timer_id, handle.when() - ((t.due or 0) + offset))
                 for group, handle in loop._slots.values() for t in group
                 if handle.when() < (t.due or 0) + offset - 1e-4]
        assert early == []
    finally:
        await loop._drain()


async def test_every_timer_starts_once_and_never_before_it_falls_due(redis: Redis) -> None:
    """Through real claims at 1,000 timers a second (the widest slots): each delivery starts at or
    after its due time on the wall clock, once."""
    wheel = TimerWheel(redis, shards=2, worker="w")
    now = await _now(redis)
    count = 300
    due = {f"livechat:demo:r{i}:t1": now + 0.3 + i * 0.3 / count for i in range(count)}
    await redis.script_load(WRITE)
    for timer_id, at in due.items():
        await redis.execute_command(*write_command(timer_id.rsplit(":", 1)[0], 2, [(timer_id, at)]))
    started: dict[str, list[float]] = {}

    async def deliver(timer: DueTimer) -> None:
        started.setdefault(timer.timer_id, []).append(time.time())

    stop = asyncio.Event()
    running = asyncio.create_task(TimerLoop(wheel, deliver, poll=0.05, coalesce=0.1).run(stop))
    try:
        async def done() -> bool:
            return len(started) == count and await wheel.claimed() == 0

        await wait_for(done, 30, what="every timer to start and be acknowledged")
    finally:
        stop.set()
        await running
    assert all(len(at) == 1 for at in started.values())
    early = {t: at[0] - due[t] for t, at in started.items() if at[0] < due[t]}
    assert early == {}


async def _now(redis: Redis) -> float:
    seconds, micros = await redis.time()
    return float(seconds) + micros / 1e6


@pytest.mark.parametrize(("settings", "problem"), [
    ({"timer_worker_dead_after": 0.5}, "timer_worker_dead_after"),
    ({"timer_claim_ttl": 0}, "timer_claim_ttl"),
    ({"timer_poll_interval": 0}, "timer_poll_interval"),
    ({"timer_shards": 0}, "timer_shards"),
    ({"timer_coalesce": -0.1}, "timer_coalesce"),
    ({"timer_coalesce": 1.5}, "timer_coalesce"),
    ({"timer_coalesce": float("nan")}, "timer_coalesce"),
    ({"timer_coalesce": float("inf")}, "timer_coalesce"),
])
def test_timer_settings_are_validated(settings: dict[str, float], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        load_config(env={}, overrides=settings)


def test_timer_settings_come_from_the_environment() -> None:
    config = load_config(env={"SALESBOT_TIMER_WORKER_DEAD_AFTER": "5", "SALESBOT_TIMER_CLAIM_TTL": "120",
                              "SALESBOT_TIMER_COALESCE": "0.05"})
    assert (config.timer_worker_dead_after, config.timer_claim_ttl, config.timer_coalesce) == (5.0, 120.0, 0.05)
