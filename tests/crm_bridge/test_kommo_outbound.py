"""Outbound with ``[crm] backend = "kommo"``, end to end: our app on loopback, the fake Kommo API
and the fake Graph API (WhatsApp) on loopback, the test Redis, the worker's outbox driven by the
test. A rule's ``start_bot`` on a Kommo lead (from Kommo's webhook) and ``POST /api/outbound``
reach the lead's contact: in the chat it wrote from (its "Salesbot ID" lines), else by its phone
(a template outside WhatsApp's 24-hour window), else they say why not."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from bot.store.keys import conversation_id
from tests.channels.fakes.graph import GraphFake, Harness, running_app, wa_text, whatsapp_account, write_flows
from tests.channels.fakes.graph.harness import write_flow
from tests.crm_bridge.fakes.kommo import TOKEN, FakeKommo

SECRET = "kommo-hook-secret"
PHONE = "+1 650 555 9876"  # the Kommo contact's phone: it never wrote to us
WA_ID = "16505559876"
CUSTOMER = "16505551234"  # writes to us on WhatsApp first
FORM = {"Content-Type": "application/x-www-form-urlencoded"}

#: Outside the window: the step's template goes out; inside it: its text.
OPTIN_FLOW: dict[str, Any] = {
    "format": "salesbot.flow/1", "id": "optin", "name": "Opt-in", "start": "ask",
    "steps": {
        "ask": {"type": "message", "text": "Hi {{ contact.name }}, shall we talk about {{ lead.name }}?",
                "template": "order_followup", "next": "done"},
        "done": {"type": "stop"},
    },
}


@pytest.fixture
async def graph() -> AsyncIterator[GraphFake]:
    async with GraphFake() as fake:
        yield fake


@pytest.fixture
async def kommo() -> AsyncIterator[FakeKommo]:
    async with FakeKommo(rate_limit=None) as fake:
        yield fake


@pytest.fixture
async def app(redis: Redis, redis_url: str, graph: GraphFake, kommo: FakeKommo,
              tmp_path: Path) -> AsyncIterator[Harness]:
    flows = write_flows(tmp_path / "flows")
    write_flow(flows, OPTIN_FLOW)
    crm = {"backend": "kommo", "base_url": kommo.url, "token": TOKEN, "account": "acme", "webhook_secret": SECRET,
           "timeout": 5.0, "retry_base": 0.2, "retry_max": 1.0}
    async with running_app(redis_url, graph, {"wa": whatsapp_account(graph.base_url, greeting_bot="hello")}, flows,
                           crm=crm, automations_dir=str(tmp_path / "none")) as harness:
        yield harness


async def _rules(app: Harness, rules: list[dict[str, Any]]) -> None:
    doc = {"format": "salesbot.automations/1", "id": "sales", "pipeline": "Sales", "rules": rules}
    status, body = await app.api("PUT", "/api/automations/sales", json=doc)
    assert status in (200, 201), body


async def _hook(app: Harness, kommo: FakeKommo, action: str, lead: int, **extra: Any) -> None:
    record = kommo.leads[lead]
    fields = {"id": lead, "name": record["name"], "status_id": record["status_id"],
              "pipeline_id": record["pipeline_id"], "responsible_user_id": record["responsible_user_id"],
              "last_modified": record["updated_at"], **extra}
    body = "&".join(f"leads[{action}][0][{k}]={v}" for k, v in fields.items())
    assert app.fake._session is not None
    async with app.fake._session.post(str(app.server.make_url(f"/webhooks/kommo/acme?secret={SECRET}")), data=body,
                                      headers=FORM) as r:
        assert r.status == 200, await r.text()
    await app.services.leads.idle()


def _with_phone(kommo: FakeKommo, lead: int, phone: str) -> int:
    contact = kommo.leads[lead]["_contacts"][0]
    kommo.contacts[contact]["custom_fields_values"] = [{
        "field_id": 401, "field_name": "Phone", "field_code": "PHONE", "field_type": "multitext",
        "values": [{"value": "020 7946 0000", "enum_code": "MOB"},  # not in international form: no chat id
                   {"value": phone, "enum_code": "WORK"}]}]
    return int(contact)


def _texts(graph: GraphFake, to: str) -> list[str]:
    return [GraphFake.describe(m) for m in graph.sent_to(to)]


async def _outcomes(app: Harness, lead: int) -> list[tuple[str, str, str]]:
    """What the rules' ``start_bot`` did (``bot_started`` or ``outbound.unreachable``, with why)."""
    status, body = await app.api("GET", f"/api/leads/{lead}/events")
    assert status == 200
    return [(e["rule"], e["outcome"], e["detail"]) for e in body["events"]
            if e["role"] == "automation" and e["outcome"] in ("bot_started", "outbound.unreachable")]


async def test_a_rules_start_bot_on_a_kommo_lead_reaches_its_contact_by_phone_on_whatsapp(
        app: Harness, kommo: FakeKommo) -> None:
    await _rules(app, [{"id": "optin", "stage": "New", "on": ["created"],
                        "do": {"start_bot": "optin", "channel": ["last", "wa"]}}])
    lead = kommo.new_lead("Kitchen", contact="Ada Lovelace")
    contact = _with_phone(kommo, lead, PHONE)
    await _hook(app, kommo, "add", lead)
    cid = conversation_id("whatsapp", "wa", WA_ID)
    assert [o[:2] for o in await _outcomes(app, lead)] == [("optin", "bot_started")]
    await app.drain()
    assert _texts(app.fake, WA_ID) == ["[template order_followup]"]  # never wrote: outside the window
    meta = await app.services.store.meta(cid)
    assert (meta["contact_id"], meta["lead_id"]) == (str(contact), str(lead))
    # Kommo learns the chat: the next conversation of this number finds the same contact
    assert kommo.field_value("contacts", contact, "Salesbot ID") == f"whatsapp:wa:{WA_ID}"
    # the customer answers: the same conversation, the same Kommo contact and lead, no new lead in Kommo
    leads_before = len(kommo.leads)
    await app.webhook("whatsapp", "wa", wa_text(WA_ID, "yes"))
    await app.until(lambda: len(app.fake.sent_to(WA_ID)) >= 2, what="the greeting of the answer")
    assert (await app.services.store.meta(cid))["lead_id"] == str(lead) and len(kommo.leads) == leads_before


async def test_start_bot_last_writes_in_the_chat_the_kommo_contact_wrote_from(app: Harness, kommo: FakeKommo) -> None:
    await app.webhook("whatsapp", "wa", wa_text(CUSTOMER, "hi"))  # identify makes its Kommo contact and lead
    await app.until(lambda: len(app.fake.sent_to(CUSTOMER)) >= 1, what="the greeting")
    cid = conversation_id("whatsapp", "wa", CUSTOMER)
    lead = int((await app.services.store.meta(cid))["lead_id"])
    await _rules(app, [{"id": "qualified", "stage": "Qualified", "on": ["moved_in"], "do": {"start_bot": "optin"}}])
    old = kommo.leads[lead]["status_id"]
    kommo.leads[lead]["status_id"] = kommo.status_id("Sales", "Qualified")  # a person moves it in Kommo
    await _hook(app, kommo, "status", lead, old_status_id=old)
    [(rule, outcome, detail)] = await _outcomes(app, lead)
    assert (rule, outcome, detail) == ("qualified", "bot_started", f"optin in {cid}")
    await app.drain()
    assert _texts(app.fake, CUSTOMER)[-1].startswith("Hi ")  # inside the window: free text, no template
    assert (await app.state(cid)).run.bot == "optin"


async def test_outbound_api_on_kommo_finds_the_contact_by_phone_or_says_why_it_cannot(
        app: Harness, kommo: FakeKommo) -> None:
    lead = kommo.new_lead("Bath", contact="Bo")
    contact = _with_phone(kommo, lead, PHONE)
    status, body = await app.api("POST", "/api/outbound", json={"bot": "optin", "account": "wa",
                                                                "contact": {"phone": PHONE}})
    assert status == 202, body
    assert (body["contact"], body["lead"], body["opened"]) == (str(contact), str(lead), True)
    await app.drain()
    assert _texts(app.fake, WA_ID) == ["[template order_followup]"]
    phoneless = kommo.new_lead("Roof", contact="Cy")
    other = kommo.leads[phoneless]["_contacts"][0]
    status, body = await app.api("POST", "/api/outbound", json={"bot": "optin", "account": ["last", "wa"],
                                                                "contact": {"id": str(other)}})
    assert status == 409 and body["error"]["code"] == "unreachable", body
    assert body["error"]["details"] == ["last: the lead has no conversation the bot can write in",
                                        "wa: the contact has no phone"]
    status, body = await app.api("POST", "/api/outbound", json={"bot": "optin", "account": "wa",
                                                                "contact": {"id": str(other)}, "lead": str(lead)})
    assert status == 422 and body["error"]["code"] == "lead_mismatch", body
    status, body = await app.api("POST", "/api/outbound", json={"bot": "optin", "account": "wa",
                                                                "contact": {"id": "424242"}})
    assert status == 404, body


async def test_outbound_api_while_kommo_is_away_is_a_503_to_retry(app: Harness, kommo: FakeKommo) -> None:
    lead = kommo.new_lead("Bath", contact="Bo")
    _with_phone(kommo, lead, PHONE)
    kommo.down(503)
    status, body = await app.api("POST", "/api/outbound", json={"bot": "optin", "account": "wa",
                                                                "contact": {"phone": PHONE}})
    assert status == 503 and body["error"]["code"] == "crm_unavailable", body
    kommo.up()
    status, body = await app.api("POST", "/api/outbound", json={"bot": "optin", "account": "wa",
                                                                "contact": {"phone": PHONE}})
    assert status == 202, body
