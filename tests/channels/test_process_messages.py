"""A process writes to its contact on a channel: ``send_sms`` over Twilio and ``send_message``
over WhatsApp (with buttons, and its template outside the 24-hour window, or ``outside_window``
without one), against the fake platforms on loopback; the message goes out in the contact's own
conversation on that account, through its outbox."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from bot.runtime.processes import process_cid
from bot.store.keys import conversation_id
from tests.channels.fakes import graph
from tests.channels.fakes.twilio_api import FakeTwilio, twilio_account
from tests.channels.fakes.twilio_api import running_app as twilio_app
from tests.channels.fakes.twilio_api import write_flows as twilio_flows

SENDER = "+15017122661"
CUSTOMER = "+15558675310"
WA_CUSTOMER = "16505551234"


def _note(value: str) -> dict[str, Any]:
    return {"type": "action", "actions": [{"do": "set_variable", "name": "r", "value": value}]}


def _process(pid: str, action: dict[str, Any]) -> dict[str, Any]:
    return {"format": "salesbot.flow/1", "id": pid, "start": "send",
            "steps": {"send": {"type": "action", "actions": [action], "next": "sent", "failed": "failed"},
                      "sent": _note("sent"), "failed": _note("failed")}}


SMS = _process("sms_cart", {"do": "send_sms", "account": "txt", "text": "{{ contact.name }}, your cart waits."})
WA = _process("wa_cart", {"do": "send_message", "account": "wa", "text": "Still want it, {{ contact.name }}?",
                          "buttons": [{"title": "Yes"}, {"title": "Shop", "url": "https://shop.example/cart"}]})
WA_TEMPLATE = _process("wa_tpl", {"do": "send_message", "account": "wa", "text": "Still want it?",
                                  "template": "cart_reminder", "params": ["{{ contact.name }}"]})


async def _start(services: Any, process: str, contact_id: str) -> str:
    contact = await services.processes.contact(contact_id=contact_id)
    started = await services.processes.start(process, contact)
    assert started.status == "started"
    return str(started.conversation)


async def _result(harness: Any, cid: str) -> Any:
    async def done() -> Any:
        state = await harness.state(cid)
        return state.run.vars.get("r") if state is not None and state.run is not None else None
    return await harness.until(done, what="the process's send step")


async def test_send_sms_writes_in_the_contacts_sms_conversation(redis: Redis, redis_url: str, tmp_path: Path) -> None:
    async with FakeTwilio(account_sid="AC" + "5e" * 16, auth_token="sms-auth-token-0001") as fake:
        flows = twilio_flows(tmp_path / "flows", SMS)
        accounts = {"txt": twilio_account(fake, "sms", from_number=SENDER, rate=50, burst=50)}
        async with twilio_app(redis_url, fake, accounts, flows) as app:
            contact = await app.services.directory.create_contact({"name": "Ann", "phone": CUSTOMER})  # type: ignore[union-attr]
            cid = await _start(app.services, "sms_cart", str(contact["id"]))
            assert cid == process_cid("sms_cart", str(contact["id"]))
            (sent,) = await app.sent_to(CUSTOMER, 1)
            assert sent.text == "Ann, your cart waits."
            assert await _result(app, cid) == "sent"
            chat = conversation_id("sms", "txt", CUSTOMER)
            (entry,) = [e for e in await app.transcript(chat) if e.get("role") == "bot"]
            assert entry["relayed_from"] == cid and entry["process"] == "sms_cart"
            assert await app.transcript(cid) == []  # the process conversation has no chat of its own


@pytest.fixture
async def wa(redis: Redis, redis_url: str, tmp_path: Path) -> AsyncIterator[graph.Harness]:
    fake = graph.GraphFake()
    await fake.start()
    try:
        flows = graph.write_flows(tmp_path / "flows")
        for flow in (WA, WA_TEMPLATE):
            graph.write_flow(flows, flow)
        async with graph.running_app(redis_url, fake, {"wa": graph.whatsapp_account(fake.base_url)}, flows) as h:
            yield h
    finally:
        await fake.close()


async def _wa_contact(h: graph.Harness) -> str:
    status, body = await h.api("POST", "/api/crm/contacts", json={"name": "Ann", "phone": f"+{WA_CUSTOMER}"})
    assert status == 201, body
    return str(body["id"])


async def test_send_message_outside_the_window_takes_failed_without_a_template(wa: graph.Harness) -> None:
    contact = await _wa_contact(wa)
    cid = await _start(wa.services, "wa_cart", contact)
    assert await _result(wa, cid) == "failed"
    state = await wa.state(cid)
    assert state.run.status == "finished"
    await wa.drain()
    assert wa.fake.sent_to(WA_CUSTOMER) == []


async def test_send_message_outside_the_window_sends_its_template(wa: graph.Harness) -> None:
    contact = await _wa_contact(wa)
    cid = await _start(wa.services, "wa_tpl", contact)
    assert await _result(wa, cid) == "sent"
    await wa.until(lambda: wa.fake.sent_to(WA_CUSTOMER), what="the template")
    (body,) = wa.fake.sent_to(WA_CUSTOMER)
    assert graph.GraphFake.describe(body) == "[template cart_reminder]"


async def test_send_message_inside_the_window_sends_text_and_buttons(wa: graph.Harness) -> None:
    await wa.webhook("whatsapp", "wa", graph.wa_text(WA_CUSTOMER, "hi"))  # the customer wrote: the window opens
    await wa.until(lambda: wa.fake.sent_to(WA_CUSTOMER), what="the greeting")
    before = len(wa.fake.sent_to(WA_CUSTOMER))
    meta = await wa.services.store.meta(conversation_id("whatsapp", "wa", WA_CUSTOMER))
    cid = await _start(wa.services, "wa_cart", meta["contact_id"])
    assert await _result(wa, cid) == "sent"
    await wa.until(lambda: len(wa.fake.sent_to(WA_CUSTOMER)) > before, what="the process's message")
    name = (await wa.services.store.meta(cid))["name"]  # the WhatsApp profile's name
    assert graph.GraphFake.describe(wa.fake.sent_to(WA_CUSTOMER)[-1]) == (
        f"Still want it, {name}?\nShop: https://shop.example/cart [buttons: Yes]")
