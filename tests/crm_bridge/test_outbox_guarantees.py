"""The CRM outbox's guarantees under concurrency, each test written to fail if one mechanism
breaks: the claim's lease and its renewal before every command (two workers with a slow CRM
never send a command twice nor out of order), a lead's backoff kept when a new command queues,
the process-wide hold after a failure or an open circuit (and its end on a success), and no
command stranded when one queues while its lead is rescheduled.

Real Redis, the scripted CRM and the injected clock of ``test_outbox``; "slow" is an
``asyncio.Event`` the CRM waits on, so every interleaving is forced, never timed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from bot.errors import CrmRateLimited, CrmUnavailable
from crm_bridge import CommandResult, CrmRef
from crm_bridge._http import CircuitOpen
from crm_bridge.outbox import DUE_KEY, CrmOutbox

from ..waiting import wait_for
from .test_outbox import Clock, ScriptedCrm, _note, _ref, _texts

LEASE = 30.0


class SlowCrm(ScriptedCrm):
    """A scripted CRM that can hold chosen commands (by text) until released, once each, and
    run a hook while one is held (e.g. let the clock pass: a slow CRM)."""

    def __init__(self) -> None:
        super().__init__()
        self.slow: dict[str, asyncio.Event] = {}
        self.entered: dict[str, asyncio.Event] = {}

    def hold(self, text: str) -> asyncio.Event:
        self.entered[text] = asyncio.Event()
        gate = self.slow[text] = asyncio.Event()
        return gate

    async def execute(self, ref: CrmRef, command: dict[str, Any]) -> CommandResult:
        gate = self.slow.pop(str(command.get("text")), None)
        if gate is not None:
            self.attempts.append((ref.lead_id, command.get("do"), command.get("command_id")))
            self.entered[str(command.get("text"))].set()
            await gate.wait()
            return self.execute_now(ref, command)
        return await super().execute(ref, command)


@pytest.fixture
def crm() -> SlowCrm:
    return SlowCrm()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def _outbox(redis: Redis, crm: ScriptedCrm, clock: Clock, **kw: Any) -> CrmOutbox:
    return CrmOutbox(redis, crm, max_attempts=4, base_delay=1.0, max_delay=8.0, lease=LEASE,
                     clock=clock, **kw)


@pytest.fixture
async def other_redis(redis_url: str) -> AsyncIterator[Redis]:
    """A second connection: another worker process."""
    client = Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


async def _queue(outbox: CrmOutbox, crm: ScriptedCrm, ref: CrmRef, *texts: str) -> None:
    """Queue ``texts`` for a lead, due now: the first one's direct try fails, the rest queue behind."""
    crm.failures = [CrmUnavailable("down")]
    for text in texts:
        assert await outbox.submit(ref, _note(text), cid="c") is None
    outbox._hold_until = 0.0
    await outbox.redis.zadd(DUE_KEY, {outbox.member(ref.lead_id): outbox.clock()})
    crm.attempts.clear()


def _sent(crm: ScriptedCrm) -> list[str]:
    return [cid or "" for _, _, cid in crm.attempts]


async def test_a_claimed_lead_waiting_for_a_slot_is_not_taken_by_another_worker(
        redis: Redis, other_redis: Redis, crm: SlowCrm, clock: Clock) -> None:
    """The claim leases the lead (now + lease), not just marks it: another worker must not take
    a lead this one claimed and has not started yet."""
    one = _outbox(redis, crm, clock, concurrency=1)
    two = _outbox(other_redis, crm, clock, concurrency=1)
    a, b = await _ref(crm), await _ref(crm)
    await _queue(one, crm, a, "a1")
    await _queue(one, crm, b, "b1", "b2")
    await redis.zadd(DUE_KEY, {one.member(b.lead_id): clock.now + 0.5})  # a is claimed first
    clock.now += 1.0
    gate = crm.hold("a1")
    first = asyncio.create_task(one.run_once())  # claims a, delivers a1 slowly
    await asyncio.wait_for(crm.entered["a1"].wait(), 10)
    second = asyncio.create_task(one.run_once())  # claims b, waits for the busy slot
    await wait_for(lambda: _after(redis, one.member(b.lead_id), clock.now), what="b leased")
    assert await two.run_once() == 0  # b is leased to the first worker
    gate.set()
    assert await asyncio.wait_for(first, 10) == 1 and await asyncio.wait_for(second, 10) == 2
    assert _texts(crm, a) == ["a1"] and _texts(crm, b) == ["b1", "b2"]
    assert len(crm.attempts) == len(set(_sent(crm))) == 3  # nothing sent twice


async def _after(redis: Redis, member: str, now: float) -> bool:
    score = await redis.zscore(DUE_KEY, member)
    return score is not None and score > now


async def test_the_claim_is_renewed_before_each_command_so_a_slow_crm_keeps_its_lead(
        redis: Redis, other_redis: Redis, crm: SlowCrm, clock: Clock) -> None:
    """Each command may take up to a lease: the claim must be renewed before every command,
    or a second worker takes the lead and sends its head command a second time."""
    one = _outbox(redis, crm, clock)
    two = _outbox(other_redis, crm, clock)
    a = await _ref(crm)
    await _queue(one, crm, a, "1", "2", "3")
    original = crm.execute

    async def slow_first(ref: CrmRef, command: dict[str, Any]) -> CommandResult:
        if command["text"] == "1":
            clock.now += LEASE  # the CRM took a whole lease to answer
        return await original(ref, command)
    crm.execute = slow_first  # type: ignore[method-assign]
    gate = crm.hold("2")
    first = asyncio.create_task(one.run_once())
    await asyncio.wait_for(crm.entered["2"].wait(), 10)
    assert await two.run_once() == 0  # the lead's claim was renewed before "2"
    gate.set()
    assert await asyncio.wait_for(first, 10) == 3
    assert _texts(crm, a) == ["1", "2", "3"]
    assert len(crm.attempts) == len(set(_sent(crm))) == 3


async def test_workers_polling_a_slow_crm_never_send_twice_nor_out_of_order(
        redis: Redis, redis_url: str, crm: SlowCrm, clock: Clock) -> None:
    """Three workers poll while two leads' commands each take a tenth of a lease (the clock is
    shared, so a whole round takes longer than a lease): every command once, in order."""
    clients = [redis] + [Redis.from_url(redis_url) for _ in range(2)]
    workers = [_outbox(r, crm, clock, concurrency=1, per_round=8) for r in clients]
    leads = [await _ref(crm) for _ in range(2)]
    for i, ref in enumerate(leads):
        await _queue(workers[0], crm, ref, *(f"{i}.{n}" for n in range(8)))
    original = crm.execute

    async def slow(ref: CrmRef, command: dict[str, Any]) -> CommandResult:
        clock.now += LEASE * 0.1
        await asyncio.sleep(0)  # let the other workers poll meanwhile
        return await original(ref, command)
    crm.execute = slow  # type: ignore[method-assign]

    async def poll(worker: CrmOutbox) -> None:
        for _ in range(200):
            if not await worker.depth():
                return
            await worker.run_once()
            await asyncio.sleep(0)
    try:
        await asyncio.wait_for(asyncio.gather(*(poll(w) for w in workers)), 30)
    finally:
        for r in clients[1:]:
            await r.aclose()
    assert await workers[0].depth() == 0
    for i, ref in enumerate(leads):
        assert _texts(crm, ref) == [f"{i}.{n}" for n in range(8)]
    assert len(crm.attempts) == len(set(_sent(crm))) == 16


async def test_a_new_command_keeps_the_leads_backoff(
        redis: Redis, other_redis: Redis, crm: SlowCrm, clock: Clock) -> None:
    """A command queued behind a failing one (here by another process, not holding) must not
    make the lead due at once: the CRM asked for 30 s."""
    one = _outbox(redis, crm, clock)
    two = _outbox(other_redis, crm, clock)
    a = await _ref(crm)
    crm.failures = [CrmRateLimited("429", retry_after=30.0)]
    assert await one.submit(a, _note("1"), cid="c") is None
    due = clock.now + 30.0
    assert await redis.zscore(DUE_KEY, one.member(a.lead_id)) == due
    clock.now += 1.0
    assert await two.submit(a, _note("2"), cid="c") is None  # behind "1", not tried
    assert await redis.zscore(DUE_KEY, one.member(a.lead_id)) == due
    assert await two.run_once() == 0 and len(crm.attempts) == 1
    clock.now = due
    assert await two.run_once() == 2 and _texts(crm, a) == ["1", "2"]


async def test_an_open_circuit_met_by_the_worker_holds_new_commands_back(
        redis: Redis, crm: SlowCrm, clock: Clock) -> None:
    one = _outbox(redis, crm, clock)
    a, b = await _ref(crm), await _ref(crm)
    await _queue(one, crm, a, "a")
    crm.failures = [CircuitOpen("not tried", retry_after=5.0)]
    start = clock.now
    assert await one.run_once() == 0 and one.holding
    assert await one.submit(b, _note("b"), cid="c") is None  # queued, not tried
    assert [lead for lead, _, _ in crm.attempts] == [a.lead_id]
    clock.now = start + 4.5
    assert one.holding
    clock.now = start + 5.0  # the hold ends exactly when the backend will try again
    assert not one.holding
    assert await one.run_once() == 2 and _texts(crm, a) == ["a"] and _texts(crm, b) == ["b"]


async def test_an_open_circuit_on_the_direct_path_holds_new_commands_back(
        redis: Redis, crm: SlowCrm, clock: Clock) -> None:
    one = _outbox(redis, crm, clock)
    a, b = await _ref(crm), await _ref(crm)
    crm.failures = [CircuitOpen("not tried", retry_after=5.0)]
    assert await one.submit(a, _note("a"), cid="c") is None
    assert await one.submit(b, _note("b"), cid="c") is None
    assert len(crm.attempts) == 1
    assert await redis.zscore(DUE_KEY, one.member(b.lead_id)) == clock.now + 5.0


async def test_a_success_ends_the_hold(redis: Redis, crm: SlowCrm, clock: Clock) -> None:
    """The CRM answered again: new commands go direct at once, not after the longest backoff."""
    one = _outbox(redis, crm, clock)
    a, b, c = await _ref(crm), await _ref(crm), await _ref(crm)
    crm.failures = [CrmUnavailable("down")]
    assert await one.submit(a, _note("a"), cid="c") is None  # due in 1 s
    crm.failures = [CrmRateLimited("429", retry_after=30.0)]
    one._hold_until = 0.0
    assert await one.submit(b, _note("b"), cid="c") is None  # due in 30 s; holds 30 s
    clock.now += 1.0
    assert one.holding
    assert await one.run_once() == 1 and _texts(crm, a) == ["a"]  # the CRM works again
    assert not one.holding
    assert await one.submit(c, _note("c"), cid="c") is not None  # direct
    assert _texts(crm, c) == ["c"]


async def test_a_command_queued_during_the_reschedule_is_not_stranded(
        redis: Redis, other_redis: Redis, crm: SlowCrm, clock: Clock) -> None:
    """Another process queues a command between the worker's last look at the (empty) queue and
    its ``ZREM`` of the lead: the lead must stay scheduled, or the command waits forever."""
    one = _outbox(redis, crm, clock)
    two = _outbox(other_redis, crm, clock)
    a = await _ref(crm)
    await _queue(one, crm, a, "1")
    member = one.member(a.lead_id)
    real_zrem = redis.zrem
    raced: list[int] = []

    async def zrem_after_a_submit(name: str, *values: Any) -> Any:
        if name == DUE_KEY and not raced:
            crm.failures = [CrmUnavailable("down")]  # its direct try fails: queued (ZADD NX)
            assert await two.submit(a, _note("2"), cid="c") is None
            raced.append(1)
        return await real_zrem(name, *values)
    redis.zrem = zrem_after_a_submit  # type: ignore[method-assign,assignment]
    assert await one.run_once() == 1
    assert raced and [i["command"]["text"] for i in await one.pending(a.lead_id)] == ["2"]
    assert await redis.zscore(DUE_KEY, member) is not None  # still scheduled
    clock.now += 1.0
    assert await one.run_once() == 1 and _texts(crm, a) == ["1", "2"]
    assert await one.depth() == 0


async def test_more_than_one_round_of_commands_stays_due_now(
        redis: Redis, crm: SlowCrm, clock: Clock) -> None:
    one = _outbox(redis, crm, clock, per_round=2)
    a = await _ref(crm)
    await _queue(one, crm, a, "1", "2", "3")
    assert await one.run_once() == 2
    assert await redis.zscore(DUE_KEY, one.member(a.lead_id)) == clock.now
    assert await one.run_once() == 1 and _texts(crm, a) == ["1", "2", "3"]
    assert await one.depth() == 0


# ---------------------------------------------------------------------- the shared queue scripts
async def test_pop_and_replace_touch_the_head_only_if_it_is_still_the_one_handled(
        redis: Redis, crm: SlowCrm, clock: Clock) -> None:
    one = _outbox(redis, crm, clock)
    key = one.queue_key("x:1")
    await redis.rpush(key, b"head", b"next")
    assert await one._pop(keys=[key], args=[b"next"]) == 2  # not the head: nothing popped
    assert await one._replace(keys=[key], args=[b"next", b"new"]) == 0
    assert await redis.lrange(key, 0, -1) == [b"head", b"next"]
    assert await one._replace(keys=[key], args=[b"head", b"head2"]) == 1
    assert await one._pop(keys=[key], args=[b"head2"]) == 1
    assert await redis.lrange(key, 0, -1) == [b"next"]


async def test_claim_takes_only_due_members_at_most_the_limit_and_leases_them(
        redis: Redis, crm: SlowCrm, clock: Clock) -> None:
    one = _outbox(redis, crm, clock)
    await redis.zadd(DUE_KEY, {"a": 10, "b": 20, "c": 30, "d": 41})
    assert await one._claim(keys=[DUE_KEY], args=[40, 2, 100]) == [b"a", b"b"]
    assert await redis.zrange(DUE_KEY, 0, -1, withscores=True) == [
        (b"c", 30.0), (b"d", 41.0), (b"a", 100.0), (b"b", 100.0)]
    assert await one._claim(keys=[DUE_KEY], args=[40, 5, 200]) == [b"c"]
