"""The automations' guarantees, end to end with the real server, its worker and Redis: a restart
while delays are pending loses none and doubles none (also those due while no process ran), and
a lead of a pipeline without a document is ignored — not an error, and a delay it left behind in
a pipeline with one is cancelled, not kept for its return."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis

from bot.runtime.automations import counts_key
from bot.runtime.worker import Worker
from bot.server.keys import SERVICES
from tests.server.conftest import make_config, running
from tests.server.test_automations_acting import H, _doc, _lead, _move, _outcomes, _put
from tests.waiting import wait_for

SALES = ["Incoming", "Contacted", "Qualified", "Proposal", "Won", "Lost"]
RENTALS = ["Enquiry", "Viewing", "Let"]


def _config(redis_url: str, tmp_path: Path) -> object:
    return make_config(redis_url, automations_dir=str(tmp_path),
                       embedded_crm={"pipelines": {"Sales": SALES, "Rentals": RENTALS}})


@pytest.fixture
async def server(redis: Redis, redis_url: str, tmp_path: Path) -> AsyncIterator[TestServer]:
    async with running(_config(redis_url, tmp_path)) as srv:
        yield srv


async def _new_lead(http: ClientSession, name: str = "Deal", **fields: Any) -> str:
    r = await http.post("/api/crm/contacts", json={"name": name}, headers=H)
    assert r.status == 201, await r.text()
    r = await http.post("/api/crm/leads", json={"name": name, "contact_id": (await r.json())["id"], **fields},
                        headers=H)
    assert r.status == 201, await r.text()
    return str((await r.json())["id"])


async def _place(http: ClientSession, lead: str, pipeline: str, stage: str) -> None:
    r = await http.patch(f"/api/crm/leads/{lead}", json={"pipeline": pipeline, "stage": stage}, headers=H)
    assert r.status == 200, await r.text()


async def _history(http: ClientSession, lead: str) -> list[dict[str, Any]]:
    r = await http.get(f"/api/leads/{lead}/events", headers=H)
    assert r.status == 200
    events: list[dict[str, Any]] = (await r.json())["events"]
    return events


async def _tasks(http: ClientSession, lead: str) -> list[str]:
    return sorted(t["text"] for t in (await _lead(http, lead))["tasks"])


def _delayed(rule: str, delay: str, task: str) -> dict[str, Any]:
    return {"id": rule, "stage": "Contacted", "on": ["moved_in"], "delay": delay,
            "do": {"actions": [{"do": "add_task", "text": task, "due": "in_1_day"}]}}


async def test_a_restart_with_delays_pending_on_many_leads_runs_each_once(
        redis: Redis, redis_url: str, tmp_path: Path) -> None:
    """Two delayed rules on three leads: six delays pending when the server stops; the first falls
    due while no server runs, the others after the restart. Each acts once; a second restart
    finds nothing left to do."""
    config = _config(redis_url, tmp_path)
    # The first server is a web process: it sets the delays but fires no timer, so "nothing acted
    # yet" holds however long a loaded machine takes to move the leads (the nudge is due in 1 s).
    async with running(config, role="web") as first, ClientSession(base_url=str(first.make_url(""))) as http:
        await _put(http, _doc([_delayed("nudge", "1s", "Nudge"), _delayed("remind", "3s", "Remind")]))
        leads = [await _new_lead(http, f"Deal {n}") for n in range(3)]
        for lead in leads:
            await _move(http, lead, "Contacted")
        moved = time.time()
        for lead in leads:
            async def both_delayed(lead: str = lead) -> bool:
                outcomes = await _outcomes(http, lead)
                return ("nudge", "delayed") in outcomes and ("remind", "delayed") in outcomes
            await wait_for(both_delayed, what="both delays to be set")
            assert await _tasks(http, lead) == []  # nothing acted yet
    # no server runs: wait until the first delays are due (a clock, not a synchronisation)
    await wait_for(lambda: time.time() > moved + 1.2, what="the first delays to fall due")
    async with running(config) as second, ClientSession(base_url=str(second.make_url(""))) as http:
        for lead in leads:
            async def all_acted(lead: str = lead) -> bool:
                return await _tasks(http, lead) == ["Nudge", "Remind"]
            await wait_for(all_acted, 10.0, what="every delayed rule to act after the restart")
        services = second.app[SERVICES]
        await services.leads.idle()
        for lead in leads:
            outcomes = await _outcomes(http, lead)
            assert outcomes.count(("nudge", "acted")) == 1 and outcomes.count(("remind", "acted")) == 1
            assert await services.timers.due_at(f"lead:{lead}:t1") is None  # off the timer wheel
    counts = {k.decode(): int(v) for k, v in (await redis.hgetall(counts_key("sales"))).items()}
    assert {k: v for k, v in counts.items() if k.endswith((":acted", ":delayed"))} == {
        "nudge:delayed": 3, "remind:delayed": 3, "nudge:acted": 3, "remind:acted": 3}
    async with running(config) as third, ClientSession(base_url=str(third.make_url(""))) as http:
        assert await Worker(third.app[SERVICES]).fire_timers() == 0  # nothing left, nothing twice
        for lead in leads:
            assert await _tasks(http, lead) == ["Nudge", "Remind"]
    assert {k.decode(): int(v) for k, v in (await redis.hgetall(counts_key("sales"))).items()} == counts


async def test_an_event_for_a_lead_of_another_pipeline_is_ignored_not_an_error(
        server: TestServer, http: ClientSession, redis: Redis) -> None:
    await _put(http, _doc(
        [{"id": "hello", "stage": "Incoming", "on": ["created"], "do": {"actions": [{"do": "tags", "add": ["hi"]}]}}],
        triggers=[{"id": "paid", "stage": "Won", "on": "order.paid"}], scoring=[{"on": "order.paid", "add": 20}]))
    lead = await _new_lead(http, pipeline="Rentals")
    r = await http.post("/api/events", json={"id": "evt-r1", "type": "order.paid", "lead": {"id": lead}}, headers=H)
    assert r.status == 202, await r.text()
    assert (await r.json())["duplicate"] is False
    await server.app[SERVICES].leads.idle()

    async def stored() -> bool:
        return any(e.get("id") == "evt-r1" for e in await _history(http, lead))
    await wait_for(stored, what="the event in the lead's history")
    history = await _history(http, lead)
    assert [e for e in history if e["role"] != "event"] == []  # no rule, no error: not this document's lead
    found = await _lead(http, lead)
    assert (found["pipeline"], found["stage"], found["tags"]) == ("Rentals", "Enquiry", [])
    assert not found["contacts"][0].get("score")
    assert await redis.hgetall(counts_key("sales")) == {}
    meta = await server.app[SERVICES].store.meta(f"lead:{lead}")
    assert "failures" not in meta and "parked" not in meta


async def test_a_delay_left_behind_in_another_pipeline_is_cancelled_not_kept_for_a_return(
        server: TestServer, http: ClientSession) -> None:
    await _put(http, _doc([_delayed("nudge", "3s", "Nudge")]))
    lead = await _new_lead(http)
    await _move(http, lead, "Contacted")
    await wait_for(lambda: _has(http, lead, ("nudge", "delayed")), what="the delay to be set")
    await _place(http, lead, "Rentals", "Viewing")  # a pipeline without a document
    await wait_for(lambda: _has(http, lead, ("nudge", "cancelled")), what="the delay to be cancelled")
    assert await server.app[SERVICES].timers.due_at(f"lead:{lead}:t1") is None
    await _place(http, lead, "Sales", "Contacted")  # back: a new delay, the old one is gone

    async def acted() -> bool:
        return await _tasks(http, lead) == ["Nudge"]
    await wait_for(acted, 10.0, what="the new delay to act")
    await server.app[SERVICES].leads.idle()
    assert (await _outcomes(http, lead)).count(("nudge", "acted")) == 1
    assert await _tasks(http, lead) == ["Nudge"]


async def _has(http: ClientSession, lead: str, outcome: tuple[str, str]) -> bool:
    return outcome in await _outcomes(http, lead)


def _tag(rule: str, stage: str, on: str, tag: str, **extra: Any) -> dict[str, Any]:
    return {"id": rule, "stage": stage, "on": [on], **extra, "do": {"actions": [{"do": "tags", "add": [tag]}]}}


async def _event(http: ClientSession, lead: str, type_: str, **data: Any) -> None:
    r = await http.post("/api/events", json={"type": type_, "lead": {"id": lead}, "data": data}, headers=H)
    assert r.status == 202, await r.text()


async def test_every_rule_kind_if_active_and_triggers_act_through_the_http_api(
        server: TestServer, http: ClientSession, redis: Redis) -> None:
    """responsible_changed, field_changed with ``if`` (skipped, then acted), a trigger's ``match``,
    ``active`` (a rule waiting for its window beside one outside it acting), ``field_time`` and
    ``idle`` through the worker, and ``allow_backward`` both ways — the leads edited and the
    events posted over HTTP, what the rules did read back from the lead and its history."""
    hour = (time.gmtime().tm_hour + 12) % 24  # working hours that are surely closed now
    hours = f"{hour:02d}:00-{hour:02d}:30"
    await _put(http, _doc([
        _tag("owner", "Incoming", "responsible_changed", "owner_changed"),
        _tag("budget", "Incoming", "field_changed", "big_budget", field="lead.fields.budget",
             **{"if": {"all": [{"field": "lead.fields.budget", "op": "gte", "value": 10000}]}}),
        _tag("in_hours", "Contacted", "moved_in", "in_hours", active="working_hours"),
        _tag("off_hours", "Contacted", "moved_in", "off_hours", active="outside_working_hours"),
        _tag("visit", "Contacted", "field_time", "visit_soon", at={"field": "lead.fields.visit_at", "offset": "-1h"}),
        _tag("quiet", "Contacted", "idle", "stale", after="2s")],
        settings={"timezone": "UTC", "working_hours": {"mon-fri": hours, "sat": hours, "sun": hours}},
        triggers=[{"id": "click", "stage": "Contacted", "on": "email.link_clicked",
                   "match": {"url": "https://shop.example.com/offer"}},
                  {"id": "reopen", "stage": "Contacted", "on": "custom.reopen"},
                  {"id": "refund", "stage": "Incoming", "on": "custom.refund", "allow_backward": True}]))
    lead = await _new_lead(http)
    r = await http.patch(f"/api/crm/leads/{lead}", json={"responsible": "u-2"}, headers=H)
    assert r.status == 200, await r.text()
    for budget, outcome in ((500, "skipped_if"), (20000, "acted")):  # ``if`` reads the lead as it is when handled
        r = await http.patch(f"/api/crm/leads/{lead}", json={"fields": {"budget": budget}}, headers=H)
        assert r.status == 200, await r.text()
        await wait_for(lambda outcome=outcome: _has(http, lead, ("budget", outcome)), what=f"budget {outcome}")
    await _event(http, lead, "email.link_clicked", url="https://elsewhere.example.com/")
    await _event(http, lead, "email.link_clicked", url="https://shop.example.com/offer")

    async def contacted() -> bool:
        return (await _lead(http, lead))["stage"] == "Contacted"
    await wait_for(contacted, what="the matching click to move the lead")
    r = await http.patch(f"/api/crm/leads/{lead}", json={"fields": {"visit_at": time.time() + 3600 + 2}},
                         headers=H)
    assert r.status == 200, await r.text()

    async def timed() -> bool:
        return {"visit_soon", "stale"} <= set((await _lead(http, lead))["tags"])
    await wait_for(timed, 15.0, what="the field_time and idle rules to act through the worker")
    await _move(http, lead, "Qualified")
    await _event(http, lead, "custom.reopen")
    await wait_for(lambda: _has(http, lead, ("reopen", "skipped_if")), what="a backward move refused")
    await _event(http, lead, "custom.refund")

    async def back() -> bool:
        return (await _lead(http, lead))["stage"] == "Incoming"
    await wait_for(back, what="the backward trigger to move the lead")
    await server.app[SERVICES].leads.idle()
    outcomes = await _outcomes(http, lead)
    for expected in [("owner", "acted"), ("budget", "skipped_if"), ("budget", "acted"), ("click", "acted"),
                     ("in_hours", "waiting_window"), ("off_hours", "acted"), ("visit", "acted"), ("quiet", "acted"),
                     ("refund", "acted")]:
        assert outcomes.count(expected) == 1, (expected, outcomes)
    assert ("click", "fired") in outcomes and outcomes.count(("click", "fired")) == 1  # the other url: no match
    assert ("in_hours", "cancelled") in outcomes  # the lead left Contacted before the window opened
    assert set((await _lead(http, lead))["tags"]) == {"owner_changed", "big_budget", "off_hours", "visit_soon",
                                                      "stale"}
    counts = {k.decode(): int(v) for k, v in (await redis.hgetall(counts_key("sales"))).items()}
    assert counts["budget:skipped_if"] == 1 and counts["budget:acted"] == 1 and counts["refund:acted"] == 1
