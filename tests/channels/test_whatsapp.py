"""WhatsApp Cloud API end to end: our app on loopback, a fake Graph API on loopback, signed
webhooks posted the way Meta posts them, the worker loops driven by the test."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from bot.channels.base import DeliveryRejected, DeliveryTemporary, RawRequest
from bot.channels.meta import signature
from bot.channels.registry import ChannelRegistry
from bot.config import AccountConfig
from bot.store import keys as k
from bot.store.keys import conversation_id
from bot.store.outbox import DeliveryDeferred
from bot.store.ratelimit import RedisLimiter

from .fakes.graph import (
    APP_SECRET,
    VERIFY_TOKEN,
    GraphError,
    GraphFake,
    Harness,
    dumps,
    running_app,
    sign,
    wa_button_reply,
    wa_image,
    wa_list_reply,
    wa_message,
    wa_status,
    wa_template_button,
    wa_text,
    wa_webhook,
    whatsapp_account,
    write_flows,
)

CUSTOMER = "16505551234"
CID = conversation_id("whatsapp", "wa", CUSTOMER)


@pytest.fixture
async def fake() -> AsyncIterator[GraphFake]:
    async with GraphFake() as graph:
        yield graph


@pytest.fixture
def flows(tmp_path: Path) -> Path:
    return write_flows(tmp_path / "flows")


@pytest.fixture
async def app(redis: Redis, redis_url: str, fake: GraphFake, flows: Path) -> AsyncIterator[Harness]:
    async with running_app(redis_url, fake, {"wa": whatsapp_account(fake.base_url)}, flows) as harness:
        yield harness


def _sent(fake: GraphFake) -> list[dict[str, Any]]:
    return fake.sent_to(CUSTOMER)


async def _wait_sent(app: Harness, count: int) -> list[dict[str, Any]]:
    await app.until(lambda: len(_sent(app.fake)) >= count, what=f"{count} messages to the customer")
    return _sent(app.fake)


def _wamid(call_index: int, fake: GraphFake) -> str:
    return str(fake.sent[call_index].answer["messages"][0]["id"])


# ---------------------------------------------------------------------------- webhook security

def test_signature_matches_the_documented_test_vector() -> None:
    body = b'{"object":"whatsapp_business_account","entry":[]}'
    assert signature("app_secret_123", body) == \
        "sha256=02fe0c96d28c59ddb7cf81eff0ca05809b360ba73b63c28210b5906a0a107d1f"


async def test_the_verification_handshake(app: Harness) -> None:
    url = app.url("whatsapp", "wa")
    async with aiohttp.ClientSession() as http:
        ok = {"hub.mode": "subscribe", "hub.challenge": "1158201444", "hub.verify_token": VERIFY_TOKEN}
        async with http.get(url, params=ok) as r:
            assert r.status == 200 and await r.text() == "1158201444"
        async with http.get(url, params={**ok, "hub.verify_token": "nope"}) as r:
            assert r.status == 403
        async with http.get(url, params={**ok, "hub.mode": "unsubscribe"}) as r:
            assert r.status == 403


async def test_bad_signatures_and_malformed_bodies_change_nothing(app: Harness, redis: Redis) -> None:
    fake = app.fake
    payload = wa_text(CUSTOMER, "Merhaba, äöå: do you ship?")
    body = dumps(payload)
    assert b"\\u00e4" in body  # Meta escapes non-ASCII; the signature is over these bytes

    status, _ = await app.webhook("whatsapp", "wa", payload, signature=False)
    assert status == 401
    status, _ = await app.webhook("whatsapp", "wa", payload, signature=sign("another-secret", body))
    assert status == 403
    status, _ = await app.webhook("whatsapp", "wa", payload, signature="sha256=" + "0" * 64)
    assert status == 403
    status, _ = await app.webhook("whatsapp", "wa", payload, signature="garbage")
    assert status == 403
    # A signature over re-serialised JSON (unescaped UTF-8) is not the signature of the bytes sent.
    unescaped = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    status, _ = await app.webhook("whatsapp", "wa", payload, signature=sign(APP_SECRET, unescaped))
    assert status == 403
    # Signed but unreadable: 400.
    for raw in (b'{"object":"whatsapp_business_account","entry":', b'[]', b'{"object":"whatsapp_business_account"}'):
        status, answer = await app.fake.post_webhook(app.url("whatsapp", "wa"), None, raw=raw,
                                                     signature=sign(APP_SECRET, raw))
        assert status == 400, (raw, answer)
    # Signed, readable, but its one message has no sender: acknowledged, the item skipped.
    raw = (b'{"object":"whatsapp_business_account","entry":[{"changes":[{"field":"messages","value":'
           b'{"messages":[{"type":"text"}]}}]}]}')
    status, answer = await app.fake.post_webhook(app.url("whatsapp", "wa"), None, raw=raw,
                                                 signature=sign(APP_SECRET, raw))
    assert (status, answer["items"]) == (200, 0), raw

    assert await app.services.store.meta(CID) == {}
    assert await redis.exists(k.ConversationKey(CID).state, k.ConversationKey(CID).meta) == 0
    await app.drain()
    assert fake.calls == []

    status, answer = await app.webhook("whatsapp", "wa", payload)
    assert status == 200 and answer["items"] == 1
    sent = await _wait_sent(app, 1)
    assert sent[0]["type"] == "interactive"


async def test_unknown_accounts_and_channels_are_404(app: Harness) -> None:
    status, _ = await app.webhook("whatsapp", "nope", wa_text(CUSTOMER, "hi"))
    assert status == 404
    status, _ = await app.webhook("instagram", "wa", wa_text(CUSTOMER, "hi"))
    assert status == 404


# ---------------------------------------------------------------------------- the conversation

async def test_a_full_conversation_with_buttons_a_list_a_pause_and_media(app: Harness) -> None:
    fake = app.fake
    status, _ = await app.webhook("whatsapp", "wa", wa_text(CUSTOMER, "Hi there", name="Sheena Nelson"))
    assert status == 200

    # 3 options: reply buttons.
    menu = (await _wait_sent(app, 1))[0]
    assert menu["to"] == CUSTOMER and menu["type"] == "interactive"
    assert menu["interactive"]["type"] == "button"
    assert menu["interactive"]["body"]["text"] == "Hi! What would you like?"
    buttons = [b["reply"] for b in menu["interactive"]["action"]["buttons"]]
    assert [b["title"] for b in buttons] == ["Drinks", "Sizes", "Nothing"]

    await app.webhook("whatsapp", "wa", wa_button_reply(CUSTOMER, buttons[0]["id"], "Drinks",
                                                       context=_wamid(0, fake)))
    # A list step: a native list message.
    listing = (await _wait_sent(app, 2))[1]
    inter = listing["interactive"]
    assert inter["type"] == "list"
    assert inter["header"] == {"type": "text", "text": "Menu"}
    assert inter["footer"] == {"type": "text", "text": "Prices incl. VAT"}
    assert inter["body"]["text"] == "Pick a drink"
    assert inter["action"]["button"] == "Open menu"
    assert inter["action"]["sections"] == [
        {"title": "Hot", "rows": [{"id": "tea", "title": "Tea", "description": "Black or green"},
                                  {"id": "coffee", "title": "Coffee"}]},
        {"title": "Cold", "rows": [{"id": "lemonade", "title": "Lemonade"}]}]

    picked_at = time.time()
    await app.webhook("whatsapp", "wa", wa_list_reply(CUSTOMER, "tea", "Tea", "Black or green"))
    assert fake.describe((await _wait_sent(app, 3))[2]) == "One Tea coming up."

    # The pause: nothing until its 2-second timer fires, then an image with its caption.
    receipt = (await _wait_sent(app, 4))[3]
    assert time.time() - picked_at >= 1.95
    assert receipt["type"] == "image"
    assert receipt["image"] == {"link": "https://example.com/receipt.jpg", "caption": "Here is your receipt."}

    # 5 options: more than 3 buttons, so a list message.
    sizes = (await _wait_sent(app, 5))[4]
    assert sizes["interactive"]["type"] == "list"
    assert sizes["interactive"]["body"]["text"] == "Which size?"
    rows = [r for s in sizes["interactive"]["action"]["sections"] for r in s["rows"]]
    assert [r["title"] for r in rows] == ["XS", "S", "M", "L", "XL"]
    await app.webhook("whatsapp", "wa", wa_list_reply(CUSTOMER, rows[2]["id"], "M"))

    # 13 options: beyond a list's 10 rows, so numbered text the customer answers by number or title.
    flavours = (await _wait_sent(app, 6))[5]
    assert flavours["type"] == "text"
    text = flavours["text"]["body"]
    assert text.startswith("Which flavour?\n\n1. Flavour 1\n2. Flavour 2")
    assert "13. Flavour 13" in text
    await app.webhook("whatsapp", "wa", wa_text(CUSTOMER, "flavour 7"))
    thanks = (await _wait_sent(app, 7))[6]
    assert fake.describe(thanks) == "Thanks, flavour 7 it is!"

    state = await app.state(CID)
    assert state.run is None or not state.run.active
    # Statuses of what we sent are recorded on the transcript (out of order: read before delivered).
    last = _wamid(6, fake)
    await app.webhook("whatsapp", "wa", wa_status(last, CUSTOMER, "read"))
    await app.webhook("whatsapp", "wa", wa_status(last, CUSTOMER, "delivered"))
    transcript = await app.transcript(CID)
    deliveries = [e for e in transcript if e.get("event") == "delivery"]
    assert [d["status"] for d in deliveries] == ["read", "delivered"]
    thanks = {e["ref"] for e in transcript if e.get("text") == "Thanks, flavour 7 it is!"}
    assert {d["ref"] for d in deliveries} == thanks
    users = [e for e in transcript if e["role"] == "user"]
    assert [u.get("payload") for u in users] == [None, buttons[0]["id"], "tea", rows[2]["id"], None]
    assert (await app.services.store.meta(CID))["name"] == "Sheena Nelson"


async def test_a_redelivered_webhook_is_handled_once(app: Harness) -> None:
    payload = wa_text(CUSTOMER, "Hi there", mid="wamid.REDELIVERED1")
    first = await app.webhook("whatsapp", "wa", payload)
    second = await app.webhook("whatsapp", "wa", payload)
    assert first[0] == second[0] == 200
    await app.drain()
    transcript = await app.transcript(CID)
    assert [e["message_id"] for e in transcript if e["role"] == "user"] == ["wamid.REDELIVERED1"]
    assert len(_sent(app.fake)) == 1
    # A status redelivered is recorded once too.
    wamid = _wamid(0, app.fake)
    await app.webhook("whatsapp", "wa", wa_status(wamid, CUSTOMER, "delivered"))
    await app.webhook("whatsapp", "wa", wa_status(wamid, CUSTOMER, "delivered"))
    assert len([e for e in await app.transcript(CID) if e.get("event") == "delivery"]) == 1


async def test_inbound_media_reaches_the_flow(app: Harness) -> None:
    await app.webhook("whatsapp", "wa", wa_image(CUSTOMER, "1003383421387256", caption="my receipt"))
    await _wait_sent(app, 1)
    user = next(e for e in await app.transcript(CID) if e["role"] == "user")
    assert user["text"] == "my receipt"
    assert user["attachments"] == [{"kind": "image", "url": None, "name": None}]


# ---------------------------------------------------------------------------- the 24-hour window

async def _customer_wrote_hours_ago(app: Harness, redis: Redis, hours: float, *, ours: bool = True,
                                    theirs: bool = True) -> None:
    """Start the conversation, then move the customer's last message into the past."""
    await app.webhook("whatsapp", "wa", wa_text(CUSTOMER, "hi"))
    await _wait_sent(app, 1)
    old = time.time() - hours * 3600
    if ours:
        await redis.hset(k.ConversationKey(CID).meta, "last_inbound_at", f"{old:.3f}")
    if theirs:
        app.fake.customer_wrote(CUSTOMER, old)


async def test_outside_the_window_the_template_is_sent_and_plain_text_takes_failed(app: Harness, redis: Redis) -> None:
    await _customer_wrote_hours_ago(app, redis, 25)
    calls_before = len(app.fake.calls)
    status, _ = await app.api("POST", f"/api/conversations/{CID}/start", json={"bot": "remind"})
    assert status == 202
    await app.drain()
    new = list(app.fake.calls[calls_before:])
    assert [GraphFake.describe(c.body) for c in new] == ["[template order_ready]"]
    assert new[0].body["template"] == {"name": "order_ready", "language": {"code": "en_US"}}
    assert app.fake.errors[131047] == 0  # decided from last_inbound_at, without asking the platform
    transcript = await app.transcript(CID)
    internal = [e["text"] for e in transcript if e["role"] == "internal"]
    assert internal == ["window closed: could not send"]


async def test_error_131047_from_the_platform_falls_back_to_the_template(app: Harness, redis: Redis) -> None:
    # Our record says the window is open, the platform says it is not: its 131047 decides.
    await _customer_wrote_hours_ago(app, redis, 30, ours=False)
    calls_before = len(app.fake.calls)
    await app.api("POST", f"/api/conversations/{CID}/start", json={"bot": "remind"})
    await app.drain()
    new = app.fake.calls[calls_before:]
    assert [(c.status, c.error_code) for c in new] == [(400, 131047), (200, None), (400, 131047)]
    assert GraphFake.describe(new[1].body) == "[template order_ready]"
    internal = [e["text"] for e in await app.transcript(CID) if e["role"] == "internal"]
    assert internal == ["window closed: could not send"]


async def test_a_failed_status_takes_the_failed_branch(app: Harness, redis: Redis) -> None:
    # The platform accepts the send and reports the failure later, in a status webhook.
    await _customer_wrote_hours_ago(app, redis, 30, ours=False)
    app.fake.window_errors = "async"
    await app.api("POST", f"/api/conversations/{CID}/start", json={"bot": "ask"})
    await _wait_sent(app, 2)
    state = await app.state(CID)
    assert state.run.step == "ask" and state.run.status == "waiting"
    assert len(app.fake.pending_statuses) == 1
    failed = wa_webhook(statuses=app.fake.pending_statuses)
    assert (await app.webhook("whatsapp", "wa", failed))[0] == 200
    assert (await app.webhook("whatsapp", "wa", failed))[0] == 200  # redelivered: handled once
    transcript = await app.transcript(CID)
    assert [e["text"] for e in transcript if e["role"] == "internal"] == ["delivery failed"]
    state = await app.state(CID)
    assert state.run is None or not state.run.active


# ---------------------------------------------------------------------------- throughput

@pytest.mark.parametrize("customers", [20])
async def test_a_burst_is_paced_to_the_numbers_throughput(redis: Redis, redis_url: str, fake: GraphFake,
                                                          flows: Path, customers: int) -> None:
    fake.throughput = 15  # messages per second on this number
    account = whatsapp_account(fake.base_url, greeting_bot="hello", rate=10, burst=2)
    async with running_app(redis_url, fake, {"wa": account}, flows) as app:
        numbers = [f"1555000{i:04d}" for i in range(customers)]
        statuses = await asyncio.gather(*(app.webhook("whatsapp", "wa", wa_text(n, "hi", name=f"C{i}"))
                                          for i, n in enumerate(numbers)))
        assert {s for s, _ in statuses} == {200}
        started = time.monotonic()
        await app.drain(timeout=20)
        elapsed = time.monotonic() - started
    assert fake.errors[130429] == 0
    assert sorted(c.body["to"] for c in fake.sent) == sorted(numbers)
    assert elapsed >= (customers - 2) / 10 * 0.8  # the account's rate, not the platform, set the pace
    stamps = sorted(c.at for c in fake.sent)
    assert max(sum(1 for t in stamps if s <= t < s + 1.0) for s in stamps) <= 15


async def test_throughput_errors_are_retried_until_everything_is_delivered(redis: Redis, redis_url: str,
                                                                           fake: GraphFake, flows: Path) -> None:
    fake.throughput = 10
    account = whatsapp_account(fake.base_url, greeting_bot="hello", throughput_retry_after=1.0)
    async with running_app(redis_url, fake, {"wa": account}, flows) as app:
        app.services.outbox.backoff = lambda attempts: 0.0
        numbers = [f"1555100{i:04d}" for i in range(25)]
        await asyncio.gather(*(app.webhook("whatsapp", "wa", wa_text(n, "hi")) for n in numbers))
        await app.drain(timeout=30)
        failed = []
        for n in numbers:
            cid = conversation_id("whatsapp", "wa", n)
            if any(e["role"] == "system" and e.get("event") == "run.failed" for e in await app.transcript(cid)):
                failed.append(n)
    assert fake.errors[130429] > 0  # the platform did push back
    assert sorted(c.body["to"] for c in fake.sent) == sorted(numbers)  # each exactly once, none lost
    assert failed == []


# ---------------------------------------------------------------------------- the adapter alone

def _adapter(base_url: str, http: aiohttp.ClientSession, **settings: Any) -> Any:
    account = whatsapp_account(base_url, **settings)
    return ChannelRegistry(use_entry_points=False).create(
        "whatsapp", account="wa", config=AccountConfig(**account), http=http, public_url="https://bot.example.com")


def _signed(body: Any) -> RawRequest:
    raw = dumps(body)
    return RawRequest("POST", "https://bot.example.com/webhooks/whatsapp/wa",
                      {"x-hub-signature-256": sign(APP_SECRET, raw)}, raw)


async def test_inbound_message_types_are_normalised(fake: GraphFake) -> None:
    async with aiohttp.ClientSession() as http:
        adapter = _adapter(fake.base_url, http)
        parse = lambda payload: adapter.parse(_signed(payload))  # noqa: E731
        [image] = parse(wa_image(CUSTOMER, "media-1", caption="receipt"))
        assert (image.kind, image.text, image.chat_id, image.phone) == ("message", "receipt", CUSTOMER, f"+{CUSTOMER}")
        assert image.attachments[0].kind == "image" and image.attachments[0].platform_id == "media-1"
        assert image.attachments[0].mime == "image/jpeg"
        [voice] = parse(wa_message(CUSTOMER, "audio", {"id": "a1", "mime_type": "audio/ogg", "voice": True}))
        assert voice.attachments[0].kind == "voice"
        [doc] = parse(wa_message(CUSTOMER, "document",
                                 {"id": "d1", "filename": "cv.pdf", "mime_type": "application/pdf"}))
        assert (doc.attachments[0].kind, doc.attachments[0].name) == ("document", "cv.pdf")
        [button] = parse(wa_template_button(CUSTOMER, "TRACK_1234", "Track"))
        assert (button.text, button.payload) == ("Track", "TRACK_1234")
        [listed] = parse(wa_list_reply(CUSTOMER, "priority_express", "Priority Mail Express"))
        assert (listed.text, listed.payload) == ("Priority Mail Express", "priority_express")
        [place] = parse(wa_message(CUSTOMER, "location", {"latitude": 41.0, "longitude": 29.0, "name": "Office"}))
        assert place.attachments[0].url == "geo:41.0,29.0" and place.text == "Office"
        assert parse(wa_message(CUSTOMER, "reaction", {"message_id": "wamid.X", "emoji": "👍"})) == []
        assert parse(wa_message(CUSTOMER, "unsupported", {})) == []
        assert parse(wa_webhook(messages=[{"from": CUSTOMER, "id": "wamid.O", "type": "text", "text": {"body": "x"}}],
                                phone_number_id="999")) == []  # another number of the same app
        assert parse({"object": "page", "entry": []}) == []
        [failed] = parse(wa_status("wamid.S1", CUSTOMER, "failed", errors=[
            {"code": 131047, "title": "Re-engagement message",
             "error_data": {"details": "More than 24 hours have passed"}}]))
        assert (failed.kind, failed.status, failed.platform_message_id, failed.error_code) == \
            ("status", "failed", "wamid.S1", "131047")
        assert "24-hour" in (failed.error or "")
        [read] = parse(wa_status("wamid.S1", CUSTOMER, "read"))
        assert read.dedupe_id != failed.dedupe_id


async def test_a_throughput_error_holds_the_number_in_every_process(redis: Redis, fake: GraphFake) -> None:
    fake.customer_wrote(CUSTOMER)
    chat = {"external_id": CUSTOMER, "last_inbound_at": f"{time.time():.3f}"}
    async with aiohttp.ClientSession() as http:
        one, two = (_adapter(fake.base_url, http, throughput_retry_after=3.0) for _ in range(2))  # two processes
        for adapter in (one, two):
            adapter.use_limiter(RedisLimiter(redis))
        fake.scripted.append(GraphError(130429, "(#130429) Rate limit hit"))
        with pytest.raises(DeliveryTemporary):
            await one.send("wa", chat, {"role": "bot", "text": "a", "ref": "r1"})
        sent = len(fake.sent)
        with pytest.raises(DeliveryDeferred) as held:  # the other process holds off too, and sends nothing
            await two.send("wa", chat, {"role": "bot", "text": "b", "ref": "r2"})
        assert 0 < (held.value.retry_after or 0) <= 3.0 and len(fake.sent) == sent


async def test_rate_zero_lifts_the_limit_and_costs_no_redis_call(redis: Redis, fake: GraphFake) -> None:
    fake.customer_wrote(CUSTOMER)
    chat = {"external_id": CUSTOMER, "last_inbound_at": f"{time.time():.3f}"}
    async with aiohttp.ClientSession() as http:
        adapter = _adapter(fake.base_url, http, rate=0)
        adapter.use_limiter(RedisLimiter(redis))
        for i in range(5):
            assert await adapter.send("wa", chat, {"role": "bot", "text": "a", "ref": f"r{i}"})
    assert [key async for key in redis.scan_iter("sb:rl:*")] == []


async def test_send_maps_platform_errors(fake: GraphFake) -> None:
    fake.customer_wrote(CUSTOMER)
    chat = {"external_id": CUSTOMER, "last_inbound_at": f"{time.time():.3f}"}
    async with aiohttp.ClientSession() as http:
        adapter = _adapter(fake.base_url, http)
        fake.scripted.append(GraphError(130429, "(#130429) Rate limit hit"))
        with pytest.raises(DeliveryTemporary) as caught:
            await adapter.send("wa", chat, {"role": "bot", "text": "a", "ref": "r1"})
        assert caught.value.retry_after == 1.0
        fake.scripted.append(GraphError(131056, "(#131056) (Business Account, Consumer Account) pair rate limit hit"))
        with pytest.raises(DeliveryTemporary) as caught:
            await adapter.send("wa", chat, {"role": "bot", "text": "a", "ref": "r2"})
        assert caught.value.retry_after == 6.0
        fake.scripted.append(GraphError(131026, "(#131026) Message Undeliverable"))
        with pytest.raises(DeliveryRejected):
            await adapter.send("wa", chat, {"role": "bot", "text": "a", "ref": "r3"})
        fake.scripted.append(GraphError(131000, "Something went wrong", status=500))
        with pytest.raises(DeliveryTemporary):
            await adapter.send("wa", chat, {"role": "bot", "text": "a", "ref": "r4"})
        # A wrong token is the operator's to fix: retried, not a customer's failure.
        wrong = _adapter(fake.base_url, http)
        wrong.graph._token = "expired"
        with pytest.raises(DeliveryTemporary):
            await wrong.send("wa", chat, {"role": "bot", "text": "a", "ref": "r5"})
        # The platform unreachable: retried.
        gone = _adapter("http://127.0.0.1:9", http)
        with pytest.raises(DeliveryTemporary):
            await gone.send("wa", chat, {"role": "bot", "text": "a", "ref": "r6"})
        # A human reply outside the window cannot be sent on WhatsApp (no tag exists there).
        old = {"external_id": CUSTOMER, "last_inbound_at": f"{time.time() - 90000:.3f}"}
        with pytest.raises(DeliveryRejected):
            await adapter.send("wa", old, {"role": "human", "text": "Sorry for the wait", "ref": "h:1"})


async def test_templates_media_and_long_text(fake: GraphFake) -> None:
    fake.customer_wrote(CUSTOMER)
    chat = {"external_id": CUSTOMER, "last_inbound_at": f"{time.time():.3f}"}
    async with aiohttp.ClientSession() as http:
        adapter = _adapter(fake.base_url, http, template_language="tr")
        # A template-only step is sent as the template, inside the window too; params fill the body.
        await adapter.send("wa", chat, {"role": "bot", "text": "", "template": "order_update",
                                        "template_params": ["Ada", "#1234"], "ref": "t1"})
        body = fake.sent[-1].body
        assert body["template"] == {"name": "order_update", "language": {"code": "tr"}, "components": [
            {"type": "body", "parameters": [{"type": "text", "text": "Ada"}, {"type": "text", "text": "#1234"}]}]}
        # A document keeps its file name; two attachments are sent after the text.
        before = len(fake.sent)
        await adapter.send("wa", chat, {"role": "bot", "text": "Your papers", "ref": "m1", "attachments": [
            {"kind": "document", "url": "https://example.com/a.pdf", "name": "a.pdf"},
            {"kind": "voice", "url": "https://example.com/v.ogg", "name": None}]})
        bodies = [c.body for c in fake.sent[before:]]
        assert [b["type"] for b in bodies] == ["text", "document", "audio"]
        assert bodies[1]["document"] == {"link": "https://example.com/a.pdf", "filename": "a.pdf"}
        # Text over an interactive body's 1024 characters: the rest goes first as plain text.
        before = len(fake.sent)
        long = ("word " * 300).strip()
        await adapter.send("wa", chat, {"role": "bot", "text": long, "ref": "m2", "buttons": [
            {"title": "Yes", "payload": "p_yes", "url": None, "number": 1}]})
        bodies = [c.body for c in fake.sent[before:]]
        assert [b["type"] for b in bodies] == ["text", "interactive"]
        assert (bodies[0]["text"]["body"] + " " + bodies[1]["interactive"]["body"]["text"]).split() == long.split()
        # A comment step has nothing to do on WhatsApp.
        assert await adapter.send("wa", chat,
                                  {"role": "bot", "kind": "comment", "text": "Thanks!", "ref": "c1"}) is None


async def test_a_retried_message_does_not_repeat_the_parts_already_sent(fake: GraphFake) -> None:
    fake.customer_wrote(CUSTOMER)
    chat = {"external_id": CUSTOMER, "last_inbound_at": f"{time.time():.3f}"}
    entry = {"role": "bot", "text": "a" * 3000 + "\n\n" + "b" * 3000, "ref": "r:long", "at": 1.0}
    async with aiohttp.ClientSession() as http:
        adapter = _adapter(fake.base_url, http)
        fake.scripted.extend([None, GraphError(130429, "(#130429) Rate limit hit")])
        with pytest.raises(DeliveryTemporary):
            await adapter.send("wa", chat, entry)
        last = await adapter.send("wa", chat, entry)  # the outbox's retry
    assert [c.body["text"]["body"][0] for c in fake.sent] == ["a", "b"]
    assert last == fake.sent[-1].answer["messages"][0]["id"]
