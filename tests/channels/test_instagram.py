"""Instagram messaging end to end: our app and a fake Graph API on loopback, signed webhooks
posted the way Meta posts them, the worker loops driven by the test."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from bot.channels.base import DeliveryRejected, RawRequest
from bot.channels.meta import fit_bytes
from bot.channels.registry import ChannelRegistry
from bot.config import AccountConfig
from bot.store import keys as k
from bot.store.keys import conversation_id

from .fakes.graph import (
    APP_SECRET,
    IG_ID,
    VERIFY_TOKEN,
    GraphError,
    GraphFake,
    Harness,
    dumps,
    ig_comment,
    ig_dm,
    ig_echo,
    ig_read,
    ig_story_mention,
    instagram_account,
    running_app,
    sign,
    write_flows,
)

CUSTOMER = "1789400000000777"
CID = conversation_id("instagram", "ig", CUSTOMER)
DAY = 86400.0


@pytest.fixture
async def fake() -> AsyncIterator[GraphFake]:
    async with GraphFake(messaging="instagram") as graph:
        yield graph


@pytest.fixture
async def app(redis: Redis, redis_url: str, fake: GraphFake, tmp_path: Path) -> AsyncIterator[Harness]:
    flows = write_flows(tmp_path / "flows")
    async with running_app(redis_url, fake, {"ig": instagram_account(fake.base_url)}, flows) as harness:
        yield harness


def _sent(fake: GraphFake) -> list[dict[str, Any]]:
    return fake.sent_to(CUSTOMER)


async def _wait_sent(app: Harness, count: int) -> list[dict[str, Any]]:
    await app.until(lambda: len(_sent(app.fake)) >= count, what=f"{count} messages to the customer")
    return _sent(app.fake)


def _quick(body: dict[str, Any]) -> list[dict[str, str]]:
    return body["message"].get("quick_replies") or []


async def _post(app: Harness, payload: Any, **kw: Any) -> tuple[int, Any]:
    return await app.webhook("instagram", "ig", payload, **kw)


# ---------------------------------------------------------------------------- webhook security

async def test_the_verification_handshake(app: Harness) -> None:
    url = app.url("instagram", "ig")
    async with aiohttp.ClientSession() as http:
        ok = {"hub.mode": "subscribe", "hub.challenge": "CHALLENGE_ACCEPTED", "hub.verify_token": VERIFY_TOKEN}
        async with http.get(url, params=ok) as r:
            assert r.status == 200 and await r.text() == "CHALLENGE_ACCEPTED"
        async with http.get(url, params={**ok, "hub.verify_token": VERIFY_TOKEN + "x"}) as r:
            assert r.status == 403


async def test_bad_signatures_and_malformed_bodies_change_nothing(app: Harness, redis: Redis) -> None:
    payload = ig_dm(CUSTOMER, text="Fiyat nedir? äöå")
    body = dumps(payload)
    assert (await _post(app, payload, signature=False))[0] == 401
    assert (await _post(app, payload, signature=sign("not-the-secret", body)))[0] == 403
    assert (await _post(app, payload, signature=sign(APP_SECRET, body + b" ")))[0] == 403
    comment = ig_comment(CUSTOMER, "17900000000000042", "price?")
    assert (await _post(app, comment, signature=False))[0] == 401
    for raw in (b"not json", b'{"object":"instagram"}'):
        status, _ = await app.fake.post_webhook(app.url("instagram", "ig"), None, raw=raw,
                                                signature=sign(APP_SECRET, raw))
        assert status == 400, raw
    # A signed body whose one item is unreadable is acknowledged (Meta disables failing webhooks)
    # and the item skipped.
    raw = b'{"object":"instagram","entry":[{"messaging":[{"message":1}]}]}'
    status, answer = await app.fake.post_webhook(app.url("instagram", "ig"), None, raw=raw,
                                                 signature=sign(APP_SECRET, raw))
    assert (status, answer["items"]) == (200, 0), raw
    await app.drain()
    assert await app.services.store.meta(CID) == {}
    assert await redis.exists(k.ConversationKey(CID).state, k.ConversationKey(CID).meta) == 0
    assert app.fake.calls == []


# ---------------------------------------------------------------------------- the conversation

async def test_a_conversation_from_a_comment_with_quick_replies_a_list_a_pause_and_media(app: Harness) -> None:
    fake = app.fake
    comment_id = "17900000000000001"
    status, answer = await _post(app, ig_comment(CUSTOMER, comment_id, "how much?", username="ana"))
    assert status == 200 and answer["items"] == 1

    # The comment step replies publicly; the next message is the comment's private reply.
    await app.until(lambda: fake.comment_replies and _sent(fake), what="the public and the private reply")
    assert fake.comment_replies == [(comment_id, "Thanks! We sent you a DM.")]
    menu = _sent(fake)[0]
    assert menu["recipient"] == {"comment_id": comment_id}
    assert menu["message"]["text"] == "Hi! What would you like?"
    assert [q["title"] for q in _quick(menu)] == ["Drinks", "Sizes", "Nothing"]
    assert (await app.services.store.meta(CID))["name"] == "ana"

    # Our own public reply comes back as a comment webhook: ignored.
    own = ig_comment(IG_ID, "17900000000000099", "Thanks! We sent you a DM.")
    assert (await _post(app, own))[1]["items"] == 0

    # The customer taps a quick reply in the DM the private reply opened.
    await _post(app, ig_dm(CUSTOMER, text="Drinks", quick_reply=_quick(menu)[0]["payload"]))
    listing = (await _wait_sent(app, 2))[1]
    assert listing["recipient"] == {"id": CUSTOMER} and listing["messaging_type"] == "RESPONSE"
    assert listing["message"]["text"] == "Pick a drink\n\n1. Tea\n2. Coffee\n3. Lemonade\n\nPrices incl. VAT"

    picked_at = time.time()
    await _post(app, ig_dm(CUSTOMER, text="coffee"))
    assert fake.describe((await _wait_sent(app, 3))[2]) == "One coffee coming up."

    # The 2-second pause, then the receipt: its text, then the image.
    sent = await _wait_sent(app, 5)
    assert time.time() - picked_at >= 1.95
    assert [fake.describe(b) for b in sent[3:5]] == ["Here is your receipt.", "[image https://example.com/receipt.jpg]"]

    sizes = (await _wait_sent(app, 6))[5]
    assert sizes["message"]["text"] == "Which size?"
    assert [q["title"] for q in _quick(sizes)] == ["XS", "S", "M", "L", "XL"]
    await _post(app, ig_dm(CUSTOMER, text="M", quick_reply=_quick(sizes)[2]["payload"]))

    flavours = (await _wait_sent(app, 7))[6]
    assert [q["title"] for q in _quick(flavours)] == [f"Flavour {i}" for i in range(1, 14)]
    await _post(app, ig_dm(CUSTOMER, text="Flavour 13", quick_reply=_quick(flavours)[12]["payload"]))
    assert fake.describe((await _wait_sent(app, 8))[7]) == "Thanks, Flavour 13 it is!"

    # An echo of our own message is ignored; a read receipt is recorded.
    assert (await _post(app, ig_echo(CUSTOMER, "Thanks, Flavour 13 it is!")))[1]["items"] == 0
    last_mid = fake.sent[-1].answer["message_id"]
    await _post(app, ig_read(CUSTOMER, last_mid))
    transcript = await app.transcript(CID)
    assert [e["status"] for e in transcript if e.get("event") == "delivery"] == ["read"]
    users = [e for e in transcript if e["role"] == "user"]
    assert users[0]["kind"] == "comment" and users[0]["text"] == "how much?"
    assert [u["text"] for u in users[1:]] == ["Drinks", "coffee", "M", "Flavour 13"]
    state = await app.state(CID)
    assert state.origin == "comment"
    assert state.run is None or not state.run.active


async def test_redelivered_messages_and_comments_are_handled_once(app: Harness) -> None:
    dm = ig_dm(CUSTOMER, text="hi", mid="aWdfZAG1REDELIVERED")
    assert (await _post(app, dm))[0] == 200
    assert (await _post(app, dm))[0] == 200
    await app.drain()
    comment = ig_comment(CUSTOMER, "17900000000000077", "price?")
    assert (await _post(app, comment))[0] == 200
    assert (await _post(app, comment))[0] == 200  # ad comments "may result in duplicate notifications"
    await app.drain()
    users = [e for e in await app.transcript(CID) if e["role"] == "user"]
    assert [u["text"] for u in users] == ["hi", "price?"]
    # The menu once, and once the answer to the comment (it does not match a button).
    assert [app.fake.describe(b).split(" [")[0] for b in _sent(app.fake)] == [
        "Hi! What would you like?", "Please pick one of the options."]


async def test_a_story_mention_starts_a_conversation(app: Harness) -> None:
    url = "https://lookaside.fbsbx.com/ig_messaging_cdn/?asset_id=42"
    assert (await _post(app, ig_story_mention(CUSTOMER, url)))[0] == 200
    menu = (await _wait_sent(app, 1))[0]
    assert menu["recipient"] == {"id": CUSTOMER}
    user = next(e for e in await app.transcript(CID) if e["role"] == "user")
    assert user["attachments"] == [{"kind": "story_mention", "url": url, "name": None}]


# ---------------------------------------------------------------------------- windows

async def _age_dm(app: Harness, redis: Redis, days: float) -> None:
    old = time.time() - days * DAY
    await redis.hset(k.ConversationKey(CID).meta,
                     mapping={"reply_dm_at": f"{old:.3f}", "last_inbound_at": f"{old:.3f}"})
    app.fake.customer_wrote(CUSTOMER, old)


async def test_a_person_replies_with_the_human_agent_tag_within_7_days(app: Harness, redis: Redis) -> None:
    await _post(app, ig_dm(CUSTOMER, text="hi"))
    await _wait_sent(app, 1)
    assert (await app.api("POST", f"/api/conversations/{CID}/takeover"))[0] == 202

    await _age_dm(app, redis, 3)
    await app.api("POST", f"/api/conversations/{CID}/messages", json={"text": "Sorry for the wait!"})
    reply = (await _wait_sent(app, 2))[1]
    assert reply["messaging_type"] == "MESSAGE_TAG" and reply["tag"] == "HUMAN_AGENT"
    assert reply["message"] == {"text": "Sorry for the wait!"}

    await _age_dm(app, redis, 8)
    await app.api("POST", f"/api/conversations/{CID}/messages", json={"text": "Are you there?"})
    await app.drain()
    assert len(_sent(app.fake)) == 2  # beyond 7 days nothing is sent
    assert app.fake.errors == {}  # and the platform was not asked


async def test_a_bot_message_outside_the_window_takes_the_failed_branch(app: Harness, redis: Redis) -> None:
    await _post(app, ig_dm(CUSTOMER, text="hi"))
    await _wait_sent(app, 1)
    await _age_dm(app, redis, 2)
    await app.api("POST", f"/api/conversations/{CID}/start", json={"bot": "ask"})
    await app.drain()
    assert len(_sent(app.fake)) == 1
    assert [e["text"] for e in await app.transcript(CID) if e["role"] == "internal"] == ["delivery failed"]


async def test_a_comment_allows_one_private_reply_until_the_customer_answers(app: Harness) -> None:
    await _post(app, ig_comment(CUSTOMER, "17900000000000005", "info"))
    await app.until(lambda: _sent(app.fake), what="the private reply")
    await app.api("POST", f"/api/conversations/{CID}/start", json={"bot": "ask"})
    await app.drain()
    assert len(_sent(app.fake)) == 1
    assert [e["text"] for e in await app.transcript(CID) if e["role"] == "internal"] == ["delivery failed"]
    # Once the customer writes, the DM is open.
    await _post(app, ig_dm(CUSTOMER, text="hello?"))
    await app.api("POST", f"/api/conversations/{CID}/start", json={"bot": "ask"})
    sent = await _wait_sent(app, 2)
    assert sent[-1]["recipient"] == {"id": CUSTOMER}


# ---------------------------------------------------------------------------- the adapter alone

def _adapter(base_url: str, http: aiohttp.ClientSession) -> Any:
    return ChannelRegistry(use_entry_points=False).create(
        "instagram", account="ig", config=AccountConfig(**instagram_account(base_url)), http=http,
        public_url="https://bot.example.com")


def _signed(body: Any) -> RawRequest:
    raw = dumps(body)
    return RawRequest("POST", "https://bot.example.com/webhooks/instagram/ig",
                      {"X-Hub-Signature-256": sign(APP_SECRET, raw)}, raw)


def test_text_is_split_by_utf8_bytes() -> None:
    text = "ğüşiöç " * 200  # 2 bytes a letter: 1000 characters are ~1800 bytes
    parts = fit_bytes(text, 1000)
    assert len(parts) >= 2 and all(len(p.encode()) <= 1000 for p in parts)
    assert " ".join(parts).split() == text.split()


async def test_long_multibyte_text_is_sent_in_parts_within_1000_bytes(fake: GraphFake) -> None:
    fake.customer_wrote(CUSTOMER)
    chat = {"external_id": CUSTOMER, "reply_dm_at": f"{time.time():.3f}"}
    async with aiohttp.ClientSession() as http:
        adapter = _adapter(fake.base_url, http)
        text = "Çok güzel bir gün. " * 90  # ~1700 characters, ~2000 bytes
        await adapter.send("ig", chat, {"role": "bot", "text": text, "ref": "r1",
                                        "buttons": [{"title": "Tamam", "payload": "ok", "url": None, "number": 1}]})
        bodies = [c.body for c in fake.sent]
        assert len(bodies) >= 2 and all(len(b["message"]["text"].encode()) <= 1000 for b in bodies)
        assert [bool(b["message"].get("quick_replies")) for b in bodies] == [False] * (len(bodies) - 1) + [True]


async def test_send_errors_are_mapped(fake: GraphFake) -> None:
    fake.customer_wrote(CUSTOMER)
    chat = {"external_id": CUSTOMER, "reply_dm_at": f"{time.time():.3f}"}
    async with aiohttp.ClientSession() as http:
        adapter = _adapter(fake.base_url, http)
        fake.scripted.append(GraphError(551, "This person isn't available right now."))
        with pytest.raises(DeliveryRejected):
            await adapter.send("ig", chat, {"role": "bot", "text": "hi", "ref": "r1"})
        # Our own record says the window is open; the platform's 2018278 still becomes a rejection.
        fake.windows.clear()
        with pytest.raises(DeliveryRejected, match="window"):
            await adapter.send("ig", chat, {"role": "bot", "text": "hi", "ref": "r2"})
        # A comment step with no comment to answer does nothing.
        assert await adapter.send("ig", chat, {"role": "bot", "kind": "comment", "text": "hi", "ref": "r3"}) is None


def test_inbound_events_are_normalised() -> None:
    adapter = ChannelRegistry(use_entry_points=False).create(
        "instagram", account="ig", config=AccountConfig(**instagram_account("http://127.0.0.1:9")),
        http=None, public_url="")  # type: ignore[arg-type]
    [media] = adapter.parse(_signed(ig_dm(CUSTOMER, attachments=[
        {"type": "image", "payload": {"url": "https://lookaside.fbsbx.com/img"}}])))
    assert media.attachments[0].kind == "image" and media.attachments[0].url == "https://lookaside.fbsbx.com/img"
    assert media.reply["dm_at"]
    [comment] = adapter.parse(_signed(ig_comment(CUSTOMER, "c-1", "nice", username="bo")))
    assert (comment.kind, comment.chat_id, comment.text, comment.profile_name) == ("comment", CUSTOMER, "nice", "bo")
    assert comment.reply["comment_id"] == "c-1" and comment.dedupe_id == "comment:c-1"
    assert adapter.parse(_signed(ig_echo(CUSTOMER, "x"))) == []
    assert adapter.parse(_signed({"object": "page", "entry": []})) == []
    [read] = adapter.parse(_signed(ig_read(CUSTOMER, "mid.1")))
    assert (read.kind, read.status, read.platform_message_id) == ("status", "read", "mid.1")
