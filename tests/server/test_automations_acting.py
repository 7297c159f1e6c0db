"""Automation documents act, end to end: a document PUT over the API, leads created and moved
through ``/api/crm`` and ``POST /api/events``, the rules' work visible on the lead (tags, tasks,
stage, score), in its history (``GET /api/leads/{id}/events``) and in the counters hash — with
the real server, its worker and Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis

from bot.automations.effects import RunActions
from bot.runtime.automations import Keyed, counts_key
from bot.runtime.worker import Worker
from bot.server.keys import SERVICES
from bot.store import codec
from bot.store.keys import conversation_id
from tests.server.conftest import ADMIN, make_config, running
from tests.waiting import wait_for

H = {"Authorization": f"Bearer {ADMIN}"}


def _doc(rules: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"format": "salesbot.automations/1", "id": "sales", "pipeline": "Sales", "rules": rules, **extra}


@pytest.fixture
async def server(redis: Redis, redis_url: str, tmp_path: Path) -> AsyncIterator[TestServer]:
    # no document loaded at start: each test PUTs its own
    async with running(make_config(redis_url, automations_dir=str(tmp_path))) as srv:
        yield srv


async def _put(http: ClientSession, doc: dict[str, Any]) -> int:
    r = await http.put(f"/api/automations/{doc['id']}", json=doc, headers=H)
    assert r.status in (200, 201), await r.text()
    version: int = (await r.json())["version"]
    return version


async def _new_lead(http: ClientSession, **fields: Any) -> str:
    r = await http.post("/api/crm/contacts", json={"name": "Ada", "phone": "+905551112233"}, headers=H)
    assert r.status == 201, await r.text()
    contact = (await r.json())["id"]
    r = await http.post("/api/crm/leads", json={"name": "Deal", "contact_id": contact, **fields}, headers=H)
    assert r.status == 201, await r.text()
    return str((await r.json())["id"])


async def _lead(http: ClientSession, lead: str) -> dict[str, Any]:
    r = await http.get(f"/api/crm/leads/{lead}", headers=H)
    assert r.status == 200
    found: dict[str, Any] = await r.json()
    return found


async def _outcomes(http: ClientSession, lead: str) -> list[tuple[str, str]]:
    r = await http.get(f"/api/leads/{lead}/events", headers=H)
    assert r.status == 200
    return [(e["rule"], e["outcome"]) for e in (await r.json())["events"] if e["role"] == "automation"]


async def _move(http: ClientSession, lead: str, stage: str) -> None:
    r = await http.patch(f"/api/crm/leads/{lead}", json={"stage": stage}, headers=H)
    assert r.status == 200, await r.text()


async def test_a_created_rule_tags_the_lead_adds_a_task_and_is_counted(
        server: TestServer, http: ClientSession, redis: Redis) -> None:
    actions = [{"do": "tags", "add": ["welcomed"]},
               {"do": "add_task", "text": "Call {{ contact.name }}", "due": "in_1_day"}]
    await _put(http, _doc([{"id": "welcome", "stage": "Incoming", "on": ["created"], "do": {"actions": actions}}]))
    lead = await _new_lead(http)

    async def acted() -> bool:
        return "welcomed" in (await _lead(http, lead))["tags"]
    await wait_for(acted, what="the rule's tag")
    assert [t["text"] for t in (await _lead(http, lead))["tasks"]] == ["Call Ada"]
    await wait_for(lambda: _has(http, lead, ("welcome", "acted")), what="acted in the history")
    counts = await redis.hgetall(counts_key("sales"))
    assert counts[b"welcome:fired"] == b"1" and counts[b"welcome:acted"] == b"1"
    # the rule's own tag emitted lead.tag_added (depth 1): no rule runs on it, nothing acts twice
    await server.app[SERVICES].leads.idle()
    assert (await _outcomes(http, lead)).count(("welcome", "acted")) == 1


async def _has(http: ClientSession, lead: str, outcome: tuple[str, str]) -> bool:
    return outcome in await _outcomes(http, lead)


async def test_a_paid_order_moves_the_lead_then_the_stage_rule_acts_and_the_score_grows(
        server: TestServer, http: ClientSession, redis: Redis) -> None:
    await _put(http, _doc(
        [{"id": "thank", "stage": "Won", "on": ["moved_in"], "do": {"actions": [{"do": "tags", "add": ["paid"]}]}}],
        triggers=[{"id": "paid", "stage": "Won", "on": "order.paid"}],
        scoring=[{"on": "order.paid", "add": 20}, {"on": "email.opened", "add": -50}]))
    lead = await _new_lead(http)
    r = await http.post("/api/events", json={"id": "evt-1", "type": "order.paid", "lead": {"id": lead}}, headers=H)
    assert r.status == 202

    async def won() -> bool:
        found = await _lead(http, lead)
        return found["stage"] == "Won" and "paid" in found["tags"] and found["contacts"][0].get("score") == 20
    await wait_for(won, what="the trigger's move, the rule's tag and the score")
    r = await http.post("/api/events", json={"id": "evt-2", "type": "email.opened", "lead": {"id": lead}}, headers=H)

    async def zero() -> bool:
        return (await _lead(http, lead))["contacts"][0].get("score") == 0  # not below 0
    await wait_for(zero, what="the score to fall to 0")
    counts = await redis.hgetall(counts_key("sales"))
    assert counts[b"thank:acted"] == b"1"


async def test_a_chain_of_rules_moving_the_lead_back_and_forth_stops_at_depth_10(
        server: TestServer, http: ClientSession, redis: Redis, caplog: pytest.LogCaptureFixture) -> None:
    await _put(http, _doc([
        {"id": "forth", "stage": "Contacted", "on": ["moved_in"],
         "do": {"actions": [{"do": "change_stage", "stage": "Qualified"}]}},
        {"id": "back", "stage": "Qualified", "on": ["moved_in"],
         "do": {"actions": [{"do": "change_stage", "stage": "Contacted"}]}}]))
    lead = await _new_lead(http)
    await _move(http, lead, "Contacted")
    await wait_for(lambda: _loop(http, lead), what="the loop to be stopped")
    outcomes = await _outcomes(http, lead)
    acted = [o for o in outcomes if o[1] == "acted"]
    assert len(acted) == 10  # the events at depths 0..9 act; the move they make last comes back at depth 10
    counts = await redis.hgetall(counts_key("sales"))
    assert int(counts[b"forth:loop"]) + int(counts.get(b"back:loop", b"0")) == 1
    assert [r.getMessage() for r in caplog.records if r.getMessage() == "automation.loop"] == ["automation.loop"]


async def _loop(http: ClientSession, lead: str) -> bool:
    return any(o == "loop" for _, o in await _outcomes(http, lead))


NUDGE = {"id": "nudge", "stage": "Contacted", "on": ["moved_in"], "delay": "1s",
         "do": {"actions": [{"do": "tags", "add": ["nudged"]}, {"do": "add_task", "text": "Nudge", "due": "in_1_day"}]}}


async def test_a_delay_fires_through_the_worker_and_leaving_the_stage_cancels_it(
        redis: Redis, redis_url: str, tmp_path: Path) -> None:
    # A web process, its worker's rounds run by the test once the delay is cancelled: a loaded
    # machine taking over the delay's 1 s to move the lead on cannot have it fire first.
    async with running(make_config(redis_url, automations_dir=str(tmp_path)), role="web") as srv, \
            ClientSession(base_url=str(srv.make_url(""))) as http:
        await _put(http, _doc([NUDGE]))
        gone, stays = await _new_lead(http), await _new_lead(http)
        await _move(http, gone, "Contacted")
        await wait_for(lambda: _has(http, gone, ("nudge", "delayed")), what="the delay to be set")
        await _move(http, gone, "Qualified")
        await wait_for(lambda: _has(http, gone, ("nudge", "cancelled")), what="the delay to be cancelled")
        await _move(http, stays, "Contacted")  # its timer is due after the cancelled one would have been

        async def nudged() -> bool:
            return "nudged" in (await _lead(http, stays))["tags"]
        await wait_for(nudged, what="the delayed rule to act", between=Worker(srv.app[SERVICES]).fire_timers)
        await srv.app[SERVICES].leads.idle()
        assert "nudged" not in (await _lead(http, gone))["tags"]
        assert ("nudge", "acted") not in await _outcomes(http, gone)


async def test_a_restart_while_a_delay_is_pending_loses_none_and_doubles_none(
        redis: Redis, redis_url: str, tmp_path: Path) -> None:
    config = make_config(redis_url, automations_dir=str(tmp_path))
    # The first server fires no timer (a web process): the delay is still pending when it stops,
    # however long a loaded machine takes to get there.
    async with running(config, role="web") as first, ClientSession(base_url=str(first.make_url(""))) as http:
        await _put(http, _doc([{**NUDGE, "delay": "2s"}]))
        lead = await _new_lead(http)
        await _move(http, lead, "Contacted")
        await wait_for(lambda: _has(http, lead, ("nudge", "delayed")), what="the delay to be set")
        assert not (await _lead(http, lead))["tasks"]
    async with running(config) as second, ClientSession(base_url=str(second.make_url(""))) as http:
        async def nudged() -> bool:
            return "nudged" in (await _lead(http, lead))["tags"]
        await wait_for(nudged, what="the delayed rule to act after the restart")
        await second.app[SERVICES].leads.idle()
        assert [t["text"] for t in (await _lead(http, lead))["tasks"]] == ["Nudge"]
        assert (await _outcomes(http, lead)).count(("nudge", "acted")) == 1
    assert (await redis.hgetall(counts_key("sales")))[b"nudge:acted"] == b"1"


async def test_start_bot_writes_in_the_leads_live_chat(server: TestServer, http: ClientSession) -> None:
    await _put(http, _doc([{"id": "demo_on_tag", "stage": "Incoming", "on": ["tag_added"], "tag": "wants_demo",
                            "do": {"start_bot": "welcome", "channel": "last"}}]))
    r = await http.post("/chat/demo/messages", json={"session": "visitor-7", "text": "hi"})
    assert r.status in (200, 202), await r.text()
    services = server.app[SERVICES]
    cid = conversation_id("livechat", "demo", "visitor-7")

    async def lead_of_chat() -> str | None:
        return (await services.store.meta(cid)).get("lead_id")
    lead = await wait_for(lead_of_chat, what="the visitor's lead")

    async def welcomes() -> int:
        said = [codec.unpack(raw) for _, raw in await services.store.read_log(cid)]
        return sum(e.get("role") == "bot" and "Welcome to Lale Home" in str(e.get("text")) for e in said)
    greeted = await wait_for(welcomes, what="the live chat's greeting")  # the demo account greets with it too
    r = await http.patch(f"/api/crm/leads/{lead}", json={"tags_add": ["wants_demo"]}, headers=H)
    assert r.status == 200, await r.text()
    await wait_for(lambda: _has(http, lead, ("demo_on_tag", "bot_started")), what="the rule to start the bot")

    async def welcomed_again() -> bool:
        return await welcomes() > greeted
    await wait_for(welcomed_again, what="the bot's first message in the live chat")


async def test_start_bot_with_nothing_reachable_records_outbound_unreachable(
        http: ClientSession, caplog: pytest.LogCaptureFixture) -> None:
    await _put(http, _doc([{"id": "call_back", "stage": "Incoming", "on": ["created"],
                            "do": {"start_bot": "welcome", "channel": "last"}}]))
    lead = await _new_lead(http)  # a contact that never wrote: no conversation
    await wait_for(lambda: _has_outcome(http, lead, "outbound.unreachable"), what="outbound.unreachable")
    logged = [r for r in caplog.records if r.getMessage() == "outbound.unreachable"]
    assert [(r.levelname, getattr(r, "lead", None)) for r in logged] == [("WARNING", lead)]  # logged once


async def test_start_bot_for_a_lead_without_a_contact_is_unreachable_and_logged(
        http: ClientSession, caplog: pytest.LogCaptureFixture) -> None:
    await _put(http, _doc([{"id": "call_back", "stage": "Incoming", "on": ["created"],
                            "do": {"start_bot": "welcome", "channel": "last"}}]))
    r = await http.post("/api/crm/leads", json={"name": "Nobody's deal"}, headers=H)
    lead = str((await r.json())["id"])
    await wait_for(lambda: _has_outcome(http, lead, "outbound.unreachable"), what="outbound.unreachable")
    logged = [r for r in caplog.records if r.getMessage() == "outbound.unreachable"]
    assert [(getattr(r, "rule", None), getattr(r, "lead", None)) for r in logged] == [("call_back", lead)]


async def _has_outcome(http: ClientSession, lead: str, outcome: str) -> bool:
    return any(o == outcome for _, o in await _outcomes(http, lead))


async def test_a_new_version_cancels_the_pending_delay_of_a_removed_rule_at_the_leads_next_event(
        server: TestServer, http: ClientSession) -> None:
    await _put(http, _doc([{**NUDGE, "delay": "1h"}]))
    lead = await _new_lead(http)
    await _move(http, lead, "Contacted")
    await wait_for(lambda: _has(http, lead, ("nudge", "delayed")), what="the delay to be set")
    assert await server.app[SERVICES].timers.due_at(f"lead:{lead}:t1") is not None
    assert await _put(http, _doc([{**NUDGE, "id": "other", "stage": "Won"}])) == 2
    r = await http.post("/api/events", json={"type": "custom.ping", "lead": {"id": lead}}, headers=H)
    assert r.status == 202
    await wait_for(lambda: _has(http, lead, ("nudge", "cancelled")), what="the removed rule's delay to go")
    assert await server.app[SERVICES].timers.due_at(f"lead:{lead}:t1") is None  # off the timer wheel


async def test_an_effect_redone_after_a_crash_is_done_once(server: TestServer, http: ClientSession) -> None:
    lead = await _new_lead(http)
    effects = server.app[SERVICES].leads.effects
    work = Keyed("evt-9:0:r", "sales", RunActions("r", ({"do": "add_task", "text": "Once", "due": "in_1_day"},), 1))
    first = await effects.run(lead, [work])
    again = await effects.run(lead, [work])  # the batch redone: the effect is skipped, its history comes back
    assert first == again
    assert [t["text"] for t in (await _lead(http, lead))["tasks"]] == ["Once"]
