"""One timer entry per conversation (bot/store/timers.py): its wake, due no later than the earliest
of the timers its state records. A wake fires exactly the timers due, each once, and arms the entry
again; a message that leaves the earliest due time as it was, or moves it later, writes no timer
command (the entry stays early: its wake finds nothing due, writes nothing but the entry armed
again, and the timer fires at its time); one that moves it earlier arms it earlier; timers an
older version wrote as entries of their own keep firing (and are cancelled) as before.
Real services and a real Redis; counts, never timings: time is the services' clocks, moved by hand."""

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
from bot.store import codec, dedupe, statefields
from bot.store import keys as k
from bot.store.pushscript import NO_TIMERS, WAKE_FIELD
from bot.store.timers import WRITE, DueTimer, wake_member, write_command
from tests.runtime.roundtrips import RoundTrips
from tests.server.conftest import REMINDER, make_config, nudge_flow

#: ``nudge`` without ``other_answer``: a text that is no button leaves the wait (and its timer) as it is.
PATIENT = {**nudge_flow("1h"), "id": "patient"}
PATIENT["steps"] = {**PATIENT["steps"], "ask": {k_: v for k_, v in PATIENT["steps"]["ask"].items()
                                                if k_ != "other_answer"}}
#: As the webhook bench's bot: any text asks again, so every message moves the 10 minute
#: no-answer timer later; "Soon" waits a minute instead (a timer moved earlier), "No" ends the wait.
AGAIN = {
    "format": "salesbot.flow/1", "id": "again", "name": "Asks again", "start": "ask",
    "steps": {
        "ask": {"type": "message", "text": "Anything else?",
                "buttons": [{"title": "Soon", "next": "soon"}, {"title": "No", "next": "bye"}],
                "other_answer": "ask", "no_answer": {"after": "10m", "next": "remind"}},
        "soon": {"type": "message", "text": "In a minute, then", "buttons": [{"title": "No", "next": "bye"}],
                 "no_answer": {"after": "1m", "next": "remind"}},
        "remind": {"type": "message", "text": REMINDER},
        "bye": {"type": "message", "text": "Bye!"},
    },
}
T0 = 1_800_000_000.25


@pytest.fixture
async def svc(tmp_path: Path, redis_url: str) -> AsyncIterator[Services]:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "nudge.json").write_text(json.dumps(nudge_flow("1h")))
    (flows / "patient.json").write_text(json.dumps(PATIENT))
    (flows / "again.json").write_text(json.dumps(AGAIN))
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
    return list(await redis.zrange(k.timer_keys(cid, svc.store.shards)[0], 0, -1, withscores=True))


async def _reminders(svc: Services, cid: str) -> int:
    return sum(codec.unpack(raw).get("text") == REMINDER for _, raw in await svc.store.read_log(cid, 0, 1000))


async def _wake(svc: Services, cid: str, due: float) -> None:
    """What the worker does with a claimed wake (``Worker._deliver_timer``): its push, which
    settles an early one (then the wake is armed), or its turn."""
    await Worker(svc)._deliver_timer(DueTimer(wake_member(cid), due))


async def test_a_wake_fires_the_timers_due_once_each_and_arms_the_entry_again(svc: Services, redis: Redis) -> None:
    cid = "livechat:demo:wake"
    await _say(svc, cid, "hi")
    [(timer_id, at)] = (await _timers(svc, cid)).items()
    assert await _entries(redis, svc, cid) == [(wake_member(cid).encode(), at)]
    await redis.zrem(k.timer_keys(cid, svc.store.shards)[0], wake_member(cid))  # as a claim does
    await _wake(svc, cid, at - 60)  # a wake before the timer's time (another clock, an older score)
    assert await _reminders(svc, cid) == 0 and await _timers(svc, cid) == {timer_id: at}
    assert await _entries(redis, svc, cid) == [(wake_member(cid).encode(), at)]  # armed again
    await redis.zrem(k.timer_keys(cid, svc.store.shards)[0], wake_member(cid))
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
    shard = k.timer_shard_key(k.shard_of(cid, svc.store.shards))  # the layout before buckets (timers.py)
    await redis.zrem(k.timer_keys(cid, svc.store.shards)[0], wake_member(cid))
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
    assert await dedupe.seen_at(redis, cid, f"timer:{timer_id}") is not None  # deduplicated by its id


async def test_an_older_versions_timer_entry_is_removed_when_its_wait_ends(svc: Services, redis: Redis) -> None:
    cid = "livechat:demo:old-answered"
    await _say(svc, cid, "hi")
    timer_id = await _as_an_older_version_left_it(svc, redis, cid, due=9e9)
    await svc.conversations.deliver(cid, ev.InboundMessage(text="No", payload="No"))
    assert await _entries(redis, svc, cid) == []  # its ZREM, as before; no wake armed
    assert timer_id not in await _timers(svc, cid)


class Clock:
    """The conversations' and the timer wheel's clock, moved by the test."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(svc: Services) -> Clock:
    clock = Clock(T0)
    svc.conversations.clock = clock  # the turns' time: when their timers fall due
    svc.timers.clock = clock  # what ``Worker.fire_timers`` claims by
    return clock


async def _entry(redis: Redis, svc: Services, cid: str) -> list[tuple[bytes, float]]:
    return [(m, at) for m, at in await _entries(redis, svc, cid) if m == wake_member(cid).encode()]


def _shard_writes(trips: RoundTrips, svc: Services, cid: str) -> list[tuple[Any, ...]]:
    """The commands sent on the hot path to the conversation's timer shard (its entry's writes:
    ``ZREM``, or the script writing the bucket and its top, ``write_command``)."""
    bucket, tops, _ = k.timer_keys(cid, svc.store.shards)
    return [c for call in trips.fast for c in call
            if (c[0] in ("ZADD", "ZREM") and c[1] in (bucket, tops)) or (c[0] == "EVALSHA" and c[3] == bucket)]


async def test_a_message_that_moves_the_no_answer_timer_later_leaves_the_entry_early(
        redis: Redis, svc: Services, clock: Clock, trips: RoundTrips) -> None:
    """Fails on the code before: it moved the entry with a ``ZADD`` on every such message."""
    cid = "livechat:demo:later"
    await _say(svc, cid, "hi", "again")
    assert await _entry(redis, svc, cid) == [(wake_member(cid).encode(), T0 + 600)]
    clock.now = T0 + 60
    await svc.leads.idle()
    counted = await _commands(redis)
    trips.clear()
    await _say(svc, cid, "what?", "again")  # asked again: the timer is now due at T0 + 660
    await svc.leads.idle()
    after = await _commands(redis)
    ran = {name: n - counted.get(name, 0) for name, n in after.items() if n != counted.get(name, 0)}
    assert list((await _timers(svc, cid)).values()) == [T0 + 660]
    assert await _entry(redis, svc, cid) == [(wake_member(cid).encode(), T0 + 600)]  # left where it was
    assert _shard_writes(trips, svc, cid) == []
    assert ran.get("zadd") == 1 and "zrem" not in ran, ran  # the activity index's only


async def test_an_early_wake_is_settled_by_its_push_and_the_timer_fires_once_at_its_time(
        redis: Redis, svc: Services, clock: Clock, trips: RoundTrips, caplog: pytest.LogCaptureFixture) -> None:
    """Fails on the code before (the entry was moved, so nothing fires at T0 + 600), if the early
    wake were queued or ran a turn (the lock, the inbox, a transcript entry, a count, the list's
    activity or preview moved, a notification, an ``HSET``: more commands than pinned), if it did
    not arm the entry at the timer's time (the timer would be lost), or if the timer fired early,
    late or twice."""
    cid = "livechat:demo:early"
    worker = Worker(svc)
    await _say(svc, cid, "hi", "again")
    clock.now = T0 + 60
    await _say(svc, cid, "what?", "again")
    [timer_id] = await _timers(svc, cid)
    assert (await redis.hget(k.ConversationKey(cid).meta, WAKE_FIELD)) == repr(T0 + 660).encode()
    clock.now = T0 + 599.999
    assert await worker.fire_timers() == 0
    meta, log = await svc.store.meta(cid), await svc.store.read_log(cid, 0, 1000)
    await svc.leads.idle()
    counted = await _commands(redis)
    trips.clear()
    clock.now = T0 + 600
    with caplog.at_level("INFO", logger="salesbot"):
        assert await worker.fire_timers() == 1  # the entry, early: nothing is due
    after = await _commands(redis)
    ran = {name: n - counted.get(name, 0) for name, n in after.items() if n != counted.get(name, 0)}
    assert [r.getMessage() for r in caplog.records if r.name.startswith("salesbot")] == []
    assert await svc.store.read_log(cid, 0, 1000) == log and await _reminders(svc, cid) == 0
    assert await svc.store.meta(cid) == meta  # activity, preview, step_at, counts: as they were
    assert await _timers(svc, cid) == {timer_id: T0 + 660}
    # The round's claim (the registry's ZADD, a script per shard: 16 EVALSHA, 64 ZRANGEBYSCORE:
    # own stale claims, old versions' claims, the key before buckets, the tops; the take-over's
    # look at the registry: 1 ZRANGEBYSCORE); for the wake, 12: its claim (its bucket's
    # ZRANGEBYSCORE, ZSCORE, ZREM, ZADD; the bucket's new top: ZRANGE, and ZREM from the tops,
    # the bucket empty), the push (EVALSHA, HGETALL: the metadata's ``w`` says T0 + 660, so no
    # RPUSH, no lock, no save), the entry armed at the timer's time (``ZADD LT`` to its bucket and
    # its top, one script: never later), the ack (ZREM). (The turn that settled it before: 13.)
    assert ran == {"zadd": 4, "evalsha": 18, "zrangebyscore": 66, "zrange": 1, "zscore": 1, "zrem": 3,
                   "hgetall": 1}, ran
    assert _shard_writes(trips, svc, cid) == [write_command(cid, svc.store.shards,
                                                            earlier=[(wake_member(cid), T0 + 660)])]
    assert await _entry(redis, svc, cid) == [(wake_member(cid).encode(), T0 + 660)]
    clock.now = T0 + 659.999
    assert await worker.fire_timers() == 0 and await _reminders(svc, cid) == 0
    clock.now = T0 + 660
    assert await worker.fire_timers() == 1 and await _reminders(svc, cid) == 1
    assert await redis.hget(k.ConversationKey(cid).meta, WAKE_FIELD) == NO_TIMERS.encode()
    clock.now = T0 + 7200
    assert await worker.fire_timers() == 0 and await _reminders(svc, cid) == 1
    assert await _entries(redis, svc, cid) == [] and await svc.timers.claimed() == 0


async def test_a_wake_due_at_the_earliest_timer_fires_it(redis: Redis, svc: Services, clock: Clock) -> None:
    """Fails if the push settled a wake whose due time equals the earliest timer's (``>``, not
    ``>=``: the timer would never fire), whatever the processor's clock says."""
    cid = "livechat:demo:exact"
    await _say(svc, cid, "hi", "again")
    [at] = (await _timers(svc, cid)).values()
    assert at == T0 + 600
    await redis.zrem(k.timer_keys(cid, svc.store.shards)[0], wake_member(cid))  # as a claim does
    clock.now = T0 + 1  # the processor's clock behind: the wake's due time decides
    await _wake(svc, cid, at)
    assert await _reminders(svc, cid) == 1 and await _timers(svc, cid) == {}
    assert await _entries(redis, svc, cid) == []


async def test_a_wake_of_a_conversation_without_the_field_goes_through_its_turn(
        redis: Redis, svc: Services, clock: Clock) -> None:
    """A conversation saved by a version without ``w`` (or whose field is gone): the push queues
    the wake as before, its turn finds nothing due, arms the entry at the timer (the fallback) and
    writes the field, so the next early wake is settled by the push. Fails if an absent field were
    read as "nothing due" (the timer lost) or the turn did not arm the entry."""
    cid = "livechat:demo:nofield"
    worker = Worker(svc)
    await _say(svc, cid, "hi", "again")
    clock.now = T0 + 60
    await _say(svc, cid, "what?", "again")  # due T0 + 660, the entry at T0 + 600
    [timer_id] = await _timers(svc, cid)
    meta = k.ConversationKey(cid).meta
    await redis.hdel(meta, WAKE_FIELD)
    ran_before = await _commands(redis)
    clock.now = T0 + 600
    assert await worker.fire_timers() == 1  # queued, the turn settles it
    ran = {name: n - ran_before.get(name, 0) for name, n in (await _commands(redis)).items()}
    assert ran.get("rpush") == 1 and ran.get("lpop") == 1, ran  # the push queued it, a save took it (inbox + lock)
    assert await _reminders(svc, cid) == 0 and await _timers(svc, cid) == {timer_id: T0 + 660}
    assert await _entry(redis, svc, cid) == [(wake_member(cid).encode(), T0 + 660)]
    assert await redis.hget(meta, WAKE_FIELD) == repr(T0 + 660).encode()  # written by that turn
    clock.now = T0 + 660
    assert await worker.fire_timers() == 1 and await _reminders(svc, cid) == 1
    assert await _entries(redis, svc, cid) == []


async def test_a_timer_moved_earlier_arms_the_entry_earlier_and_fires_on_time(
        redis: Redis, svc: Services, clock: Clock) -> None:
    """Fails if a turn skipped the write for a timer earlier than the entry (it would fire at the
    entry's time, late), or if a write moved an early entry later (``ZADD`` without ``LT``)."""
    worker = Worker(svc)
    cid = "livechat:demo:sooner"
    await _say(svc, cid, "hi", "again")  # due T0 + 600
    clock.now = T0 + 60
    await _say(svc, cid, "what?", "again")  # due T0 + 660, the entry at T0 + 600
    clock.now = T0 + 100
    await _say(svc, cid, "Soon", "again")  # due T0 + 160: earlier than the entry
    assert await _entry(redis, svc, cid) == [(wake_member(cid).encode(), T0 + 160)]
    clock.now = T0 + 159.999
    assert await worker.fire_timers() == 0
    clock.now = T0 + 160
    assert await worker.fire_timers() == 1 and await _reminders(svc, cid) == 1
    assert await _entries(redis, svc, cid) == [] and await _timers(svc, cid) == {}

    cid = "livechat:demo:between"
    await _say(svc, cid, "hi", "again")  # T0 + 160 + 600
    clock.now = T0 + 260
    await _say(svc, cid, "what?", "again")  # due T0 + 860, the entry at T0 + 760
    clock.now = T0 + 750
    await _say(svc, cid, "Soon", "again")  # due T0 + 810: earlier than the timer, later than the entry
    assert await _entry(redis, svc, cid) == [(wake_member(cid).encode(), T0 + 760)]  # ``LT``: kept early
    clock.now = T0 + 760
    assert await worker.fire_timers() == 1 and await _reminders(svc, cid) == 0  # the early wake
    assert await _entry(redis, svc, cid) == [(wake_member(cid).encode(), T0 + 810)]
    clock.now = T0 + 809.999
    assert await worker.fire_timers() == 0
    clock.now = T0 + 810
    assert await worker.fire_timers() == 1 and await _reminders(svc, cid) == 1
    assert await _entries(redis, svc, cid) == []


async def test_an_answer_that_ends_the_wait_removes_an_early_entry(
        redis: Redis, svc: Services, clock: Clock) -> None:
    """Cancelling stays a ``ZREM`` (one command, against an early wake's push and save): fails if
    the entry were left to fire (or kept at its early time) once no timer is left."""
    cid = "livechat:demo:ended"
    await _say(svc, cid, "hi", "again")
    clock.now = T0 + 60
    await _say(svc, cid, "what?", "again")
    assert await _entry(redis, svc, cid) == [(wake_member(cid).encode(), T0 + 600)]
    await _say(svc, cid, "No", "again")
    assert await _timers(svc, cid) == {} and await _entries(redis, svc, cid) == []


async def test_a_settled_wake_leaves_no_recovery_entry_and_a_queued_one_does(
        redis: Redis, svc: Services, clock: Clock) -> None:
    """A worker that did not push to the conversation lately: the early wake's push queues
    nothing, so it writes no recovery entry (nor leaves recovery one to forget: the script writes
    it only past the check); the real fire's push queues the wake and writes it, as every push.
    Fails if the entry were written beside the script (the early wake) or not at all (the fire)."""
    cid = "livechat:demo:recovery"
    worker = Worker(svc)
    pending = k.pending_key(k.shard_of(cid, svc.store.shards))
    await _say(svc, cid, "hi", "again")
    clock.now = T0 + 60
    await _say(svc, cid, "what?", "again")  # due T0 + 660, the entry at T0 + 600
    await redis.zrem(pending, cid)  # forgotten by recovery (idle), and by this process:
    svc.store._pended.forget(cid)  # as a worker that never pushed to it
    clock.now = T0 + 599.999
    assert await worker.fire_timers() == 0  # (the claim script loaded)
    await svc.leads.idle()
    counted = await _commands(redis)
    clock.now = T0 + 600
    assert await worker.fire_timers() == 1
    ran = {name: n - counted.get(name, 0) for name, n in (await _commands(redis)).items() if n != counted.get(name, 0)}
    assert await _reminders(svc, cid) == 0
    # the round's claim (ZADD, 16 EVALSHA, 65 ZRANGEBYSCORE) and the wake's 12, as above: no ZADD more
    assert ran == {"zadd": 4, "evalsha": 18, "zrangebyscore": 66, "zrange": 1, "zscore": 1, "zrem": 3,
                   "hgetall": 1}, ran
    assert await redis.zscore(pending, cid) is None
    clock.now = T0 + 660
    assert await worker.fire_timers() == 1 and await _reminders(svc, cid) == 1
    assert await redis.zscore(pending, cid) is not None


async def test_a_timer_an_older_version_moved_earlier_fires_on_time(redis: Redis, svc: Services, clock: Clock) -> None:
    """An older version's save (rolling upgrade, rollback) moves the timer earlier and leaves ``w``
    as this version wrote it, later: its chunk count without ``statefields.SYNCED`` makes the push
    distrust ``w``, so the wake is queued and its turn fires the timer at its time. Fails if the
    push settled the wake at the stale ``w`` (the reminder late by nine minutes)."""
    cid = "livechat:demo:mixed"
    worker = Worker(svc)
    await _say(svc, cid, "hi", "again")
    clock.now = T0 + 60
    await _say(svc, cid, "what?", "again")  # due T0 + 660, ``w`` says so
    raw = await svc.store.state(cid)
    assert raw is not None
    state = codec.decode_state(raw)
    [timer_id] = state.timers
    state.timers = {timer_id: T0 + 100}  # as an older version's turn would have moved it
    fields = statefields.fields(codec.encode_state(state))
    assert fields is not None and fields[-2] == statefields.COUNT and str(fields[-1]).startswith(statefields.SYNCED)
    fields[-1] = str(fields[-1]).removeprefix(statefields.SYNCED)  # the count as older versions write it
    meta = k.ConversationKey(cid).meta
    await redis.hset(meta, mapping=dict(zip(fields[::2], fields[1::2], strict=True)))  # type: ignore[arg-type]
    await redis.script_load(WRITE)
    await redis.execute_command(*write_command(cid, svc.store.shards, [(wake_member(cid), T0 + 100)]))
    assert await redis.hget(meta, WAKE_FIELD) == repr(T0 + 660).encode()  # stale: later than the timer
    clock.now = T0 + 100
    assert await worker.fire_timers() == 1 and await _reminders(svc, cid) == 1
    assert await _timers(svc, cid) == {} and await _entries(redis, svc, cid) == []


async def test_a_fire_that_leaves_no_timer_keeps_no_decoded_state_and_one_that_leaves_one_does(
        svc: Services, redis: Redis) -> None:
    """A batch of wakes that left no timer is not cached (nothing will bring the conversation back
    to this process: a worker's fires would fill the cache for the collector to walk); a message's
    batch is, and so is a wake's that leaves a timer for the next wake."""
    cid = "livechat:demo:cached"
    await _say(svc, cid, "hi", "again")  # waits with a 10 minute no-answer timer
    assert cid in svc.conversations._states
    [at] = (await _timers(svc, cid)).values()
    await redis.zrem(k.timer_keys(cid, svc.store.shards)[0], wake_member(cid))  # as a claim does
    await _wake(svc, cid, at - 60)  # early: the timer still pends
    assert cid in svc.conversations._states and await _reminders(svc, cid) == 0
    await redis.zrem(k.timer_keys(cid, svc.store.shards)[0], wake_member(cid))
    await _wake(svc, cid, at)  # fires the reminder, which ends the run: no timer left
    assert await _reminders(svc, cid) == 1 and await _timers(svc, cid) == {}
    assert cid not in svc.conversations._states
    await _say(svc, cid, "hi again", "again")  # decoded from Redis, as another process's would be
    assert cid in svc.conversations._states and len(await _timers(svc, cid)) == 1
