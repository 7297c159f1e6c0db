"""The lead loop (``LeadService``) against a real Redis: order per lead across processes, dedupe by
event id, a crash mid-batch recovered once, timers of lead queues routed to the lead loop, and
every change of the embedded CRM (a flow's command, a person's edit) emitting its event."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from bot.automations.events import LeadEvent
from bot.config import load_config
from bot.engine import events as ev
from bot.runtime.leads import Reaction, lead_cid
from bot.runtime.worker import Worker
from bot.server.services import Services, open_services
from bot.store import codec, partitions
from crm_bridge import ChannelIdentity, RedisCrm
from tests import inboxlocks
from tests.server.conftest import NO_AUTOMATIONS
from tests.waiting import wait_for

pytestmark = pytest.mark.both_loops

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _config(redis_url: str, **extra: object) -> Any:
    return load_config(env={}, overrides={"redis_url": redis_url, "flows_dir": str(FIXTURES),
                                          "automations_dir": str(NO_AUTOMATIONS),
                                          "admin_token": "t", "lock_ttl": 2.0, **extra})


class Recorder:
    """A rule engine stand-in: remembers every event it saw in the lead's state, in order."""

    def __init__(self, timer_at: float | None = None, hang_on: str | None = None) -> None:
        self.timer_at = timer_at
        self.hang_on = hang_on
        self.calls = 0

    def react(self, lead_id: str, state: Mapping[str, Any] | None, event: LeadEvent | ev.TimerFired,
              snapshot: Mapping[str, Any], now: datetime) -> Reaction:
        self.calls += 1
        seen = [*(state or {}).get("seen", [])]
        key = event.id if isinstance(event, LeadEvent) else f"timer:{event.timer_id}"
        if key == self.hang_on:
            raise _Hang
        seen.append(key)
        timers: tuple[tuple[str, float], ...] = ()
        if self.timer_at is not None and len(seen) == 1 and isinstance(event, LeadEvent):
            timers = ((f"{lead_cid(lead_id)}:t1", self.timer_at),)
        stage = snapshot.get("lead", {}).get("stage")
        return Reaction({"seen": seen, "stage": stage}, timers_set=timers,
                        history=({"rule": "r", "outcome": "fired", "detail": key},))


class _Hang(BaseException):
    """A process dying mid-batch: not an ``Exception``, so nothing counts or releases it."""


async def _seen(svc: Services, lead_id: str) -> list[str]:
    raw = await svc.store.state(lead_cid(lead_id))
    return list(codec.unpack(raw)["seen"]) if raw else []


def _event(svc: Services, lead_id: str, eid: str, type_: str = "order.paid") -> LeadEvent:
    return svc.leads.event(type_, lead_id, id_=eid, data={"n": eid})


async def test_fifty_events_from_three_processes_in_order_exactly_once(redis: Redis, redis_url: str) -> None:
    cfg = _config(redis_url)
    async with open_services(cfg, start_hub=False) as a, open_services(cfg, start_hub=False, load_flows=False) as b, \
            open_services(cfg, start_hub=False, load_flows=False) as c:
        services = [a, b, c]
        for svc in services:
            svc.leads.reactor = Recorder()

        async def sender(k: int) -> None:
            for i in range(10):
                svc = services[(k + i) % 3]
                await svc.leads.deliver(_event(svc, "501", f"s{k}-{i}"))

        await asyncio.gather(*(sender(k) for k in range(5)))
        seen = await _seen(a, "501")
        assert sorted(seen) == sorted(f"s{k}-{i}" for k in range(5) for i in range(10))  # all 50, once each
        for k in range(5):
            assert [s for s in seen if s.startswith(f"s{k}-")] == [f"s{k}-{i}" for i in range(10)]
        history = await a.leads.history("501", 1000)
        assert [h["id"] for h in history if h["role"] == "event"] == seen  # the history in the same order
        assert [h["detail"] for h in history if h["role"] == "automation"] == seen
        assert await redis.exists("sb:c:{lead:501}:inbox") == 0  # empty, the lock released with it


async def test_an_event_id_seen_before_is_accepted_and_ignored(redis: Redis, redis_url: str) -> None:
    async with open_services(_config(redis_url), start_hub=False) as svc:
        svc.leads.reactor = Recorder()
        first = await svc.leads.deliver(_event(svc, "502", "pay-1"))
        again = await svc.leads.deliver(_event(svc, "502", "pay-1"))
        assert (first.duplicate, again.duplicate) == (False, True)
        generated = [svc.leads.event("order.paid", "502") for _ in range(2)]
        for event in generated:
            await svc.leads.deliver(event, dedupe=False)
        assert await _seen(svc, "502") == ["pay-1", *(e.id for e in generated)]


async def test_a_crash_mid_batch_is_recovered_and_every_event_handled_once(redis: Redis, redis_url: str) -> None:
    async with open_services(_config(redis_url, lock_ttl=0.5), start_hub=False) as svc:
        recorder = Recorder(hang_on="two")
        svc.leads.reactor = recorder
        await svc.leads.deliver(_event(svc, "503", "one"))
        with pytest.raises(_Hang):  # "two" dies after "one"'s batch was saved, before its own save
            await svc.leads.deliver(_event(svc, "503", "two"))
        assert await inboxlocks.holder(redis, "lead:503") is not None  # still held by the dead processor
        queued = await svc.leads.deliver(_event(svc, "503", "three"))  # queued behind it
        assert not queued.duplicate and await _seen(svc, "503") == ["one"]
        recorder.hang_on = None  # the next process is healthy
        worker = Worker(svc)
        assert await wait_for(worker.recover, 5.0, what="recovery once the lock expires") == 1
        assert await _seen(svc, "503") == ["one", "two", "three"]
        events = [h["id"] for h in await svc.leads.history("503") if h["role"] == "event"]
        assert events == ["one", "two", "three"]  # the dead batch left no trace: redone once
        assert await worker.recover() == 0


async def test_timers_of_lead_queues_fire_into_the_lead_loop(redis: Redis, redis_url: str) -> None:
    async with open_services(_config(redis_url), start_hub=False) as svc:
        svc.leads.reactor = Recorder(timer_at=1.0)  # due long ago
        await svc.leads.deliver(_event(svc, "504", "first"))
        worker = Worker(svc)
        assert await worker.fire_timers() == 1
        assert await _seen(svc, "504") == ["first", "timer:lead:504:t1"]
        listed = [await redis.zscore(partitions.key(part), "lead:504") for part in await partitions.labels(redis)]
        assert not any(listed)  # not listed as a conversation


async def _types(svc: Services, lead_id: str) -> list[tuple[str, dict[str, Any]]]:
    await svc.leads.idle()
    return [(h["type"], h["data"]) for h in await svc.leads.history(lead_id) if h["role"] == "event"]


async def test_every_change_of_the_embedded_crm_emits_its_event(redis: Redis, redis_url: str) -> None:
    async with open_services(_config(redis_url), start_hub=False) as svc:
        crm = svc.crm
        assert isinstance(crm, RedisCrm) and svc.directory is not None
        ref = await crm.identify(ChannelIdentity("test", "acct", "changes-1", "Ada"))
        created = await _types(svc, ref.lead_id)
        assert created == [("lead.created", {"pipeline": "Sales", "stage": "Incoming"}),
                           ("contact.created", {"contact": ref.contact_id})]
        # a flow's commands (RedisCrm.execute)
        for command in ({"do": "change_stage", "stage": "Qualified"}, {"do": "tags", "add": ["vip"]},
                        {"do": "tags", "remove": ["vip"]}, {"do": "set_field", "field": "budget", "value": 5},
                        {"do": "add_task", "text": "Call"}, {"do": "complete_tasks"},
                        {"do": "add_note", "text": "no event"}):
            await crm.execute(ref, command)
        changed = (await _types(svc, ref.lead_id))[2:]
        task = (await crm.lead_tasks(ref))[0]["id"]
        assert changed == [
            ("lead.stage_changed", {"from": {"pipeline": "Sales", "stage": "Incoming"},
                                    "to": {"pipeline": "Sales", "stage": "Qualified"}}),
            ("lead.tag_added", {"tag": "vip"}), ("lead.tag_removed", {"tag": "vip"}),
            ("lead.field_changed", {"field": "budget", "from": None, "to": 5}),
            ("task.completed", {"task": task, "text": "Call", "result": None}),
        ]
        # a person's edits (the directory: /api/crm and /live)
        await svc.directory.update_lead(ref.lead_id, {"stage": "Proposal", "responsible": "u1"})
        person = (await _types(svc, ref.lead_id))[7:]
        assert [t for t, _ in person] == ["lead.stage_changed", "lead.responsible_changed"]
        assert person[1][1] == {"from": None, "to": "u1"}
        lead = await svc.directory.create_lead({"name": "Second"}, contact_id=ref.contact_id)
        assert [t for t, _ in await _types(svc, str(lead["id"]))] == ["lead.created"]


async def test_a_crm_change_whose_process_dies_after_the_write_still_has_its_event_handled(
        redis: Redis, redis_url: str) -> None:
    """The events are stored with the write; handling them is started afterwards. A process that
    dies in between leaves them due for recovery at once."""
    async with open_services(_config(redis_url), start_hub=False) as svc:
        crm = svc.crm
        assert isinstance(crm, RedisCrm)
        ref = await crm.identify(ChannelIdentity("test", "acct", "die-1"))
        await svc.leads.idle()
        svc.leads.reactor = Recorder()
        written = svc.leads.written
        svc.leads.written = lambda changes: None  # type: ignore[method-assign]  # died before handling
        try:
            await crm.execute(ref, {"do": "change_stage", "stage": "Won"})
        finally:
            svc.leads.written = written  # type: ignore[method-assign]
        assert await redis.llen(f"sb:c:{{lead:{ref.lead_id}}}:inbox") == 1  # stored with the write
        assert await Worker(svc).recover() == 1  # due at once, not a lock TTL later
        assert [t for t, _ in await _types(svc, ref.lead_id)][-1] == "lead.stage_changed"
        assert len(await _seen(svc, ref.lead_id)) == 1


async def test_a_failing_lead_queue_is_parked_and_a_retry_that_skips_the_poison_goes_on(
        redis: Redis, redis_url: str) -> None:
    async with open_services(_config(redis_url, lock_ttl=0.3, park_after=2), start_hub=False) as svc:
        svc.leads.reactor = Recorder()
        await svc.leads.deliver(_event(svc, "506", "ok-1"))
        # a state nobody can read (in the metadata hash: bot/store/statefields.py)
        await redis.hset("sb:c:{lead:506}:meta", mapping={"~0": b"\xc1 not msgpack", "~": "1"})
        await svc.leads.deliver(_event(svc, "506", "stuck"))
        worker = Worker(svc)

        async def parked() -> bool:
            return bool((await svc.store.meta("lead:506")).get("parked"))

        await wait_for(parked, 10, what="the lead queue to be parked", between=worker.recover)
        assert await redis.llen("sb:c:{lead:506}:inbox") == 1  # the event is kept
        await redis.hdel("sb:c:{lead:506}:meta", "~", "~0")  # a person repaired it; the retry goes on
        assert await svc.leads.retry("lead:506", user="Olga")
        assert await _seen(svc, "506") == ["stuck"]
        assert not (await svc.store.meta("lead:506")).get("parked")
