"""One timer entry per conversation (bot/store/timers.py): its wake, scored by the earliest of the
timers its state records. A wake fires exactly the timers due, each once, and arms the entry
again; a message that leaves the earliest due time as it was writes no timer command; timers an
older version wrote as entries of their own keep firing (and are cancelled) as before.
Real services and a real Redis; counts, never timings."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from bot.engine import events as ev
from bot.runtime.worker import Worker
from bot.server.services import Services, open_services
from bot.store import codec, statefields
from bot.store import keys as k
from bot.store.timers import wake_member
from tests.server.conftest import REMINDER, make_config, nudge_flow

#: ``nudge`` without ``other_answer``: a text that is no button leaves the wait (and its timer) as it is.
PATIENT = {**nudge_flow("1h"), "id": "patient"}
PATIENT["steps"] = {**PATIENT["steps"], "ask": {k_: v for k_, v in PATIENT["steps"]["ask"].items()
                                                if k_ != "other_answer"}}


@pytest.fixture
async def svc(tmp_path: Path, redis_url: str) -> AsyncIterator[Services]:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "nudge.json").write_text(json.dumps(nudge_flow("1h")))
    (flows / "patient.json").write_text(json.dumps(PATIENT))
    async with open_services(make_config(redis_url, flows), start_hub=False) as services:  # type: ignore[arg-type]
        yield services


async def _say(svc: Services, cid: str, text: str, bot: str = "nudge") -> None:
    await svc.conversations.deliver(cid, ev.InboundMessage(text=text, greeting=bot),
                                    meta={"channel": "livechat", "account": "demo"})


async def _timers(svc: Services, cid: str) -> dict[str, float]:
    raw = await svc.store.state(cid)
    assert raw is not None
    return codec.decode_state(raw).timers


async def _entries(redis: Redis, svc: Services, cid: str) -> list[tuple[bytes, float]]:
    return list(await redis.zrange(k.timer_shard_key(k.shard_of(cid, svc.store.shards)), 0, -1, withscores=True))


async def _reminders(svc: Services, cid: str) -> int:
    return sum(codec.unpack(raw).get("text") == REMINDER for _, raw in await svc.store.read_log(cid, 0, 1000))


async def _wake(svc: Services, cid: str, due: float) -> None:
    """What the worker delivers for a claimed wake (``Worker._deliver_timer``)."""
    await svc.conversations.deliver(cid, ev.TimerFired(wake_member(cid)), entry_extra={"due": due})


async def test_a_wake_fires_the_timers_due_once_each_and_arms_the_entry_again(svc: Services, redis: Redis) -> None:
    cid = "livechat:demo:wake"
    await _say(svc, cid, "hi")
    [(timer_id, at)] = (await _timers(svc, cid)).items()
    assert await _entries(redis, svc, cid) == [(wake_member(cid).encode(), at)]
    await redis.zrem(k.timer_shard_key(k.shard_of(cid, svc.store.shards)), wake_member(cid))  # as a claim does
    await _wake(svc, cid, at - 60)  # a wake before the timer's time (another clock, an older score)
    assert await _reminders(svc, cid) == 0 and await _timers(svc, cid) == {timer_id: at}
    assert await _entries(redis, svc, cid) == [(wake_member(cid).encode(), at)]  # armed again
    await redis.zrem(k.timer_shard_key(k.shard_of(cid, svc.store.shards)), wake_member(cid))
    await _wake(svc, cid, at)  # the worker's clock says it is due: it fires
    assert await _reminders(svc, cid) == 1
    assert await _timers(svc, cid) == {} and await _entries(redis, svc, cid) == []
    await _wake(svc, cid, at)  # the same wake offered again (its ack was lost): nothing fires twice
    assert await _reminders(svc, cid) == 1 and await _entries(redis, svc, cid) == []


async def _commands(redis: Redis) -> dict[str, int]:
    stats: dict[str, Any] = await redis.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items() if name != "cmdstat_info"}


async def test_a_message_that_keeps_the_earliest_due_time_writes_no_timer_command(svc: Services, redis: Redis) -> None:
    cid = "livechat:demo:patient"
    await _say(svc, cid, "hi", "patient")
    await _say(svc, cid, "what?", "patient")  # no button: the question waits on, its timer too
    before = (await _timers(svc, cid), await _entries(redis, svc, cid))
    await svc.leads.idle()
    counted = await _commands(redis)
    await _say(svc, cid, "still what?", "patient")
    await svc.leads.idle()
    after = await _commands(redis)
    ran = {name: n - counted.get(name, 0) for name, n in after.items() if n != counted.get(name, 0)}
    assert (await _timers(svc, cid), await _entries(redis, svc, cid)) == before
    assert len(before[0]) == 1
    # ZADDs: the activity index (no dedupe id was given; the recovery entry: written by the
    # previous push of this process); no timer's
    assert ran.get("zadd") == 1 and "zrem" not in ran, ran


async def _as_an_older_version_left_it(svc: Services, redis: Redis, cid: str, due: float) -> str:
    """The conversation's timer as an entry of its own (``<cid>:t<n>``), its state without ``timers``."""
    [timer_id] = await _timers(svc, cid)
    raw = await svc.store.state(cid)
    assert raw is not None
    state = codec.decode_state(raw)
    state.timers = {}
    blob = codec.encode_state(state)
    fields = statefields.fields(blob)
    assert fields is not None
    meta = k.ConversationKey(cid).meta
    await redis.hset(meta, mapping=dict(zip(fields[::2], fields[1::2], strict=True)))  # type: ignore[arg-type]
    shard = k.timer_shard_key(k.shard_of(cid, svc.store.shards))
    await redis.zrem(shard, wake_member(cid))
    await redis.zadd(shard, {timer_id: due})
    assert await _timers(svc, cid) == {}
    return timer_id


async def test_an_older_versions_timer_entry_keeps_firing_once(svc: Services, redis: Redis) -> None:
    cid = "livechat:demo:old"
    await _say(svc, cid, "hi")
    timer_id = await _as_an_older_version_left_it(svc, redis, cid, due=1.0)  # long due
    worker = Worker(svc)
    assert await worker.fire_timers() == 1
    assert await worker.fire_timers() == 0
    assert await _reminders(svc, cid) == 1
    assert await _entries(redis, svc, cid) == [] and await svc.timers.claimed() == 0
    seen = k.ConversationKey(cid).seen
    assert await redis.zscore(seen, k.dedupe_member(f"timer:{timer_id}")) is not None  # deduplicated by its id


async def test_an_older_versions_timer_entry_is_removed_when_its_wait_ends(svc: Services, redis: Redis) -> None:
    cid = "livechat:demo:old-answered"
    await _say(svc, cid, "hi")
    timer_id = await _as_an_older_version_left_it(svc, redis, cid, due=9e9)
    await svc.conversations.deliver(cid, ev.InboundMessage(text="No", payload="No"))
    assert await _entries(redis, svc, cid) == []  # its ZREM, as before; no wake armed
    assert timer_id not in await _timers(svc, cid)
