"""Crashes around the rules, with the real services, the rule engine and Redis: the counters
(``sb:automations:{<doc>}:counts``) are exact — written by the lead queue's save script itself,
so a process that dies right after the save loses no count, a batch redone after a crash before
its save counts once, a save sent again after ``NOSCRIPT`` counts once — and a delay whose timer
was delivered by a process that died before acknowledging it acts once when it comes back."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from bot.config import load_config
from bot.runtime.automations import counts_key
from bot.runtime.worker import Worker
from bot.server.services import Services, open_services
from bot.store.conversations import SaveRequest, SaveResult
from tests import inboxlocks
from tests.waiting import wait_for

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
DOC = {"format": "salesbot.automations/1", "id": "sales", "pipeline": "Sales",
       "rules": [{"id": "hello", "stage": "Incoming", "on": ["created"],
                  "do": {"actions": [{"do": "tags", "add": ["hello"]}]}},
                 {"id": "later", "stage": "Contacted", "on": ["moved_in"], "delay": "1s",
                  "do": {"actions": [{"do": "add_task", "text": "Later", "due": "in_1_day"}]}}]}


class _Died(BaseException):
    """The process dying: not an ``Exception``, so nothing catches, counts or releases it."""


@pytest.fixture
async def svc(redis: Redis, redis_url: str, tmp_path: Path) -> AsyncIterator[Services]:
    (tmp_path / "sales.json").write_text(json.dumps(DOC))
    config = load_config(env={}, overrides={"redis_url": redis_url, "flows_dir": str(FIXTURES),
                                            "automations_dir": str(tmp_path), "admin_token": "t",
                                            "lock_ttl": 0.5})
    async with open_services(config, start_hub=False) as services:
        yield services


async def _counts(redis: Redis) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in (await redis.hgetall(counts_key("sales"))).items()}


async def _lead(svc: Services) -> str:
    """A new lead of the embedded CRM: its own ``lead.created`` runs the rule once."""
    assert svc.directory is not None
    lead = str((await svc.directory.create_lead({"name": "Deal"}))["id"])
    await svc.leads.idle()
    return lead


async def _created_again(svc: Services, lead: str, event_id: str) -> None:
    await svc.leads.deliver(svc.leads.event("lead.created", lead, id_=event_id, source="crm",
                                            data={"pipeline": "Sales", "stage": "Incoming"}))


async def test_a_process_dying_right_after_the_save_loses_no_count(svc: Services, redis: Redis) -> None:
    lead = await _lead(svc)
    assert await _counts(redis) == {"hello:fired": 1, "hello:acted": 1}
    saved: list[SaveResult] = []
    original = svc.store.save

    async def save_then_die(cid: str, token: str, req: SaveRequest) -> SaveResult:
        saved.append(await original(cid, token, req))
        raise _Died  # the save's reply came back; nothing after it runs
    svc.store.save = save_then_die  # type: ignore[method-assign]
    with pytest.raises(_Died):
        await _created_again(svc, lead, "again")
    svc.store.save = original  # type: ignore[method-assign]
    assert [r.status for r in saved] == [0]  # the batch is saved (and its history with it) …
    assert await _counts(redis) == {"hello:fired": 2, "hello:acted": 2}  # … and so are its counts
    assert await Worker(svc).recover() == 0  # nothing to redo


async def test_a_batch_redone_after_a_crash_before_its_save_counts_once(svc: Services, redis: Redis) -> None:
    lead = await _lead(svc)
    original = svc.store.save

    async def die(cid: str, token: str, req: SaveRequest) -> Any:
        raise _Died  # the effects ran (their done keys are written), the save never left
    svc.store.save = die  # type: ignore[method-assign]
    with pytest.raises(_Died):
        await _created_again(svc, lead, "again")
    svc.store.save = original  # type: ignore[method-assign]
    assert await _counts(redis) == {"hello:fired": 1, "hello:acted": 1}
    worker = Worker(svc)
    assert await wait_for(worker.recover, 5.0, what="recovery once the lock expires") == 1
    assert await _counts(redis) == {"hello:fired": 2, "hello:acted": 2}
    acted = [h for h in await svc.leads.history(lead) if h["role"] == "automation" and h["outcome"] == "acted"]
    assert len(acted) == 2


async def test_a_save_sent_again_after_noscript_counts_once(svc: Services, redis: Redis) -> None:
    lead = await _lead(svc)
    await redis.script_flush()  # as after a Redis restart: the save meets NOSCRIPT, loads, sends again
    await _created_again(svc, lead, "again")
    assert await _counts(redis) == {"hello:fired": 2, "hello:acted": 2}


async def test_a_save_that_lost_its_lock_counts_nothing(svc: Services, redis: Redis) -> None:
    lead = await _lead(svc)
    original = svc.store.save

    async def stolen(cid: str, token: str, req: SaveRequest) -> SaveResult:
        await inboxlocks.take_over(redis, cid)  # the lock expired and was taken over
        result = await original(cid, token, req)
        await inboxlocks.release(redis, cid)  # … by a process that died: free again
        return result
    svc.store.save = stolen  # type: ignore[method-assign]
    await _created_again(svc, lead, "again")
    svc.store.save = original  # type: ignore[method-assign]
    assert await _counts(redis) == {"hello:fired": 1, "hello:acted": 1}  # the new holder counts it


async def test_a_delay_delivered_by_a_process_that_died_before_its_ack_acts_once(svc: Services, redis: Redis) -> None:
    lead = await _lead(svc)
    assert svc.directory is not None
    await svc.directory.update_lead(lead, {"stage": "Contacted"})
    await svc.leads.idle()
    svc.timers.claim_ttl = 0.3  # a claim not acknowledged comes back this soon after it fell due
    worker = Worker(svc)
    original = svc.timers.ack

    async def die(timers: Any) -> None:
        raise _Died  # delivered and handled, never acknowledged
    svc.timers.ack = die  # type: ignore[method-assign]
    with pytest.raises(_Died):
        await wait_for(worker.fire_timers, 5.0, what="the delay to fall due")
    svc.timers.ack = original  # type: ignore[method-assign]
    counts = await _counts(redis)
    assert counts["later:acted"] == 1
    assert await wait_for(worker.fire_timers, 5.0, what="the unacknowledged claim to come back") == 1
    assert await worker.fire_timers() == 0  # acknowledged now: gone
    record = await svc.directory.lead(lead)
    assert [t["text"] for t in record["tasks"]] == ["Later"]
    assert await _counts(redis) == counts  # the redelivery was a duplicate: nothing acted or counted twice
    acted = [h for h in await svc.leads.history(lead) if h.get("rule") == "later" and h["outcome"] == "acted"]
    assert len(acted) == 1
