"""``email.sent`` end to end: a rule's or a flow's ``send_email`` goes to a local SMTP server
(aiosmtpd) and each e-mail the server accepts becomes the lead's ``email.sent`` (once, with the
e-mail's message id, at the command's depth), which triggers and scoring act on; a refused
recipient emits nothing; rules that send e-mails on ``email.sent`` stop at the loop guard. And
the trackers' events are not forwarded to the lead's conversation, while a form's still are."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest

from bot.automations.events import MAX_DEPTH
from bot.store import dedupe
from tests.live_app import App, running_app
from tests.outward.smtp import Inbox
from tests.waiting import wait_for

HTML = '<html><body><p>Hello {{ contact.name }}</p><a href="https://shop.example/offer">Offer</a></body></html>'




def _config(port: int) -> dict[str, Any]:
    return {"smtp": {"host": "127.0.0.1", "port": port, "from": "bot@shop.example", "starttls": False, "timeout": 10},
            "actions": {"email_templates": {"offer": {"subject": "Our offer", "html": HTML},
                                            "ping": {"subject": "Ping", "text": "ping"}}}}


def _doc(**parts: Any) -> dict[str, Any]:
    return {"format": "salesbot.automations/1", "id": "sales", "pipeline": "Sales", **parts}


async def _new_lead(app: App, address: str = "ann@example.com") -> tuple[str, str]:
    contact = await app.api("POST", "/api/crm/contacts", 201, json={"name": "Ann", "email": address})
    lead = await app.api("POST", "/api/crm/leads", 201, json={"name": "Deal", "contact_id": contact["id"]})
    return str(lead["id"]), str(contact["id"])


async def _history(app: App, lead: str) -> list[dict[str, Any]]:
    await app.services.leads.idle()
    body = await app.api("GET", f"/api/leads/{lead}/events")
    return list(body["events"])


async def _events(app: App, lead: str, kind: str) -> list[dict[str, Any]]:
    return [e for e in await _history(app, lead) if e.get("role") == "event" and e.get("type") == kind]


async def _records(app: App, lead: str, rule: str) -> list[dict[str, Any]]:
    return [e for e in await _history(app, lead) if e.get("role") == "automation" and e.get("rule") == rule]


async def _scored(app: App, contact: str, value: int) -> bool:
    return bool((await app.api("GET", f"/api/crm/contacts/{contact}")).get("score") == value)


async def test_a_rules_email_is_the_leads_email_sent_and_rules_act_on_it(
        redis: Any, redis_url: str, smtp: tuple[int, Inbox]) -> None:
    port, inbox = smtp
    doc = _doc(rules=[{"id": "offer", "stage": "Incoming", "on": "created",
                       "do": {"actions": [{"do": "send_email", "template": "offer"}]}}],
               triggers=[{"id": "mailed", "stage": "Contacted", "on": "email.sent", "match": {"template": "offer"}}],
               scoring=[{"on": "email.sent", "add": 3}])
    async with running_app(redis_url, **_config(port)) as app:
        await app.api("PUT", "/api/automations/sales", 201, json=doc)
        lead, contact = await _new_lead(app)
        await wait_for(lambda: inbox.messages, what="the rule's e-mail")
        (sent,) = await wait_for(lambda: _events(app, lead, "email.sent"), what="email.sent on the lead")
        message = sent["data"]["message"]
        assert sent["data"] == {"to": "ann@example.com", "subject": "Our offer", "template": "offer",
                                "message": message}
        assert sent["source"] == "email" and sent["depth"] == 1  # the rule's action, one deeper than lead.created
        assert sent["id"] == f"email:{message}:sent" and re.fullmatch(r"[A-Za-z0-9_-]{12}", message)

        async def moved() -> bool:
            return bool((await app.api("GET", f"/api/crm/leads/{lead}"))["stage"] == "Contacted")
        await wait_for(moved, what="the trigger on email.sent")
        await wait_for(lambda: _scored(app, contact, 3), what="the score of email.sent")
        assert [r["outcome"] for r in await _records(app, lead, "mailed")] == ["fired", "acted"]

        # the e-mail's id is its tracking's: its open is the same message's event
        pixel = re.search(rf'src="({re.escape(app.url)}/t/o/[A-Za-z0-9_.-]+\.gif)"',
                          str(inbox.messages[0].get_body(preferencelist=("html",)).get_content()))  # type: ignore[union-attr]
        assert pixel is not None and (await app.http.get(pixel.group(1))).status == 200
        (opened,) = await wait_for(lambda: _events(app, lead, "email.opened"), what="email.opened")
        assert opened["id"] == f"email:{message}:opened"

        # a redelivery of the same e-mail's event is a duplicate
        await app.services.leads.emit("email.sent", lead, id_=sent["id"], data=sent["data"], contact_id=contact,
                                      source="email", depth=1)
        assert len(await _events(app, lead, "email.sent")) == 1
        assert len(inbox.messages) == 1


async def test_a_flows_email_is_the_leads_email_sent_and_does_not_come_back_to_the_flow(
        redis: Any, redis_url: str, smtp: tuple[int, Inbox], caplog: pytest.LogCaptureFixture) -> None:
    port, inbox = smtp
    flow = {"go": {"type": "action", "actions": [
        {"do": "set_field", "entity": "contact", "field": "email", "value": "flow@example.com"},
        {"do": "send_email", "template": {"subject": "Hello {{ lead.id }}", "body": "Thanks!"}}],
        "next": "sent", "failed": "failed"},
        "sent": {"type": "message", "text": "sent"}, "failed": {"type": "message", "text": "failed"}}
    caplog.set_level(logging.INFO)
    async with running_app(redis_url, **_config(port)) as app:
        await app.put_flow(flow, "go")
        await app.api("PUT", "/api/automations/sales", 201, json=_doc(scoring=[{"on": "email.sent", "add": 2}]))
        cid, texts = await app.say("email-sent-flow-1", "hi")
        assert texts == ["sent"]
        lead = str((await app.conversation(cid))["lead_id"])
        (sent,) = await wait_for(lambda: _events(app, lead, "email.sent"), what="the flow's email.sent")
        assert sent["data"]["to"] == "flow@example.com" and sent["data"]["template"] is None
        assert sent["data"]["subject"] == f"Hello {lead}" and sent["depth"] == 0  # a flow's: the outside world
        contact = str((await app.api("GET", f"/api/crm/leads/{lead}"))["contacts"][0]["id"])
        await wait_for(lambda: _scored(app, contact, 2), what="the score of email.sent")
        # the flow is not told of its own e-mail (no turn, no dedupe entry in the conversation)
        assert await dedupe.seen_at(app.services.redis, cid, f"lead-event:{lead}:{sent['id']}") is None
    assert not [r for r in caplog.records if r.getMessage() == "crm.event"]
    assert len(inbox.messages) == 1


async def test_a_refused_recipient_emits_nothing(redis: Any, redis_url: str, smtp: tuple[int, Inbox]) -> None:
    port, inbox = smtp
    doc = _doc(rules=[{"id": "everyone", "stage": "Contacted", "on": "moved_in",
                       "do": {"actions": [{"do": "send_email", "template": "ping", "to": "all_contacts"}]}}],
               triggers=[{"id": "go", "stage": "Contacted", "on": "custom.mail"}])
    async with running_app(redis_url, **_config(port)) as app:
        await app.api("PUT", "/api/automations/sales", 201, json=doc)
        # two contacts, the mail server refuses one: one email.sent, the accepted one's
        lead, first = await _new_lead(app, "ok@example.com")
        second = await app.api("POST", "/api/crm/contacts", 201, json={"name": "Bo", "email": "bounce@example.com"})
        await app.api("PATCH", f"/api/crm/leads/{lead}", json={"contacts": [first, second["id"]]})
        await app.api("POST", "/api/events", 202, json={"type": "custom.mail", "lead": {"id": lead}})
        (sent,) = await wait_for(lambda: _events(app, lead, "email.sent"), what="email.sent of the accepted one")
        assert sent["data"]["to"] == "ok@example.com" and sent["depth"] == 2
        assert [m["To"] for m in inbox.messages] == ["ok@example.com"]

        # its only contact refused: the action fails, nothing is emitted
        lone, _ = await _new_lead(app, "bounce-2@example.com")
        await app.api("POST", "/api/events", 202, json={"type": "custom.mail", "lead": {"id": lone}})
        failed = await wait_for(lambda: _failed(app, lone), what="the rule's failure")
        assert "refused every recipient" in failed[0]["detail"]
        assert await _events(app, lone, "email.sent") == []
        assert len(inbox.messages) == 1


async def _failed(app: App, lead: str) -> list[dict[str, Any]]:
    return [r for r in await _records(app, lead, "everyone") if r["outcome"] == "failed"]


async def test_rules_that_mail_on_email_sent_stop_at_the_loop_guard(
        redis: Any, redis_url: str, smtp: tuple[int, Inbox]) -> None:
    """email.sent moves the lead to Contacted, whose rule moves it back and sends again: each
    round is two levels deeper, and the chain stops at depth 10 with a ``loop`` record."""
    port, inbox = smtp
    doc = _doc(rules=[{"id": "first", "stage": "Incoming", "on": "created",
                       "do": {"actions": [{"do": "send_email", "template": "ping"}]}},
                      {"id": "again", "stage": "Contacted", "on": "moved_in",
                       "do": {"actions": [{"do": "change_stage", "stage": "Incoming"},
                                          {"do": "send_email", "template": "ping"}]}}],
               triggers=[{"id": "sent", "stage": "Contacted", "on": "email.sent", "allow_backward": True}])
    async with running_app(redis_url, **_config(port)) as app:
        await app.api("PUT", "/api/automations/sales", 201, json=doc)
        lead, _ = await _new_lead(app)

        async def looped() -> list[dict[str, Any]]:
            return [r for r in await _records(app, lead, "again") if r["outcome"] == "loop"]
        (loop,) = await wait_for(looped, timeout=20, what="the loop guard")
        assert loop["detail"] == f"lead.stage_changed at depth {MAX_DEPTH}"
        await app.services.leads.idle()
        depths = [e["depth"] for e in await _events(app, lead, "email.sent")]
        assert depths == [1, 3, 5, 7, 9]
        assert len(inbox.messages) == 5
