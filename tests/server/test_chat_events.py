
"""Event sources over real HTTP and Redis: a customer's live chat messages land on the lead's
queue as ``chat.message`` once a rule listens to them (and not before; triggers, scoring, ``idle``
rules and processes: test_chat_listeners.py), the first one also as
``chat.first_message``; a hosted form sent emits ``form.submitted`` on its lead."""

from __future__ import annotations

import copy
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from bot.runtime.service import LEAD_CONVERSATIONS_KEY
from bot.server.keys import SERVICES
from crm_bridge import CrmRef
from tests.server.conftest import ADMIN, AUTOMATIONS
from tests.waiting import wait_for

AUTH = {"Authorization": f"Bearer {ADMIN}"}
EXAMPLE: dict[str, Any] = json.loads((AUTOMATIONS / "sales.json").read_text(encoding="utf-8"))
RULE = {"id": "on_chat", "stage": "Incoming", "on": ["chat.first_message", "chat.message"],
        "do": {"actions": [{"do": "tags", "add": ["chatted"]}]}}


async def _say(http: ClientSession, session: str, text: str, msg: str) -> None:
    r = await http.post("/chat/demo/messages", json={"session": session, "text": text, "client_msg_id": msg})
    assert r.status in (200, 202), await r.text()


async def _lead_of(server: TestServer, session: str) -> str:
    redis = server.app[SERVICES].redis

    async def found() -> str | None:
        async for bucket in redis.scan_iter(match=f"{LEAD_CONVERSATIONS_KEY}:*"):  # the map's buckets
            for lead, cid in (await redis.hgetall(bucket)).items():
                if session in cid.decode():
                    return str(lead.decode())
        return None

    lead: str = await wait_for(found, what="the conversation's lead")
    return lead


async def _chat_events(http: ClientSession, lead: str) -> list[tuple[str, str]]:
    r = await http.get(f"/api/leads/{lead}/events", headers=AUTH)
    assert r.status == 200
    return [(e["type"], e["data"]["text"]) for e in (await r.json())["events"]
            if e.get("role") == "event" and str(e.get("type", "")).startswith("chat.")]


def _without_chat_rules() -> dict[str, Any]:
    """The example without its rules on chat events nor its ``idle`` rule (which hears every event)."""
    doc = copy.deepcopy(EXAMPLE)
    doc["rules"] = [r for r in doc["rules"] if not {"chat.message", "chat.first_message", "idle"} & set(r["on"])]
    return doc


async def test_messages_become_lead_events_only_while_a_rule_listens(server: TestServer, http: ClientSession) -> None:
    assert (await http.put("/api/automations/sales", json=_without_chat_rules(), headers=AUTH)).status == 201
    await _say(http, "quietsession01", "hello", "q1")
    quiet = await _lead_of(server, "quietsession01")
    await server.app[SERVICES].leads.idle()
    assert await _chat_events(http, quiet) == []  # no rule on chat events: nothing is queued

    doc = _without_chat_rules()
    doc["rules"].append(RULE)
    assert (await http.put("/api/automations/sales", json=doc, headers=AUTH)).status == 201
    await _say(http, "chattysession1", "first words", "c1")
    lead = await _lead_of(server, "chattysession1")
    await _say(http, "chattysession1", "second words", "c2")

    async def both() -> list[tuple[str, str]] | None:
        found = await _chat_events(http, lead)
        return found if len(found) == 3 else None

    events = await wait_for(both, what="the chat events on the lead's queue")
    assert sorted(events) == [("chat.first_message", "first words"), ("chat.message", "first words"),
                              ("chat.message", "second words")]

    async def acted() -> int:  # the rule acts on each of them, through the lead loop
        r = await http.get(f"/api/leads/{lead}/events", headers=AUTH)
        return sum((e.get("rule"), e.get("outcome")) == ("on_chat", "acted") for e in (await r.json())["events"])
    assert await wait_for(lambda: _count_is(acted, 3), what="the chat rule to act three times")
    r = await http.get(f"/api/crm/leads/{lead}", headers=AUTH)
    assert "chatted" in (await r.json())["tags"]
    await _say(http, "quietsession01", "again", "q2")  # not its first message any more
    await wait_for(lambda: _chat_events(http, quiet), what="the quiet lead's message")
    assert await _chat_events(http, quiet) == [("chat.message", "again")]

    r = await http.post("/api/automations/sales/activate", json={"version": 2}, headers=AUTH)
    assert r.status == 200  # back to the version without chat rules: nothing more is queued
    await _say(http, "chattysession1", "third words", "c3")
    await server.app[SERVICES].leads.idle()
    assert len(await _chat_events(http, lead)) == 3


async def test_a_submitted_form_emits_form_submitted_on_its_lead_once(server: TestServer, http: ClientSession) -> None:
    services = server.app[SERVICES]
    assert services.directory is not None and services.outward is not None
    contact = str((await services.directory.create_contact({"name": "Ada"}))["id"])
    lead = str((await services.directory.create_lead({"name": "Form deal"}, contact_id=contact))["id"])
    made = await services.outward.forms.create({"form": "individual", "fields": ["email"]}, CrmRef(contact, lead),
                                               "conv-1")
    path = made["url"][made["url"].index("/forms/"):]
    r = await http.post(path, data={"email": "ada@example.com"})
    assert r.status == 200, await r.text()
    assert (await http.post(path, data={"email": "ada@example.com"})).status == 410  # sent once

    async def submitted() -> list[dict[str, Any]]:
        r = await http.get(f"/api/leads/{lead}/events", headers=AUTH)
        return [e for e in (await r.json())["events"] if e.get("type") == "form.submitted"]

    (event,) = await wait_for(submitted, what="form.submitted on the lead")
    assert event["data"] == {"form": "individual"} and event["source"] == "form"
    assert path.rsplit("/", 1)[1] not in json.dumps(event)  # the token is not in the event


@pytest.fixture
async def server(example_server: TestServer) -> TestServer:
    """This module's servers load the example automation document at start."""
    return example_server


async def _count_is(count: Callable[[], Awaitable[int]], n: int) -> bool:
    return await count() == n
