"""The bot writes first: ``POST /api/outbound`` end to end — our app on loopback, the fake Graph
API (WhatsApp, Instagram) on loopback, real Redis, the worker's outbox driven by the test."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from bot.runtime.service import lead_conversation_key
from bot.store.keys import conversation_id
from tests.channels.fakes.graph import (
    GraphFake,
    Harness,
    ig_dm,
    instagram_account,
    running_app,
    wa_text,
    whatsapp_account,
    write_flow,
    write_flows,
)

CUSTOMER = "16505551234"  # writes first (the webhook)
NEWCOMER_PHONE = "+1 650 555 9876"  # never wrote: known to the CRM only
NEWCOMER = "16505559876"
SUPPORT = "support-token-123"
IG_CUSTOMER = "1789400000000777"  # an Instagram user: no phone, reachable only in the chat it opened

#: A first message outside the window (a template with a quick reply), then a free-text answer.
OPTIN_FLOW: dict[str, Any] = {
    "format": "salesbot.flow/1", "id": "optin", "name": "Opt-in", "start": "ask",
    "steps": {
        "ask": {"type": "message", "text": "Hi {{ vars.first }}, can we talk about your order?",
                "template": "order_followup", "buttons": [{"title": "Yes", "next": "great"}],
                "other_answer": "great", "failed": "ask_failed"},
        "great": {"type": "message", "text": "Great, {{ vars.first }}! One moment.", "next": "done"},
        "ask_failed": {"type": "internal_message", "text": "could not ask", "next": "done"},
        "done": {"type": "stop"},
    },
}

#: Messages for the lead's contacts: everyone, then only the main contact.
TEAM_FLOW: dict[str, Any] = {
    "format": "salesbot.flow/1", "id": "team", "name": "Team", "start": "all",
    "steps": {
        "all": {"type": "message", "text": "News for everyone on {{ lead.name }}.", "template": "lead_news",
                "recipients": "all_contacts", "next": "mine"},
        "mine": {"type": "message", "text": "Just for this chat.", "next": "done"},
        "done": {"type": "stop"},
    },
}
MAIN_FLOW: dict[str, Any] = {
    "format": "salesbot.flow/1", "id": "main", "name": "Main contact", "start": "main",
    "steps": {
        "main": {"type": "message", "text": "For the main contact.", "template": "main_news",
                 "recipients": "main_contact", "next": "done"},
        "done": {"type": "stop"},
    },
}


@pytest.fixture
async def fake() -> AsyncIterator[GraphFake]:
    async with GraphFake() as graph:
        yield graph


@pytest.fixture
async def app(redis: Redis, redis_url: str, fake: GraphFake, tmp_path: Path) -> AsyncIterator[Harness]:
    flows = write_flows(tmp_path / "flows")
    for flow in (OPTIN_FLOW, TEAM_FLOW, MAIN_FLOW):
        write_flow(flows, flow)
    accounts = {"wa": whatsapp_account(fake.base_url), "ig": instagram_account(fake.base_url)}
    async with running_app(redis_url, fake, accounts, flows,
                           tokens=[{"token": SUPPORT, "role": "support", "name": "sam"}]) as harness:
        yield harness


async def _post(app: Harness, body: Any, *, token: str | None = None, raw: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, Any]:
    assert app.fake._session is not None
    hdrs = {"Authorization": f"Bearer {token or app.admin}", "Content-Type": "application/json", **(headers or {})}
    data = io.BytesIO(raw) if raw is not None else aiohttp.JsonPayload(body)
    async with app.fake._session.post(str(app.server.make_url("/api/outbound")), data=data, headers=hdrs) as r:
        try:
            return r.status, await r.json(content_type=None)
        except ValueError:
            return r.status, await r.text()


async def _contact(app: Harness, **fields: Any) -> str:
    status, body = await app.api("POST", "/api/crm/contacts", json={"name": "Ada Lovelace", **fields})
    assert status == 201, body
    return str(body["id"])


def _texts(fake: GraphFake, to: str) -> list[str]:
    return [GraphFake.describe(m) for m in fake.sent_to(to)]


# ---------------------------------------------------------------------------- choosing the channel

async def test_last_writes_in_the_leads_most_recent_conversation(app: Harness) -> None:
    await app.webhook("whatsapp", "wa", wa_text(CUSTOMER, "hi"))
    await app.until(lambda: len(app.fake.sent_to(CUSTOMER)) >= 1, what="the greeting")
    cid = conversation_id("whatsapp", "wa", CUSTOMER)
    meta = await app.services.store.meta(cid)
    status, body = await _post(app, {"bot": "hello", "account": "last", "contact": {"id": meta["contact_id"]}})
    assert status == 202, body
    assert body["conversation"] == cid and body["opened"] is False and body["lead"] == meta["lead_id"]
    await app.drain()
    assert _texts(app.fake, CUSTOMER)[-1] == "Hello Sheena Nelson!"  # inside the window: free text
    state = await app.state(cid)
    assert state.run.bot == "hello"


async def test_a_named_account_opens_a_conversation_by_phone_and_the_reply_continues_the_run(
        app: Harness, redis: Redis) -> None:
    contact = await _contact(app, phone=NEWCOMER_PHONE)
    status, body = await _post(app, {"bot": "optin", "account": "wa", "contact": {"phone": NEWCOMER_PHONE},
                                     "variables": {"first": "Ada"}})
    assert status == 202, body
    cid = conversation_id("whatsapp", "wa", NEWCOMER)
    assert body["conversation"] == cid and body["opened"] is True and body["contact"] == contact
    await app.drain()
    # Never wrote: outside the 24-hour window, so the step's template goes out, not its text.
    assert _texts(app.fake, NEWCOMER) == ["[template order_followup]"]
    meta = await app.services.store.meta(cid)
    assert meta["contact_id"] == contact and meta["lead_id"] == body["lead"] and "last_inbound_at" not in meta
    # The customer answers: the same conversation, the same contact, the run goes on (inside the window now).
    await app.webhook("whatsapp", "wa", wa_text(NEWCOMER, "yes please"))
    await app.until(lambda: len(app.fake.sent_to(NEWCOMER)) >= 2, what="the answer to the reply")
    assert _texts(app.fake, NEWCOMER)[-1] == "Great, Ada! One moment."
    meta = await app.services.store.meta(cid)
    assert meta["contact_id"] == contact and meta["lead_id"] == body["lead"]
    state = await app.state(cid)
    assert state.run.bot == "optin" and state.run.status == "finished"
    assert await redis.hget(lead_conversation_key(body["lead"]), body["lead"]) == cid.encode()
    # The CRM knows the contact by this chat now: no second contact was made for it.
    status, found = await app.api("GET", "/api/crm/contacts?q=16505559876")
    assert status == 200 and [c["id"] for c in found["contacts"]] == [contact]


async def test_an_account_without_phones_reaches_a_contact_known_by_its_chat_there(app: Harness) -> None:
    await app.webhook("instagram", "ig", ig_dm(IG_CUSTOMER, text="hi"))
    await app.until(lambda: len(app.fake.sent_to(IG_CUSTOMER)) >= 1, what="the greeting on Instagram")
    cid = conversation_id("instagram", "ig", IG_CUSTOMER)
    contact = (await app.services.store.meta(cid))["contact_id"]
    before = len(app.fake.sent_to(IG_CUSTOMER))
    status, body = await _post(app, {"bot": "hello", "account": ["wa", "ig"], "contact": {"id": contact}})
    assert status == 202, body
    assert body["conversation"] == cid and body["account"] == "ig" and body["opened"] is False
    await app.drain()
    assert len(app.fake.sent_to(IG_CUSTOMER)) == before + 1
    assert (await app.state(cid)).run.bot == "hello"


async def test_a_list_falls_through_to_the_first_account_that_reaches_the_contact(app: Harness) -> None:
    contact = await _contact(app, phone=NEWCOMER_PHONE)
    status, body = await _post(app, {"bot": "remind", "account": ["ig", "wa"], "contact": {"id": contact}})
    assert status == 202, body
    assert body["account"] == "wa" and body["conversation"] == conversation_id("whatsapp", "wa", NEWCOMER)


async def test_unreachable_everywhere_is_a_409_with_a_reason_per_account(app: Harness, redis: Redis) -> None:
    contact = await _contact(app)  # no phone, never wrote anywhere
    status, body = await _post(app, {"bot": "remind", "account": ["ig", "wa", "last"], "contact": {"id": contact}})
    assert status == 409 and body["error"]["code"] == "unreachable"
    reasons = body["error"]["details"]
    assert len(reasons) == 3
    assert reasons[0].startswith("ig: no instagram chat") and reasons[1] == "wa: the contact has no phone"
    assert reasons[2] == "last: the lead has no conversation the bot can write in"
    national = await _contact(app, name="Bob", phone="0555 111 22 33")
    status, body = await _post(app, {"bot": "remind", "account": "wa", "contact": {"id": national}})
    assert status == 409 and "international" in body["error"]["details"][0]
    assert not [key async for key in redis.scan_iter(match="sb:c:{whatsapp:*")]  # nothing was opened


async def test_a_conversation_a_person_has_taken_over_is_not_written_in(app: Harness) -> None:
    await app.webhook("whatsapp", "wa", wa_text(CUSTOMER, "hi"))
    await app.until(lambda: len(app.fake.sent_to(CUSTOMER)) >= 1, what="the greeting")
    cid = conversation_id("whatsapp", "wa", CUSTOMER)
    contact = (await app.services.store.meta(cid))["contact_id"]
    status, _ = await app.api("POST", f"/api/conversations/{cid}/takeover")
    assert status in (200, 202)
    for account in ("wa", "last"):
        status, body = await _post(app, {"bot": "hello", "account": account, "contact": {"id": contact}})
        assert status == 409, body
    assert body["error"]["details"] == ["last: the lead has no conversation the bot can write in"]
    status, body = await _post(app, {"bot": "hello", "account": "wa", "contact": {"id": contact}})
    assert body["error"]["details"] == ["wa: a person has taken the conversation over"]
    assert (await app.state(cid)).run.bot == "shop"


async def test_an_idempotency_key_starts_once(app: Harness) -> None:
    contact = await _contact(app, phone=NEWCOMER_PHONE)
    body = {"bot": "optin", "account": "wa", "contact": {"id": contact}, "variables": {"first": "Ada"}}
    first = await _post(app, body, headers={"Idempotency-Key": "campaign-7:ada"})
    second = await _post(app, body, headers={"Idempotency-Key": "campaign-7:ada"})
    assert first[0] == second[0] == 202
    assert second[1]["conversation"] == first[1]["conversation"] and second[1]["duplicate"] is True
    await app.drain()
    assert _texts(app.fake, NEWCOMER) == ["[template order_followup]"]


# ---------------------------------------------------------------------------- the 24-hour window

async def test_outside_the_window_a_step_without_template_takes_failed_with_outside_window(app: Harness) -> None:
    contact = await _contact(app, phone=NEWCOMER_PHONE)
    status, body = await _post(app, {"bot": "remind", "account": "wa", "contact": {"id": contact}})
    assert status == 202, body
    await app.drain()
    # nudge has a template (sent); plain has none: refused without calling the platform.
    assert _texts(app.fake, NEWCOMER) == ["[template order_ready]"]
    assert app.fake.errors[131047] == 0
    transcript = await app.transcript(body["conversation"])
    assert [e["text"] for e in transcript if e["role"] == "internal"] == ["window closed: could not send"]
    state = await app.state(body["conversation"])
    assert state.run.vars["delivery_error"] == "outside_window"


# ---------------------------------------------------------------------------- recipients

async def _lead_of_two(app: Harness, *, main_first: bool) -> tuple[str, str, str]:
    """The customer who wrote on WhatsApp and a second contact who never did, on one lead."""
    await app.webhook("whatsapp", "wa", wa_text(CUSTOMER, "hi"))
    await app.until(lambda: len(app.fake.sent_to(CUSTOMER)) >= 1, what="the greeting")
    meta = await app.services.store.meta(conversation_id("whatsapp", "wa", CUSTOMER))
    writer, lead = meta["contact_id"], meta["lead_id"]
    other = await _contact(app, phone=NEWCOMER_PHONE)
    contacts = [writer, other] if main_first else [other, writer]
    status, body = await app.api("PATCH", f"/api/crm/leads/{lead}", json={"contacts": contacts})
    assert status == 200, body
    return writer, other, lead


async def test_all_contacts_sends_to_each_contacts_own_conversation(app: Harness) -> None:
    writer, other, lead = await _lead_of_two(app, main_first=True)
    status, body = await _post(app, {"bot": "team", "account": "last", "contact": {"id": writer}})
    assert status == 202, body
    await app.drain()
    _, record = await app.api("GET", f"/api/crm/leads/{lead}")
    news = f"News for everyone on {record['name']}."
    assert _texts(app.fake, CUSTOMER)[-2:] == [news, "Just for this chat."]
    # The other contact never wrote: its own conversation on the same account, outside the window.
    assert _texts(app.fake, NEWCOMER) == ["[template lead_news]"]
    theirs = conversation_id("whatsapp", "wa", NEWCOMER)
    meta = await app.services.store.meta(theirs)
    assert meta["contact_id"] == other and meta["lead_id"] == lead
    bot_lines = [e for e in await app.transcript(theirs) if e["role"] == "bot"]
    assert [(e["text"], e["relayed_from"]) for e in bot_lines] == [(news, body["conversation"])]
    # Their reply is their own conversation's (its greeting bot), not the sender's run.
    await app.webhook("whatsapp", "wa", wa_text(NEWCOMER, "what news?"))
    await app.until(lambda: len(app.fake.sent_to(NEWCOMER)) >= 2, what="the other contact's greeting")
    assert (await app.state(theirs)).run.bot == "shop"


async def test_main_contact_sends_only_to_the_main_contact(app: Harness) -> None:
    writer, other, _lead = await _lead_of_two(app, main_first=False)
    before = len(app.fake.sent_to(CUSTOMER))
    status, body = await _post(app, {"bot": "main", "account": "last", "contact": {"id": writer}})
    assert status == 202, body
    await app.drain()
    assert _texts(app.fake, NEWCOMER) == ["[template main_news]"]
    assert (await app.services.store.meta(conversation_id("whatsapp", "wa", NEWCOMER)))["contact_id"] == other
    assert len(app.fake.sent_to(CUSTOMER)) == before  # this chat's contact is not the main one
    mine = [e["text"] for e in await app.transcript(body["conversation"]) if e["role"] == "bot"]
    assert "For the main contact." not in mine


async def test_recipients_in_a_live_chat_skip_the_contacts_it_cannot_reach(app: Harness) -> None:
    assert app.fake._session is not None
    url = str(app.server.make_url("/chat/demo/messages"))
    async with app.fake._session.post(url, json={"session": "visitor-session-1", "text": "hi"}) as r:
        assert r.status in (200, 202)
    cid = conversation_id("livechat", "demo", "visitor-session-1")
    await app.until(lambda: _has_lead(app, cid), what="the visitor's lead")
    meta = await app.services.store.meta(cid)
    other = await _contact(app, phone=NEWCOMER_PHONE)
    status, _ = await app.api("PATCH", f"/api/crm/leads/{meta['lead_id']}",
                              json={"contacts": [meta["contact_id"], other]})
    assert status == 200
    status, body = await _post(app, {"bot": "team", "account": "last", "contact": {"id": meta["contact_id"]}})
    assert status == 202 and body["conversation"] == cid
    await app.until(lambda: _bot_said(app, cid, "Just for this chat."), what="the run to go on")
    assert (await app.services.store.meta(cid)).get("parked") is None
    assert app.fake.sent_to(NEWCOMER) == []  # no live chat of theirs: skipped, logged


async def _has_lead(app: Harness, cid: str) -> bool:
    return bool((await app.services.store.meta(cid)).get("lead_id"))


async def _bot_said(app: Harness, cid: str, text: str) -> bool:
    return text in [e["text"] for e in await app.transcript(cid) if e["role"] == "bot"]


# ---------------------------------------------------------------------------- the API's refusals

async def test_the_api_refuses_bad_requests_with_4xx(app: Harness, redis: Redis) -> None:
    contact = await _contact(app, phone=NEWCOMER_PHONE)
    other = await _contact(app, name="Other")
    status, lead = await app.api("POST", "/api/crm/leads", json={"contact_id": other})
    assert status == 201
    ok = {"bot": "remind", "account": "wa", "contact": {"id": contact}}
    cases: list[tuple[Any, int, str]] = [
        ([], 400, "bad_request"),
        ("text", 400, "bad_request"),
        ({**ok, "bot": 5}, 400, "bad_request"),
        ({**ok, "bot": "re\x00mind"}, 400, "bad_request"),
        ({**ok, "bot": "x" * 201}, 400, "bad_request"),
        ({**ok, "account": []}, 400, "bad_request"),
        ({**ok, "account": ["wa"] * 11}, 400, "bad_request"),
        ({**ok, "account": {"wa": 1}}, 400, "bad_request"),
        ({**ok, "account": ["wa", None]}, 400, "bad_request"),
        ({**ok, "contact": {}}, 400, "bad_request"),
        ({**ok, "contact": {"id": contact, "phone": "1"}}, 400, "bad_request"),
        ({**ok, "contact": {"name": "Ada"}}, 400, "bad_request"),
        ({**ok, "contact": {"id": True}}, 400, "bad_request"),
        ({**ok, "contact": {"email": "a\u0085@b.c"}}, 400, "bad_request"),
        ({**ok, "contact": [contact]}, 400, "bad_request"),
        ({**ok, "variables": [1]}, 400, "bad_request"),
        ({**ok, "variables": {"big": "x" * 20_000}}, 400, "bad_request"),
        ({**ok, "lead": 1.5}, 400, "bad_request"),
        ({**ok, "colour": "red"}, 400, "bad_request"),
        ({**ok, "bot": "nope"}, 404, "not_found"),
        ({**ok, "account": "nope"}, 404, "not_found"),
        ({**ok, "account": ["wa", "nope"]}, 404, "not_found"),
        ({**ok, "contact": {"id": "999999"}}, 404, "not_found"),
        ({**ok, "contact": {"phone": "+44 20 7946 0000"}}, 404, "not_found"),
        ({**ok, "contact": {"email": "nobody@example.com"}}, 404, "not_found"),
        ({**ok, "lead": "999999"}, 404, "not_found"),
        ({**ok, "lead": lead["id"]}, 422, "lead_mismatch"),
    ]
    for body, want, code in cases:
        status, answer = await _post(app, body)
        assert (status, answer["error"]["code"]) == (want, code), (body, answer)
    raw_cases: list[tuple[bytes, int]] = [
        (b'{"bot": NaN, "contact": {"id": "1"}}', 400),
        (b'{"bot": "remind", "contact": {"id": 1e400}}', 400),
        (b"[" * 100 + b"]" * 100, 400),
        (b"{", 400),
        (b'{"bot": "remind", "contact": {"id": "' + b"9" * 3_000_000 + b'"}}', 413),
    ]
    for raw, want in raw_cases:
        status, _ = await _post(app, None, raw=raw)
        assert status == want, raw[:40]
    assert (await _post(app, ok, headers={"Idempotency-Key": "k" * 201}))[0] == 400
    assert (await _post(app, ok, token=SUPPORT))[0] == 403
    assert (await _post(app, ok, token="wrong-token-1234"))[0] == 401
    # Nothing above started anything.
    assert not [key async for key in redis.scan_iter(match="sb:c:{whatsapp:*")]


# ---------------------------------------------------------------------------- a rule's start_bot

async def test_a_rules_start_bot_writes_first_on_whatsapp_to_a_contact_who_never_wrote(
        redis: Redis, redis_url: str, fake: GraphFake, tmp_path: Path) -> None:
    """The automations' outbound path end to end: a rule on ``created`` starts ``remind`` on the
    list ``["ig", "wa"]`` for a lead whose contact never wrote (Instagram cannot reach a phone, so
    WhatsApp opens the conversation): the template goes out, the plain step after it is refused
    outside the 24-hour window (``failed`` branch, ``outside_window``) without calling the
    platform; a contact nothing reaches is recorded as ``outbound.unreachable``."""
    docs = tmp_path / "automations"
    docs.mkdir()
    (docs / "sales.json").write_text(json.dumps({
        "format": "salesbot.automations/1", "id": "sales", "pipeline": "Sales",
        "rules": [{"id": "follow_up", "stage": "Incoming", "on": ["created"],
                   "do": {"start_bot": "remind", "channel": ["ig", "wa"]}}]}))
    accounts = {"wa": whatsapp_account(fake.base_url), "ig": instagram_account(fake.base_url)}
    async with running_app(redis_url, fake, accounts, write_flows(tmp_path / "flows"),
                           automations_dir=str(docs)) as app:
        leads = []
        for fields in ({"phone": NEWCOMER_PHONE}, {}):
            contact = await _contact(app, **fields)
            status, body = await app.api("POST", "/api/crm/leads", json={"name": "Deal", "contact_id": contact})
            assert status == 201, body
            leads.append(str(body["id"]))
        await app.services.leads.idle()

        async def history(lead: str) -> list[dict[str, Any]]:
            status, body = await app.api("GET", f"/api/leads/{lead}/events")
            assert status == 200, body
            return [e for e in body["events"] if e["role"] == "automation" and e["rule"] == "follow_up"]
        reached, unreachable = leads
        started = [e for e in await history(reached) if e["outcome"] == "bot_started"]
        assert len(started) == 1 and "whatsapp:wa:" in started[0]["detail"], await history(reached)
        cid = started[0]["detail"].split(" in ", 1)[1]
        await app.drain()
        await app.until(lambda: _window_closed(app, cid), what="the plain step's failure")
        assert _texts(app.fake, NEWCOMER) == ["[template order_ready]"]  # once, nothing outside the window
        assert app.fake.errors[131047] == 0
        assert (await app.state(cid)).run.vars["delivery_error"] == "outside_window"
        missed = [e for e in await history(unreachable) if e["outcome"] == "outbound.unreachable"]
        assert len(missed) == 1 and "ig" in missed[0]["detail"] and "wa" in missed[0]["detail"], missed


async def _window_closed(app: Harness, cid: str) -> bool:
    return "window closed: could not send" in [e["text"] for e in await app.transcript(cid) if e["role"] == "internal"]
