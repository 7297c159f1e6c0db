"""The CRM outbox (``crm_bridge.outbox.CrmOutbox``) against a real Redis, with a scripted CRM and
an injected clock (no sleeps): deferral, order per lead, backoff and ``retry_after``, give-up,
leases, restarts, and how the server's request handler reports a deferred command."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import Redis

from bot.engine import effects as fx
from bot.engine.state import ConversationState
from bot.errors import CrmRateLimited, CrmRejected, CrmTemporary, CrmUnavailable
from bot.runtime.requests import ServerRequests
from crm_bridge import CommandResult, CrmRef, MemoryCrm
from crm_bridge.contract import PIPELINES
from crm_bridge.outbox import DUE_KEY, CrmOutbox


class ScriptedCrm(MemoryCrm):
    """A MemoryCrm whose ``execute`` can be told to fail; records every attempt."""

    name = "scripted"

    def __init__(self) -> None:
        super().__init__(pipelines=PIPELINES)
        self.attempts: list[tuple[str, str | None, str | None]] = []  # (lead, do, command_id)
        self.failures: list[Exception] = []
        self.down: Exception | None = None

    async def execute(self, ref: CrmRef, command: dict[str, Any]) -> CommandResult:
        self.attempts.append((ref.lead_id, command.get("do"), command.get("command_id")))
        if self.down is not None:
            raise self.down
        if self.failures:
            raise self.failures.pop(0)
        return self.execute_now(ref, command)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def crm() -> ScriptedCrm:
    return ScriptedCrm()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def failed() -> list[tuple[str | None, str, str, str]]:
    return []


@pytest.fixture
def outbox(redis: Redis, crm: ScriptedCrm, clock: Clock, failed: list[Any]) -> CrmOutbox:
    async def on_failed(cid: str | None, ref: CrmRef, command: dict[str, Any], reason: str) -> None:
        failed.append((cid, ref.lead_id, command["do"], reason))
    return CrmOutbox(redis, crm, on_failed=on_failed, max_attempts=4, base_delay=1.0, max_delay=8.0,
                     lease=30.0, clock=clock)


async def _ref(crm: ScriptedCrm) -> CrmRef:
    from crm_bridge import ChannelIdentity
    return await crm.identify(ChannelIdentity("livechat", "demo", f"s{len(crm.identities)}"))


def _note(text: str) -> dict[str, Any]:
    return {"do": "add_note", "text": text, "entity": "lead"}


def _texts(crm: ScriptedCrm, ref: CrmRef) -> list[str]:
    return [n["text"] for n in crm.lead_notes(ref)]


async def test_success_is_direct_and_returns_the_result(outbox: CrmOutbox, crm: ScriptedCrm, redis: Redis) -> None:
    ref = await _ref(crm)
    result = await outbox.submit(ref, {"do": "create_lead", "copy": []}, cid="c1")
    assert result is not None and result.value["lead_id"]
    assert await outbox.depth() == 0 and await outbox.pending(ref.lead_id) == []


async def test_a_temporary_failure_queues_the_command_and_the_worker_delivers_it(
        outbox: CrmOutbox, crm: ScriptedCrm, clock: Clock) -> None:
    ref = await _ref(crm)
    crm.failures = [CrmUnavailable("kommo: 503")]
    assert await outbox.submit(ref, _note("one"), cid="c1") is None  # deferred: the run goes on
    [item] = await outbox.pending(ref.lead_id)
    assert (item["attempts"], item["cid"], item["command"]["text"], item["error"]) == (1, "c1", "one", "kommo: 503")
    assert await outbox.run_once() == 0  # not due yet (backoff 1 s)
    clock.now += 1.0
    assert await outbox.run_once() == 1
    assert _texts(crm, ref) == ["one"] and await outbox.depth() == 0
    ids = {cid for _, _, cid in crm.attempts}
    assert len(ids) == 1 and None not in ids  # one command id across both attempts


async def test_later_commands_queue_behind_waiting_ones_and_keep_their_order(
        outbox: CrmOutbox, crm: ScriptedCrm, clock: Clock) -> None:
    ref, other = await _ref(crm), await _ref(crm)
    crm.failures = [CrmUnavailable("down")]
    assert await outbox.submit(ref, _note("1"), cid="c1") is None
    clock.now += 5.0  # the hold is over: the CRM may be tried again…
    assert await outbox.submit(ref, _note("2"), cid="c1") is None  # …but not before this lead's queue
    assert await outbox.submit(ref, _note("3"), cid="c1") is None
    assert [a[0] for a in crm.attempts] == [ref.lead_id]  # 2 and 3 were never tried out of order
    assert (await outbox.submit(other, _note("x"), cid="c2")) is not None  # other leads go direct
    assert await outbox.run_once() == 3
    assert _texts(crm, ref) == ["1", "2", "3"] and _texts(crm, other) == ["x"]
    assert await outbox.depth() == 0


async def test_after_a_failure_every_lead_queues_at_once_for_the_retry_delay(
        outbox: CrmOutbox, crm: ScriptedCrm, clock: Clock) -> None:
    ref, other = await _ref(crm), await _ref(crm)
    crm.failures = [CrmUnavailable("down")]
    await outbox.submit(ref, _note("a"), cid="c1")
    assert outbox.holding
    assert await outbox.submit(other, _note("b"), cid="c2") is None  # not tried: the CRM just failed
    assert len(crm.attempts) == 1
    clock.now += 1.0
    assert await outbox.run_once() == 2 and not outbox.holding
    assert _texts(crm, ref) == ["a"] and _texts(crm, other) == ["b"]


async def test_backoff_grows_and_honours_retry_after(outbox: CrmOutbox, crm: ScriptedCrm, clock: Clock,
                                                     redis: Redis) -> None:
    ref = await _ref(crm)
    member = outbox.member(ref.lead_id)
    crm.failures = [CrmRateLimited("429", retry_after=30.0)]
    await outbox.submit(ref, _note("n"), cid="c")
    assert await redis.zscore(DUE_KEY, member) == clock.now + 30.0  # retry_after beats the 1 s backoff
    crm.down = CrmUnavailable("down")
    delays = []
    for _ in range(2):
        clock.now = await redis.zscore(DUE_KEY, member)
        await outbox.run_once()
        delays.append(await redis.zscore(DUE_KEY, member) - clock.now)
    assert delays == [2.0, 4.0]  # attempts 2 and 3: base * 2**(attempts-1)
    crm.down = None
    clock.now += 4.0
    await outbox.run_once()
    assert _texts(crm, ref) == ["n"]


async def test_a_rejected_command_is_dropped_reported_and_the_next_goes_on(
        outbox: CrmOutbox, crm: ScriptedCrm, clock: Clock, failed: list[Any]) -> None:
    ref = await _ref(crm)
    crm.failures = [CrmUnavailable("down")]
    await outbox.submit(ref, _note("before"), cid="c1")
    await outbox.submit(ref, {"do": "change_stage", "pipeline": "Sales", "stage": "Nowhere"}, cid="c1")
    await outbox.submit(ref, _note("after"), cid="c1")
    clock.now += 1.0
    await outbox.run_once()
    assert _texts(crm, ref) == ["before", "after"]
    assert [(f[0], f[1], f[2]) for f in failed] == [("c1", ref.lead_id, "change_stage")]
    assert "Nowhere" in failed[0][3]


async def test_rejection_on_the_direct_path_is_raised(outbox: CrmOutbox, crm: ScriptedCrm) -> None:
    ref = await _ref(crm)
    with pytest.raises(CrmRejected):
        await outbox.submit(ref, {"do": "change_stage", "pipeline": "Sales", "stage": "Nowhere"}, cid="c1")
    assert await outbox.depth() == 0


async def test_a_command_failing_too_often_is_given_up(outbox: CrmOutbox, crm: ScriptedCrm, clock: Clock,
                                                      failed: list[Any], redis: Redis) -> None:
    ref = await _ref(crm)
    crm.down = CrmUnavailable("still down")
    await outbox.submit(ref, _note("lost"), cid="c1")
    await outbox.submit(ref, _note("next"), cid="c1")
    for _ in range(3):  # attempts 2, 3, 4 (max_attempts)
        clock.now = await redis.zscore(DUE_KEY, outbox.member(ref.lead_id))
        await outbox.run_once()
    assert [f[2] for f in failed] == ["add_note"] and "gave up after 4 attempts" in failed[0][3]
    assert [i["command"]["text"] for i in await outbox.pending(ref.lead_id)] == ["next"]


async def test_an_unexpected_backend_error_keeps_the_command(outbox: CrmOutbox, crm: ScriptedCrm, clock: Clock) -> None:
    ref = await _ref(crm)
    crm.failures = [CrmUnavailable("down"), RuntimeError("bug")]
    await outbox.submit(ref, _note("kept"), cid="c1")
    clock.now += 1.0
    await outbox.run_once()  # the bug: treated as temporary
    [item] = await outbox.pending(ref.lead_id)
    assert item["attempts"] == 2 and "bug" in item["error"]
    clock.now += 2.0
    await outbox.run_once()
    assert _texts(crm, ref) == ["kept"]


async def test_a_crashed_workers_claim_comes_back_after_the_lease(
        outbox: CrmOutbox, crm: ScriptedCrm, clock: Clock, redis: Redis) -> None:
    ref = await _ref(crm)
    crm.failures = [CrmUnavailable("down")]
    await outbox.submit(ref, _note("z"), cid="c1")
    clock.now += 1.0
    claimed = await outbox._claim(keys=[DUE_KEY], args=[clock.now, 100, clock.now + outbox.lease])
    assert claimed  # a worker claimed the lead… and died
    assert await outbox.run_once() == 0
    clock.now += outbox.lease
    assert await outbox.run_once() == 1 and _texts(crm, ref) == ["z"]


async def test_queued_commands_survive_a_restart(redis: Redis, crm: ScriptedCrm, clock: Clock) -> None:
    ref = await _ref(crm)
    first = CrmOutbox(redis, crm, clock=clock)
    crm.failures = [CrmTemporary("down")]
    await first.submit(ref, _note("durable"), cid="c1")
    second = CrmOutbox(redis, crm, clock=clock)  # a new process
    clock.now += 1.0
    assert await second.run_once() == 1 and _texts(crm, ref) == ["durable"]


async def test_a_command_queued_while_the_worker_drains_is_not_stranded(
        outbox: CrmOutbox, crm: ScriptedCrm, clock: Clock, redis: Redis) -> None:
    ref = await _ref(crm)
    crm.failures = [CrmUnavailable("down")]
    await outbox.submit(ref, _note("1"), cid="c1")
    clock.now += 1.0
    original = crm.execute

    async def execute_and_enqueue(r: CrmRef, command: dict[str, Any]) -> CommandResult:
        result = await original(r, command)
        if command["text"] == "1":  # the conversation queues "2" while "1" is being delivered
            crm.execute = original  # type: ignore[method-assign]
            assert await outbox.submit(ref, _note("2"), cid="c1") is None
        return result
    crm.execute = execute_and_enqueue  # type: ignore[method-assign]
    await outbox.run_once()
    assert _texts(crm, ref) == ["1", "2"]  # drained in the same round, behind "1"
    assert await outbox.depth() == 0 and await redis.zcard(DUE_KEY) == 0


# ---------------------------------------------------------------------- the server's request handler
async def test_server_requests_report_a_deferred_command_as_ok_and_a_rejection_as_permanent(
        redis: Redis, crm: ScriptedCrm, outbox: CrmOutbox) -> None:
    ref = await _ref(crm)
    handler = ServerRequests(redis=redis, crm=crm, crm_outbox=outbox)
    state = ConversationState(id="livechat:demo:s", crm={"contact_id": ref.contact_id, "lead_id": ref.lead_id,
                                                         "company_id": ""})
    crm.failures = [CrmUnavailable("down")]
    result = await handler(fx.Request("r1", "action", _note("later")), state, {})
    assert (result.ok, result.value, result.error) == (True, None, None)
    [item] = await outbox.pending(ref.lead_id)
    assert item["cid"] == "livechat:demo:s"
    crm.failures = []
    outbox._hold_until = 0.0
    await redis.delete(outbox.queue_key(outbox.member(ref.lead_id)), DUE_KEY)
    bad = await handler(fx.Request("r2", "action", {"do": "change_stage", "pipeline": "Sales",
                                                               "stage": "Nowhere"}), state, {})
    assert (bad.ok, bad.permanent) == (False, True) and "Nowhere" in (bad.error or "")
    ok = await handler(fx.Request("r3", "action", _note("now")), state, {})
    assert ok.ok and _texts(crm, ref) == ["now"]


async def test_a_backend_failing_fast_costs_no_attempt(outbox: CrmOutbox, crm: ScriptedCrm, clock: Clock,
                                                       redis: Redis) -> None:
    from crm_bridge._http import CircuitOpen
    ref = await _ref(crm)
    crm.failures = [CircuitOpen("not tried", retry_after=3.0)]
    assert await outbox.submit(ref, _note("n"), cid="c1") is None
    [item] = await outbox.pending(ref.lead_id)
    assert item["attempts"] == 0
    assert await redis.zscore(DUE_KEY, outbox.member(ref.lead_id)) == clock.now + 3.0
    clock.now += 3.0
    crm.failures = [CircuitOpen("still not tried", retry_after=2.0)]
    await outbox.run_once()
    [item] = await outbox.pending(ref.lead_id)
    assert item["attempts"] == 0  # unchanged: max_attempts counts real tries only
    assert await redis.zscore(DUE_KEY, outbox.member(ref.lead_id)) == clock.now + 2.0
    clock.now += 2.0
    await outbox.run_once()
    assert _texts(crm, ref) == ["n"]
