"""Outward actions end to end: a flow on a running server calls a local webhook receiver, a local
SMTP server (aiosmtpd), a fake Meta Graph API and the hosted form pages; plus the address
policy of send_webhook on its own."""

from __future__ import annotations

import asyncio
import email
import email.policy
import hashlib
import re
import socket
from typing import Any

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver

from bot.errors import ActionFailed, ActionRefused
from bot.outward.netguard import AddressRefused, GuardedResolver, WebhookPolicy
from tests.live_app import fake_service, running_app, wait_for
from tests.outward.smtp import Inbox


# ---------------------------------------------------------------------- the address policy
@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.8.9.10", "::1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254",
    "fe80::1", "fc00::1", "100.64.0.1", "0.0.0.0", "::", "::ffff:127.0.0.1", "224.0.0.1", "255.255.255.255",
])
def test_private_and_special_addresses_are_refused(address: str) -> None:
    assert not WebhookPolicy().address_allowed(address)
    assert WebhookPolicy(allow_private=True).address_allowed(address)


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert WebhookPolicy().address_allowed(address)


async def test_check_url_resolves_and_refuses() -> None:
    policy = WebhookPolicy()
    for url in ["http://localhost:9/x", "http://127.0.0.1/", "http://[::1]:8080/", "http://169.254.169.254/latest/meta-data",
                "http://[::ffff:10.0.0.1]/"]:
        with pytest.raises(ActionRefused, match="private, loopback or link-local"):
            await policy.check_url(url)
    for url in ["ftp://example.com/", "file:///etc/passwd", "http:///nohost", "javascript:alert(1)"]:
        with pytest.raises(ActionRefused, match="not an http"):
            await policy.check_url(url)
    await policy.check_url("https://93.184.216.34/hook")  # a public literal needs no lookup
    allow = WebhookPolicy(allowlist=["10.0.0.0/8", "hooks.internal"])
    await allow.check_url("http://10.1.2.3/hook")
    await allow.check_url("http://hooks.internal/hook")  # allowed by name: not even resolved
    with pytest.raises(ActionRefused):
        await allow.check_url("http://192.168.0.1/hook")


class _FixedResolver(AbstractResolver):
    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[Any]:
        return [{"hostname": host, "host": a, "port": port, "family": socket.AF_INET, "proto": 0, "flags": 0}
                for a in self.addresses]

    async def close(self) -> None:
        pass


async def test_the_connector_refuses_what_dns_changes_to() -> None:
    """DNS rebinding: the check runs again on the addresses actually connected to."""
    rebound = GuardedResolver(WebhookPolicy(), _FixedResolver("127.0.0.1"))
    with pytest.raises(AddressRefused):
        await rebound.resolve("rebind.example", 80)
    mixed = GuardedResolver(WebhookPolicy(), _FixedResolver("10.0.0.7", "93.184.216.34"))
    assert [r["host"] for r in await mixed.resolve("mixed.example", 80)] == ["93.184.216.34"]


# ---------------------------------------------------------------------- send_webhook
def _webhook_flow(url: str, *, timeout: str = "3s") -> dict[str, Any]:
    return {
        "call": {"type": "action", "actions": [{
            "do": "send_webhook", "url": url, "method": "POST",
            "headers": {"X-Lead": "{{ lead.id }}"},
            "body": {"text": "{{ message.text }}", "lead": "{{ lead.id }}"},
            "save_as": "reply", "timeout": timeout}], "next": "ok", "failed": "failed"},
        "ok": {"type": "message", "text": "ok {{ vars.reply.echo | default(vars.reply) }}"},
        "failed": {"type": "message", "text": "failed"},
    }


@pytest.fixture
async def receiver() -> Any:
    calls: list[dict[str, Any]] = []
    never = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        body = await request.json()
        calls.append({"body": body, "headers": dict(request.headers)})
        return web.json_response({"echo": body["text"].upper()})

    async def text(request: web.Request) -> web.Response:
        calls.append({"body": await request.text()})
        return web.Response(text="plain answer")

    async def boom(request: web.Request) -> web.Response:
        calls.append({})
        return web.json_response({"error": "no"}, status=500)

    async def slow(request: web.Request) -> web.Response:
        calls.append({})
        await never.wait()  # never answers within the step's timeout
        return web.Response()

    async with fake_service({("POST", "/hook"): hook, ("POST", "/text"): text, ("POST", "/boom"): boom,
                             ("POST", "/slow"): slow}) as url:
        yield url, calls
    never.set()


def _action_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [str(r.error) for r in caplog.records if r.getMessage() == "action.failed" and hasattr(r, "error")]


async def test_webhook_to_loopback_is_refused_by_default(redis: Any, redis_url: str, receiver: Any,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    url, calls = receiver
    async with running_app(redis_url) as app:
        await app.put_flow(_webhook_flow(f"{url}/hook"), "call")
        _, texts = await app.say("webhook-refused-1", "hello")
        assert texts == ["failed"]
        await app.put_flow(_webhook_flow(url.replace("127.0.0.1", "localhost") + "/hook"), "call")
        _, texts = await app.say("webhook-refused-2", "hello")
        assert texts == ["failed"]
    assert calls == []  # never reached
    errors = _action_errors(caplog)
    assert len(errors) == 2 and all("private, loopback or link-local" in e for e in errors), errors


async def test_webhook_allowed_by_config_saves_the_response(redis: Any, redis_url: str, receiver: Any,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    url, calls = receiver
    async with running_app(redis_url, actions={"allow_private_webhooks": True}) as app:
        await app.put_flow(_webhook_flow(f"{url}/hook"), "call")
        cid, texts = await app.say("webhook-allowed-1", "hello")
        assert texts == ["ok HELLO"]
        conversation = await app.conversation(cid)
        assert conversation["run"]["variables"]["reply"] == {"echo": "HELLO"}
        lead_id = conversation["lead_id"]
        assert calls[0]["body"] == {"text": "hello", "lead": lead_id}
        assert calls[0]["headers"]["X-Lead"] == lead_id
        assert calls[0]["headers"]["Content-Type"] == "application/json"

        await app.put_flow(_webhook_flow(f"{url}/text"), "call")  # a text answer is kept as text
        _, texts = await app.say("webhook-allowed-2", "hi")
        assert texts == ["ok plain answer"]
        await app.put_flow(_webhook_flow(f"{url}/boom"), "call")  # HTTP 500: the failed branch
        _, texts = await app.say("webhook-allowed-3", "hi")
        assert texts == ["failed"]
        await app.put_flow(_webhook_flow(f"{url}/slow", timeout="1s"), "call")  # timeout: failed too
        _, texts = await app.say("webhook-allowed-4", "hi")
        assert texts == ["failed"]
    errors = _action_errors(caplog)
    assert "answered HTTP 500" in errors[0] and "did not answer within 1s" in errors[1], errors


async def test_webhook_allowed_by_the_allowlist(redis: Any, redis_url: str, receiver: Any) -> None:
    url, calls = receiver
    async with running_app(redis_url, actions={"webhook_allowlist": ["127.0.0.0/8"]}) as app:
        await app.put_flow(_webhook_flow(f"{url}/hook"), "call")
        _, texts = await app.say("webhook-list-1", "yes")
        assert texts == ["ok YES"] and len(calls) == 1


# ---------------------------------------------------------------------- send_email


def _email_config(port: int) -> dict[str, Any]:
    return {
        "smtp": {"host": "127.0.0.1", "port": port, "from": "bot@shop.example", "starttls": False, "timeout": 10},
        "actions": {"email_templates": {"welcome": {
            "subject": "Welcome, {{ contact.first_name }}",
            "text": "Hello {{ contact.name }}, your discount is {{ contact.discount }}% ({{ vars.code }}).",
            "html": "<p>Hello {{ contact.name }}, your discount is {{ contact.discount }}%.</p>"}}},
        "embedded_crm": {"users": [{"id": "7", "name": "Ayla Demir", "email": "ayla@shop.example"}]},
    }


EMAIL_FLOW: dict[str, Any] = {
    "save": {"type": "action", "actions": [
        {"do": "set_variable", "name": "code", "value": "SPRING"},
        {"do": "set_field", "entity": "contact", "field": "email", "value": "{{ message.text }}"},
        {"do": "set_field", "entity": "contact", "field": "name", "value": "Ann <b>Lee</b>"},
        {"do": "set_field", "entity": "contact", "field": "discount", "value": "15"},
        {"do": "change_responsible", "user": "7", "entities": ["lead"]},
        {"do": "send_email", "template": "welcome", "to": "main_contact", "sender": "responsible"}],
        "next": "sent", "failed": "failed"},
    "sent": {"type": "message", "text": "sent"},
    "failed": {"type": "message", "text": "failed"},
}


def _part(msg: email.message.EmailMessage, subtype: str) -> str:
    part = msg.get_body(preferencelist=(subtype,))
    assert part is not None
    return str(part.get_content())


async def test_send_email_with_a_working_unsubscribe_link(redis: Any, redis_url: str, smtp: tuple[int, Inbox]) -> None:
    port, inbox = smtp
    async with running_app(redis_url, **_email_config(port)) as app:
        await app.put_flow(EMAIL_FLOW, "save")
        cid, texts = await app.say("email-session-1", "ann@example.com")
        assert texts == ["sent"]
        await wait_for(lambda: inbox.messages)
        msg = inbox.messages[0]
        assert inbox.envelopes[0].rcpt_tos == ["ann@example.com"]
        assert msg["To"] == "ann@example.com"
        assert msg["Subject"] == "Welcome, Ann"
        assert msg["From"] == "Ayla Demir <bot@shop.example>"  # the responsible user's name, our address
        assert msg["Reply-To"] == "ayla@shop.example"
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        link = re.fullmatch(r"<(.+)>", str(msg["List-Unsubscribe"]))
        assert link is not None
        url = link.group(1)
        assert url.startswith(f"{app.url}/unsubscribe/")
        text = _part(msg, "plain")
        assert "Hello Ann <b>Lee</b>, your discount is 15% (SPRING)." in text and url in text
        html = _part(msg, "html")
        assert "Hello Ann &lt;b&gt;Lee&lt;/b&gt;" in html and "<b>" not in html  # escaped in HTML
        assert url in html

        # the link unsubscribes, once; the contact's card shows it
        r = await app.http.get(url)
        assert r.status == 200 and "will get no more e-mails" in await r.text()
        r = await app.http.get(url)
        assert r.status == 200 and "unsubscribed already" in await r.text()
        contact_id = (await app.conversation(cid))["contact"]["contact_id"]
        contact = await app.api("GET", f"/api/crm/contacts/{contact_id}")
        assert contact["unsubscribed"] is True
        forged = url[:-3] + ("AAA" if not url.endswith("AAA") else "BBB")
        assert (await app.http.get(forged)).status == 404

        # later send_email skip the contact (and anyone else with the address), without failing
        _, texts = await app.say("email-session-1", "ann@example.com")
        assert texts == ["sent"]
        _, texts = await app.say("email-session-2", "ANN@example.com")
        assert texts == ["sent"]
        assert len(inbox.messages) == 1

        # a person may subscribe the contact again through the CRM API
        await app.api("PATCH", f"/api/crm/contacts/{contact_id}", json={"unsubscribed": False})
        _, texts = await app.say("email-session-1", "ann@example.com")
        assert texts == ["sent"] and len(inbox.messages) == 2

        # one-click unsubscribe (RFC 8058) is a POST to the same link
        other = app.services.outward.tokens.make("999", "bob@example.com")  # type: ignore[union-attr]
        r = await app.http.post(f"/unsubscribe/{other}", data={"List-Unsubscribe": "One-Click"})
        assert r.status == 200
        assert await app.services.redis.sismember("sb:email:unsubscribed", "bob@example.com")


async def test_send_email_failures_take_the_failed_branch(redis: Any, redis_url: str, smtp: tuple[int, Inbox]) -> None:
    port, inbox = smtp
    no_address = {"go": {"type": "action", "actions": [{"do": "send_email", "template": "welcome"}],
                         "next": "sent", "failed": "failed"},
                  "sent": {"type": "message", "text": "sent"}, "failed": {"type": "message", "text": "failed"}}
    async with running_app(redis_url, **_email_config(port)) as app:
        await app.put_flow(no_address, "go")  # the contact has no e-mail address
        _, texts = await app.say("email-fail-1", "hi")
        assert texts == ["failed"]
        unknown = {**no_address, "go": {**no_address["go"], "actions": [
            {"do": "set_field", "entity": "contact", "field": "email", "value": "x@example.com"},
            {"do": "send_email", "template": "no_such_template"}]}}
        await app.put_flow(unknown, "go")
        _, texts = await app.say("email-fail-2", "hi")
        assert texts == ["failed"]
    async with running_app(redis_url) as app:  # no [smtp]: not configured
        await app.put_flow(unknown, "go")
        _, texts = await app.say("email-fail-3", "hi")
        assert texts == ["failed"]
    assert inbox.messages == []


async def test_inline_template_to_all_contacts(redis: Any, redis_url: str, smtp: tuple[int, Inbox]) -> None:
    port, inbox = smtp
    flow = {"go": {"type": "action", "actions": [
        {"do": "set_field", "entity": "contact", "field": "email", "value": "first@example.com"},
        {"do": "send_email", "to": "all_contacts", "sender": "shared", "unsubscribe_link": True,
         "template": {"subject": "Order {{ lead.id }}", "body": "Thanks, {{ vars.who | default('friend') }}!"}}],
        "next": "sent", "failed": "failed"},
        "sent": {"type": "message", "text": "sent"}, "failed": {"type": "message", "text": "failed"}}
    async with running_app(redis_url, **_email_config(port)) as app:
        await app.put_flow(flow, "go")
        cid, _ = await app.say("email-all-1", "hi")
        lead_id = (await app.conversation(cid))["lead_id"]
        second = await app.api("POST", "/api/crm/contacts", 201, json={"name": "Second", "email": "second@example.com"})
        lead = await app.api("GET", f"/api/crm/leads/{lead_id}")
        await app.api("PATCH", f"/api/crm/leads/{lead_id}",
                      json={"contacts": [c["id"] for c in lead["contacts"]] + [second["id"]]})
        _, texts = await app.say("email-all-1", "again")
        assert texts == ["sent"]
    sent_to = sorted(m["To"] for m in inbox.messages)
    assert sent_to == ["first@example.com", "first@example.com", "second@example.com"]
    last = inbox.messages[-1]
    assert last["Subject"] == f"Order {lead_id}" and last["From"] == "bot@shop.example" and last["Reply-To"] is None
    assert "Thanks, friend!" in _part(last, "plain") and "/unsubscribe/" in _part(last, "plain")


# ---------------------------------------------------------------------- meta_conversion
async def test_meta_conversion_against_a_fake_graph_api(redis: Any, redis_url: str) -> None:
    received: list[dict[str, Any]] = []

    async def events(request: web.Request) -> web.Response:
        body = await request.json()
        received.append({"pixel": request.match_info["pixel"], **body})
        if request.match_info["pixel"] == "bad":
            return web.json_response({"error": {"message": "Invalid parameter", "code": 100}}, status=400)
        return web.json_response({"events_received": 1, "fbtrace_id": "trace-1"})

    flow = {"go": {"type": "action", "actions": [
        {"do": "set_field", "entity": "contact", "field": "email", "value": " Ann@Example.COM "},
        {"do": "set_field", "entity": "contact", "field": "phone", "value": "+90 555 111 22 33"},
        {"do": "meta_conversion", "event": "Purchase", "value": "{{ 99.5 }}", "currency": "eur"}],
        "next": "ok", "failed": "failed"},
        "ok": {"type": "message", "text": "ok"}, "failed": {"type": "message", "text": "failed"}}
    contacts: dict[str, str] = {}
    async with fake_service({("POST", "/v99/{pixel}/events"): events}) as graph:
        for pixel, expected in [("123456", "ok"), ("bad", "failed")]:
            config = {"meta_conversions": {"pixel_id": pixel, "access_token": "meta-secret",
                                           "graph_base": f"{graph}/v99"}}
            async with running_app(redis_url, **config) as app:
                await app.put_flow(flow, "go")
                cid, texts = await app.say(f"meta-{pixel}-1", "buy")
                assert texts == [expected]
                contacts[pixel] = (await app.conversation(cid))["contact"]["contact_id"]
    ok = received[0]
    assert ok["pixel"] == "123456" and ok["access_token"] == "meta-secret"
    event = ok["data"][0]
    assert event["event_name"] == "Purchase" and event["action_source"] == "chat"
    assert isinstance(event["event_time"], int) and event["event_id"]
    assert event["user_data"]["em"] == [hashlib.sha256(b"ann@example.com").hexdigest()]
    assert event["user_data"]["ph"] == [hashlib.sha256(b"905551112233").hexdigest()]
    assert event["user_data"]["external_id"] == [hashlib.sha256(f"contact:{contacts['123456']}".encode()).hexdigest()]
    assert event["custom_data"] == {"value": 99.5, "currency": "EUR"}
    assert "Ann@Example" not in str(ok)  # only hashes leave the server


# ---------------------------------------------------------------------- internal_message
async def test_internal_message_is_on_the_conversation_api_with_its_recipients(redis: Any, redis_url: str) -> None:
    flow = {"note": {"type": "internal_message", "text": "Call {{ message.text }} back", "to": ["user:7", "team:sales"],
                     "next": "hi"},
            "hi": {"type": "message", "text": "hi"}}
    async with running_app(redis_url) as app:
        await app.put_flow(flow, "note")
        cid, texts = await app.say("internal-1", "Ann")
        assert texts == ["hi"]  # the customer never sees it
        transcript = (await app.conversation(cid))["transcript"]
        internal = [e for e in transcript if e["role"] == "internal"]
        assert [(e["text"], e["to"]) for e in internal] == [("Call Ann back", ["user:7", "team:sales"])]
        seen = await (await app.http.get("/chat/demo/messages", params={"session": "internal-1"})).json()
        assert all(m["role"] != "internal" and "Call Ann" not in m["text"] for m in seen["messages"])


# ---------------------------------------------------------------------- create_form over HTTP
FORM_FLOW: dict[str, Any] = {
    "form": {"type": "action", "actions": [
        {"do": "create_form", "form": "individual", "fields": ["name", "email", "budget", "price"],
         "tags": ["form", "{{ 'from-' ~ chat.channel }}"], "stage": "Qualified"}],
        "next": "link", "failed": "failed"},
    "link": {"type": "message", "text": "Please fill in {{ vars.form_url }}"},
    "failed": {"type": "message", "text": "failed"},
}
PIPELINES = {"embedded_crm": {"pipelines": {"Sales": ["Incoming", "Qualified", "Won"]}}}


def _form_url(text: str) -> str:
    found = re.search(r"https?://\S+/forms/[A-Za-z0-9_-]+", text)
    assert found, text
    return found.group(0)


async def test_form_updates_the_lead_once_and_escapes_everything(redis: Any, redis_url: str) -> None:
    async with running_app(redis_url, **PIPELINES) as app:
        await app.put_flow(FORM_FLOW, "form")
        cid, texts = await app.say("form-http-1", "hi")
        url = _form_url(texts[0])
        assert url.startswith(app.url)
        r = await app.http.get(url)
        page = await r.text()
        assert r.status == 200 and 'name="email"' in page and 'type="email"' in page and 'name="budget"' in page
        assert "default-src 'none'" in r.headers["Content-Security-Policy"]

        hostile = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'
        r = await app.http.post(url, data={"name": hostile, "email": "nope", "budget": "", "price": "-3"})
        page = await r.text()
        assert r.status == 422
        assert "<script>" not in page and "<img" not in page and "&lt;script&gt;" in page
        assert page.count('role="alert"') == 3  # email, budget, price

        r = await app.http.post(url, data={"name": "Ann Lee", "email": "Ann@Example.com", "budget": "5000 TL",
                                           "price": "1200"})
        assert r.status == 200 and "Thank you" in await r.text()
        lead_id = (await app.conversation(cid))["lead_id"]
        lead = await app.api("GET", f"/api/crm/leads/{lead_id}")
        assert lead["stage"] == "Qualified" and {"form", "from-livechat"} <= set(lead["tags"])
        assert lead["fields"]["budget"] == "5000 TL" and lead["price"] == 1200
        assert lead["contacts"][0]["name"] == "Ann Lee" and lead["contacts"][0]["email"] == "Ann@example.com"
        assert any("Form filled in" in n["text"] for n in lead["notes"])

        r = await app.http.post(url, data={"name": "Again", "email": "a@example.com", "budget": "1", "price": "1"})
        assert r.status == 410  # one time
        assert (await app.http.get(url)).status == 410
        assert (await app.http.get(f"{app.url}/forms/not-a-token")).status == 404


async def test_referral_form_creates_a_new_lead(redis: Any, redis_url: str) -> None:
    flow = {**FORM_FLOW, "form": {**FORM_FLOW["form"], "actions": [
        {"do": "create_form", "form": "referral", "fields": ["name", "phone"], "tags": ["referral"]}]}}
    async with running_app(redis_url, **PIPELINES) as app:
        await app.put_flow(flow, "form")
        cid, texts = await app.say("form-ref-1", "hi")
        url = _form_url(texts[0])
        r = await app.http.post(url, data={"name": "Bora Kaya", "phone": "+90 532 000 11 22"})
        assert r.status == 200, await r.text()
        source_id = (await app.conversation(cid))["lead_id"]
        found = await app.api("GET", "/api/crm/leads", params={"q": "bora"})
        assert [lead["name"] for lead in found["leads"]] == ["Referral: Bora Kaya"]
        new = await app.api("GET", f"/api/crm/leads/{found['leads'][0]['id']}")
        assert new["tags"] == ["referral"] and new["stage"] == "Incoming" and new["id"] != source_id
        assert new["contacts"][0]["phone"] == "+90 532 000 11 22"
        assert any(f"Referred by lead #{source_id}" in n["text"] for n in new["notes"])
        source = await app.api("GET", f"/api/crm/leads/{source_id}")
        assert any("Referred a new lead" in n["text"] for n in source["notes"])


async def test_outward_errors_are_typed() -> None:
    assert issubclass(ActionRefused, ActionFailed)
