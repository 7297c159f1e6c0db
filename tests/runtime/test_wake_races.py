"""Races and edges of early wakes (``bot/store/pushscript.py``, ``ConversationService._rearm``):
a turn between an early wake's push and the worker's ``ZADD LT``, the ``w`` double armed as it
is, a state in its own key, a dead worker's claim, the cluster path, a conversation that is gone.
Real services and a real Redis; time is the services' clocks, moved by hand."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

from bot.runtime.worker import Worker
from bot.server.services import Services
from bot.store import codec, statefields
from bot.store import keys as k
from bot.store.pushscript import NO_TIMERS, WAKE_FIELD
from bot.store.timers import WRITE, TimerWheel, wake_member, write_command
from tests.runtime import test_timer_wakes as wakes
from tests.runtime.test_timer_wakes import T0, Clock, _commands, _entries, _entry, _reminders, _say, _timers

svc, clock = wakes.svc, wakes.clock  # the fixtures: services with the test bots, their clock


def _between_push_and_arm(svc: Services, turn: Callable[[], Awaitable[None]]) -> list[float]:
    """Run ``turn`` once, after the early wake's push (which read ``w``) and before the worker's
    ``ZADD LT`` at that time; the times the worker armed the wake at."""
    real = svc.timers.arm
    calls: list[float] = []

    async def arm(member: str, due: float) -> None:
        calls.append(due)
        svc.timers.arm = real  # type: ignore[method-assign]
        await turn()
        await real(member, due)

    svc.timers.arm = arm  # type: ignore[method-assign]
    return calls


async def _early_entry(svc: Services, cid: str) -> None:
    """A conversation whose timer is due at T0 + 660 and whose wake is left at T0 + 600."""
    await _say(svc, cid, "hi", "again")
    now = svc.timers.clock
    assert isinstance(now, Clock)
    now.now = T0 + 60
    await _say(svc, cid, "what?", "again")


async def test_a_wait_ended_during_the_settle_leaves_a_stale_wake_that_finds_none(
        redis: Redis, svc: Services, clock: Clock) -> None:
    """The turn's ``ZREM`` runs before the worker arms the wake at the old ``w``: that wake fires at
    T0 + 660, its push finds ``-`` and drops it. Fails if it sent a reminder, stayed in the shard,
    or left a claim."""
    cid = "livechat:demo:ended-between"
    worker = Worker(svc)
    await _early_entry(svc, cid)
    calls = _between_push_and_arm(svc, lambda: _say(svc, cid, "No", "again"))
    clock.now = T0 + 600
    assert await worker.fire_timers() == 1
    assert calls == [T0 + 660]
    assert await _timers(svc, cid) == {}
    assert await redis.hget(k.ConversationKey(cid).meta, WAKE_FIELD) == NO_TIMERS.encode()
    assert await _entry(redis, svc, cid) == [(wake_member(cid).encode(), T0 + 660)]  # stale, after the ZREM
    clock.now = T0 + 660
    assert await worker.fire_timers() == 1
    assert await _reminders(svc, cid) == 0
    assert await _entries(redis, svc, cid) == [] and await svc.timers.claimed() == 0


async def test_a_timer_moved_earlier_during_the_settle_fires_once_at_its_time(
        redis: Redis, svc: Services, clock: Clock) -> None:
    """The turn arms T0 + 660 (``ZADD LT``) before the worker arms the old ``w`` (T0 + 900): ``LT``
    keeps the earlier. Fails if the worker's write moved the wake later (the reminder four
    minutes late), or the timer fired early or twice."""
    cid = "livechat:demo:earlier-between"
    worker = Worker(svc)
    await _say(svc, cid, "hi", "again")
    clock.now = T0 + 300
    await _say(svc, cid, "what?", "again")  # due T0 + 900, the wake at T0 + 600
    calls = _between_push_and_arm(svc, lambda: _say(svc, cid, "Soon", "again"))  # due T0 + 660
    clock.now = T0 + 600
    assert await worker.fire_timers() == 1
    assert calls == [T0 + 900]
    assert list((await _timers(svc, cid)).values()) == [T0 + 660]
    assert await _entry(redis, svc, cid) == [(wake_member(cid).encode(), T0 + 660)]
    clock.now = T0 + 659.999
    assert await worker.fire_timers() == 0
    clock.now = T0 + 660
    assert await worker.fire_timers() == 1 and await _reminders(svc, cid) == 1
    clock.now = T0 + 7200
    assert await worker.fire_timers() == 0 and await _reminders(svc, cid) == 1
    assert await _entries(redis, svc, cid) == [] and await svc.timers.claimed() == 0


async def test_a_wake_armed_at_a_messy_w_fires_at_that_time_without_a_loop(
        redis: Redis, svc: Services, clock: Clock) -> None:
    """Times that are no exact binary fractions: ``w`` (``repr``) reads back as the very double of
    the timer, so the wake armed at it fires the timer. Fails if the round trip lost a bit (the
    wake would settle again and again, or fire before the timer's time)."""
    cid = "livechat:demo:messy"
    worker = Worker(svc)
    base = 1_800_000_000.1
    clock.now = base
    await _say(svc, cid, "hi", "again")
    clock.now = base + 60.3
    await _say(svc, cid, "what?", "again")
    [due] = (await _timers(svc, cid)).values()
    assert due > base + 600
    clock.now = base + 600
    assert await worker.fire_timers() == 1 and await _reminders(svc, cid) == 0  # settled
    assert await _entry(redis, svc, cid) == [(wake_member(cid).encode(), due)]
    clock.now = due
    assert await worker.fire_timers() == 1 and await _reminders(svc, cid) == 1
    assert await _entries(redis, svc, cid) == [] and await svc.timers.claimed() == 0


async def test_a_state_in_its_own_key_settles_its_wake_by_the_turn(redis: Redis, svc: Services, clock: Clock) -> None:
    """A state too long for the hash has no ``SYNCED`` mark: the push queues its early wake and the
    turn settles it. Fails if the timer were lost (no wake armed) or fired early or twice."""
    cid = "livechat:demo:ownkey"
    worker = Worker(svc)
    await _early_entry(svc, cid)
    raw = await svc.store.state(cid)
    assert raw is not None
    state = codec.decode_state(raw)
    state.last_message = {"pad": "x" * 3000}
    blob = codec.encode_state(state)
    assert len(blob) > statefields.INLINE_MAX
    key = k.ConversationKey(cid)
    await redis.set(key.state, blob)
    await redis.hset(key.meta, statefields.COUNT, statefields.IN_KEY)
    svc.conversations._states.clear()
    clock.now = T0 + 600
    assert await worker.fire_timers() == 1 and await _reminders(svc, cid) == 0
    assert await _entry(redis, svc, cid) == [(wake_member(cid).encode(), T0 + 660)]
    clock.now = T0 + 659.999
    assert await worker.fire_timers() == 0
    clock.now = T0 + 660
    assert await worker.fire_timers() == 1 and await _reminders(svc, cid) == 1
    assert await _entries(redis, svc, cid) == [] and await svc.timers.claimed() == 0


async def test_a_dead_workers_early_wake_is_taken_over_and_settled(redis: Redis, svc: Services, clock: Clock) -> None:
    """Fails if the taken-over early wake were lost (not armed again), fired the timer early, or
    left its claim behind."""
    cid = "livechat:demo:dead"
    worker = Worker(svc)
    await _early_entry(svc, cid)
    dead = TimerWheel(svc.redis, shards=svc.store.shards, worker="dead-one", clock=clock,
                      dead_after=svc.timers.dead_after)
    clock.now = T0 + 600
    [claimed] = await dead.claim(clock.now)
    assert claimed.timer_id == wake_member(cid)
    assert await _entries(redis, svc, cid) == []
    clock.now = T0 + 600 + svc.timers.dead_after + 1
    assert await worker.fire_timers() == 1 and await _reminders(svc, cid) == 0  # taken over, settled
    assert await _entry(redis, svc, cid) == [(wake_member(cid).encode(), T0 + 660)]
    assert await svc.timers.claimed() == 0
    clock.now = T0 + 660
    assert await worker.fire_timers() == 1 and await _reminders(svc, cid) == 1
    assert await _entries(redis, svc, cid) == [] and await svc.timers.claimed() == 0


async def test_on_a_cluster_the_recovery_entry_goes_beside_the_script_and_the_timer_fires(
        redis: Redis, svc: Services, clock: Clock) -> None:
    """``cluster``: the recovery set is in another slot, so the push's caller writes the entry
    (docs/server.md, "Early wakes"). Fails if it were not written, or the settled wake lost."""
    cid = "livechat:demo:cluster"
    worker = Worker(svc)
    pending = k.pending_key(k.shard_of(cid, svc.store.shards))
    await _early_entry(svc, cid)
    await redis.zrem(pending, cid)
    svc.store._pended.forget(cid)
    svc.store.cluster = True
    clock.now = T0 + 600
    assert await worker.fire_timers() == 1 and await _reminders(svc, cid) == 0
    assert await redis.zscore(pending, cid) is not None  # beside the script, as documented
    assert await _entry(redis, svc, cid) == [(wake_member(cid).encode(), T0 + 660)]
    clock.now = T0 + 660
    assert await worker.fire_timers() == 1 and await _reminders(svc, cid) == 1
    assert await _entries(redis, svc, cid) == [] and await svc.timers.claimed() == 0


async def _keys(redis: Redis) -> set[bytes]:
    return {key async for key in redis.scan_iter(match="*")}


async def test_a_wake_of_a_conversation_that_is_gone_writes_nothing(redis: Redis, svc: Services, clock: Clock) -> None:
    """Its keys expired, its wake left in the shard: the push finds no metadata and drops it.
    Fails if it made a ghost conversation (metadata, a state, a TTL), queued anything, sent a
    message or armed the wake again."""
    cid = "livechat:demo:gone"
    worker = Worker(svc)
    await _early_entry(svc, cid)
    await redis.delete(*[key async for key in redis.scan_iter(match=f"sb:c:{{{cid}}}:*")])
    pending = k.pending_key(k.shard_of(cid, svc.store.shards))
    await redis.zrem(pending, cid)  # forgotten by recovery long ago
    svc.store._pended.forget(cid)
    clock.now = T0 + 599.999
    assert await worker.fire_timers() == 0  # the registry's key, the scripts loaded
    before = await _keys(redis)
    clock.now = T0 + 600
    assert await worker.fire_timers() == 1
    after = await _keys(redis)
    assert after <= before and not [key for key in after if cid.encode() in key]  # the shard: emptied by the claim
    assert await _entries(redis, svc, cid) == [] and await svc.timers.claimed() == 0
    assert await redis.zscore(pending, cid) is None  # no recovery entry to forget


async def test_a_wake_of_a_conversation_without_its_state_saves_none(
        redis: Redis, svc: Services, clock: Clock) -> None:
    """Metadata left without a state (its state key expired first): the push queues the wake, the
    turn finds no state and releases the lock without saving. Fails if it saved a new idle state,
    wrote ``w`` or the status, or armed the wake again."""
    cid = "livechat:demo:stateless"
    worker = Worker(svc)
    await _early_entry(svc, cid)
    meta = k.ConversationKey(cid).meta
    await redis.delete(meta)
    await redis.hset(meta, "channel", "livechat")
    svc.conversations._states.clear()
    clock.now = T0 + 600
    assert await worker.fire_timers() == 1
    assert await svc.store.state(cid) is None
    assert set(await redis.hgetall(meta)) <= {b"channel", b"r"}  # the push's own refresh stamp
    assert await redis.exists(k.ConversationKey(cid).inbox) == 0  # and the lock with it
    assert await _entries(redis, svc, cid) == [] and await svc.timers.claimed() == 0
    assert await _reminders(svc, cid) == 0


async def _saved_by_an_older_version(redis: Redis, svc: Services, cid: str, due: float) -> None:
    """The state as an older version saves it: its timer at ``due``, the chunk count without
    ``statefields.SYNCED``, ``w`` left as it was."""
    raw = await svc.store.state(cid)
    assert raw is not None
    state = codec.decode_state(raw)
    [timer_id] = state.timers
    state.timers = {timer_id: due}
    fields = statefields.fields(codec.encode_state(state))
    assert fields is not None and fields[-2] == statefields.COUNT
    fields[-1] = str(fields[-1]).removeprefix(statefields.SYNCED)
    await redis.hset(k.ConversationKey(cid).meta, mapping=dict(zip(fields[::2], fields[1::2], strict=True)))  # type: ignore[arg-type]
    svc.conversations._states.clear()


async def test_an_older_versions_count_is_marked_by_the_next_hset_and_never_by_one_of_its_own(
        redis: Redis, svc: Services, clock: Clock) -> None:
    """After an older version's save the push distrusts ``w``: the wake goes through the turn. The
    turn that writes the metadata anyway (here ``w``, stale) marks the count in that ``HSET``, so
    the next early wake is settled by its push; one that writes nothing sends no ``HSET`` for the
    mark. Fails if the mark were never written (every early wake a turn) or cost a command."""
    cid = "livechat:demo:older-later"
    meta = k.ConversationKey(cid).meta
    worker = Worker(svc)
    await _early_entry(svc, cid)
    await _saved_by_an_older_version(redis, svc, cid, T0 + 700)  # asked again: the timer later
    clock.now = T0 + 600
    assert await worker.fire_timers() == 1 and await _reminders(svc, cid) == 0  # through the turn
    assert (await redis.hget(meta, statefields.COUNT) or b"").startswith(statefields.SYNCED.encode())
    assert await redis.hget(meta, WAKE_FIELD) == repr(T0 + 700).encode()
    await redis.script_load(WRITE)  # left early again
    await redis.execute_command(*write_command(cid, svc.store.shards, [(wake_member(cid), T0 + 650)]))
    counted = await _commands(redis)
    clock.now = T0 + 650
    assert await worker.fire_timers() == 1 and await _reminders(svc, cid) == 0
    assert "rpush" not in await _ran(redis, counted)  # settled by the push
    clock.now = T0 + 700
    assert await worker.fire_timers() == 1 and await _reminders(svc, cid) == 1

    cid = "livechat:demo:older-same"
    meta = k.ConversationKey(cid).meta
    clock.now = T0
    await _early_entry(svc, cid)
    await _saved_by_an_older_version(redis, svc, cid, T0 + 660)  # the timer as it was: ``w`` right
    await svc.leads.idle()
    counted = await _commands(redis)
    clock.now = T0 + 600
    assert await worker.fire_timers() == 1 and await _reminders(svc, cid) == 0  # through the turn
    ran = await _ran(redis, counted)
    assert ran.get("rpush") == 1 and "hset" not in ran, ran  # nothing to write: no HSET for the mark
    assert not (await redis.hget(meta, statefields.COUNT) or b"").startswith(statefields.SYNCED.encode())
    clock.now = T0 + 660
    assert await worker.fire_timers() == 1 and await _reminders(svc, cid) == 1
    assert await _entries(redis, svc, cid) == [] and await svc.timers.claimed() == 0


async def _ran(redis: Redis, counted: dict[str, int]) -> dict[str, int]:
    return {name: n - counted.get(name, 0) for name, n in (await _commands(redis)).items() if n != counted.get(name, 0)}
