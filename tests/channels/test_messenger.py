"""Facebook Messenger end to end (the Send API and webhooks Instagram shares, Messenger's limits)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from bot.channels.base import DeliveryRejected
from bot.channels.registry import ChannelRegistry
from bot.config import AccountConfig
from bot.store import keys as k
from bot.store.keys import conversation_id

from .fakes.graph import (
    APP_SECRET,
    PAGE_ID,
    VERIFY_TOKEN,
    GraphFake,
    Harness,
    dm,
    dumps,
    fb_delivery,
    fb_dm,
    fb_postback,
    messaging_webhook,
    messenger_account,
    running_app,
    sign,
    write_flows,
)

CUSTOMER = "24688001357900"
CID = conversation_id("messenger", "fb", CUSTOMER)


@pytest.fixture
async def fake() -> AsyncIterator[GraphFake]:
    async with GraphFake(messaging="messenger") as graph:
        yield graph


@pytest.fixture
async def app(redis: Redis, redis_url: str, fake: GraphFake, tmp_path: Path) -> AsyncIterator[Harness]:
    flows = write_flows(tmp_path / "flows")
    async with running_app(redis_url, fake, {"fb": messenger_account(fake.base_url)}, flows) as harness:
        yield harness


def _sent(fake: GraphFake) -> list[dict[str, Any]]:
    return fake.sent_to(CUSTOMER)


async def _wait_sent(app: Harness, count: int) -> list[dict[str, Any]]:
    await app.until(lambda: len(_sent(app.fake)) >= count, what=f"{count} messages to the customer")
    return _sent(app.fake)


async def _post(app: Harness, payload: Any, **kw: Any) -> tuple[int, Any]:
    return await app.webhook("messenger", "fb", payload, **kw)


async def test_handshake_and_signatures(app: Harness, redis: Redis) -> None:
    async with aiohttp.ClientSession() as http:
        params = {"hub.mode": "subscribe", "hub.challenge": "42", "hub.verify_token": VERIFY_TOKEN}
        async with http.get(app.url("messenger", "fb"), params=params) as r:
            assert r.status == 200 and await r.text() == "42"
    payload = fb_dm(CUSTOMER, text="hi")
    assert (await _post(app, payload, signature=False))[0] == 401
    assert (await _post(app, payload, signature=sign("wrong", dumps(payload))))[0] == 403
    raw = b'{"object":"page","entry":{}}'
    assert (await app.fake.post_webhook(app.url("messenger", "fb"), None, raw=raw,
                                        signature=sign(APP_SECRET, raw)))[0] == 400
    await app.drain()
    assert await redis.exists(k.ConversationKey(CID).state, k.ConversationKey(CID).meta) == 0 and app.fake.calls == []


async def test_a_conversation_with_quick_replies_postbacks_a_pause_and_media(app: Harness) -> None:
    fake = app.fake
    await _post(app, fb_dm(CUSTOMER, text="hi"))
    menu = (await _wait_sent(app, 1))[0]
    assert menu["recipient"] == {"id": CUSTOMER} and menu["messaging_type"] == "RESPONSE"
    quick = menu["message"]["quick_replies"]
    assert [q["title"] for q in quick] == ["Drinks", "Sizes", "Nothing"]

    # A postback (e.g. from a persistent menu) carries the same payload as the quick reply.
    await _post(app, fb_postback(CUSTOMER, quick[0]["payload"], "Drinks"))
    listing = (await _wait_sent(app, 2))[1]
    assert listing["message"]["text"].startswith("Pick a drink\n\n1. Tea\n2. Coffee\n3. Lemonade")
    await _post(app, fb_dm(CUSTOMER, text="3"))
    assert fake.describe((await _wait_sent(app, 3))[2]) == "One 3 coming up."
    sent = await _wait_sent(app, 5)
    assert [fake.describe(b) for b in sent[3:5]] == ["Here is your receipt.", "[image https://example.com/receipt.jpg]"]
    sizes = (await _wait_sent(app, 6))[5]
    await _post(app, fb_dm(CUSTOMER, text="XL", quick_reply=sizes["message"]["quick_replies"][4]["payload"]))
    flavours = (await _wait_sent(app, 7))[6]
    assert len(flavours["message"]["quick_replies"]) == 13
    await _post(app, fb_dm(CUSTOMER, text="2"))
    assert fake.describe((await _wait_sent(app, 8))[7]) == "Thanks, 2 it is!"

    # Delivery receipts name message ids; reads carry only a watermark (nothing to match).
    mids = [c.answer["message_id"] for c in fake.sent[-2:]]
    await _post(app, fb_delivery(CUSTOMER, mids))
    await _post(app, fb_delivery(CUSTOMER, mids))  # redelivered
    await _post(app, messaging_webhook("page", [{"sender": {"id": CUSTOMER}, "recipient": {"id": PAGE_ID},
                                                 "timestamp": int(time.time() * 1000),
                                                 "read": {"watermark": int(time.time() * 1000)}}], PAGE_ID))
    transcript = await app.transcript(CID)
    assert [e["status"] for e in transcript if e.get("event") == "delivery"] == ["delivered", "delivered"]


async def test_echoes_and_redeliveries_are_ignored(app: Harness) -> None:
    message = fb_dm(CUSTOMER, text="hi", mid="m_REDELIVERED")
    await _post(app, message)
    await _post(app, message)
    echo = messaging_webhook("page", [dm(PAGE_ID, CUSTOMER, text="Hi! What would you like?", echo=True)], PAGE_ID)
    assert (await _post(app, echo))[1]["items"] == 0
    await app.drain()
    assert len(_sent(app.fake)) == 1
    assert [e["text"] for e in await app.transcript(CID) if e["role"] == "user"] == ["hi"]


async def test_messenger_limits_and_windows(fake: GraphFake) -> None:
    fake.customer_wrote(CUSTOMER)
    chat = {"external_id": CUSTOMER, "reply_dm_at": f"{time.time():.3f}"}
    async with aiohttp.ClientSession() as http:
        adapter = ChannelRegistry(use_entry_points=False).create(
            "messenger", account="fb", config=AccountConfig(**messenger_account(fake.base_url)), http=http,
            public_url="")
        # Documents go as files; text over 2000 characters is split.
        await adapter.send("fb", chat, {"role": "bot", "text": "Invoice", "ref": "r1", "attachments": [
            {"kind": "document", "url": "https://example.com/invoice.pdf", "name": "invoice.pdf"}]})
        assert [fake.describe(c.body) for c in fake.sent] == ["Invoice", "[file https://example.com/invoice.pdf]"]
        await adapter.send("fb", chat, {"role": "bot", "text": "word " * 700, "ref": "r2"})
        assert [len(c.body["message"]["text"]) <= 2000 for c in fake.sent[2:]] == [True, True]
        # Messenger has no comment replies here.
        assert await adapter.send("fb", {**chat, "reply_comment_id": "1"},
                                  {"kind": "comment", "text": "x", "ref": "c"}) is None
        # A person may answer for 7 days with the HUMAN_AGENT tag; the bot only within 24 hours.
        old = time.time() - 2 * 86400
        fake.customer_wrote(CUSTOMER, old)
        aged = {"external_id": CUSTOMER, "reply_dm_at": f"{old:.3f}"}
        await adapter.send("fb", aged, {"role": "human", "text": "Back to you", "ref": "h:1"})
        assert fake.sent[-1].body["tag"] == "HUMAN_AGENT"
        with pytest.raises(DeliveryRejected):
            await adapter.send("fb", aged, {"role": "bot", "text": "Reminder", "ref": "r3"})
