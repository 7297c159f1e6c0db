"""Hostile webhooks over real HTTP: bytes that are not UTF-8 in signature headers, JSON numbers
that overflow to infinity, deep nesting, non-string fields in signed Meta bodies (acknowledged
and skipped: Meta disables a webhook that keeps failing), and platform names with control
characters, which are cleaned before they reach the conversation's metadata."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from bot.store.keys import conversation_id
from tests.rawhttp import raw_request

from .fakes.graph import (
    APP_SECRET,
    GraphFake,
    Harness,
    dumps,
    ig_dm,
    instagram_account,
    running_app,
    sign,
    wa_message,
    wa_text,
    wa_webhook,
    whatsapp_account,
    write_flows,
)
from .fakes.telegram import FakeTelegram, text_update
from .test_telegram import SECRET, TOKEN, running

CUSTOMER = "16505551234"
CID = conversation_id("whatsapp", "wa", CUSTOMER)
DEEP = b"[" * 10_000 + b"]" * 10_000


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.exc_info]


@pytest.fixture
async def graph() -> AsyncIterator[GraphFake]:
    async with GraphFake() as fake:
        yield fake


@pytest.fixture
async def app(redis: Redis, redis_url: str, graph: GraphFake, tmp_path: Path) -> AsyncIterator[Harness]:
    accounts = {"wa": whatsapp_account(graph.base_url, greeting_bot="hello"),
                "ig": instagram_account(graph.base_url, greeting_bot="hello")}
    async with running_app(redis_url, graph, accounts, write_flows(tmp_path / "flows")) as harness:
        yield harness


async def _post_raw(app: Harness, channel: str, account: str, body: bytes,
                    signature: bytes | None = None) -> tuple[int, Any]:
    headers = [(b"Content-Type", b"application/json"),
               (b"X-Hub-Signature-256", signature if signature is not None else sign(APP_SECRET, body).encode())]
    path = f"/webhooks/{channel}/{account}".encode()
    app.fake.customer_wrote(CUSTOMER)  # what Meta knows: its window is open for our answers
    status, answer = await raw_request(str(app.server.make_url("")), "POST", path, headers, body)
    return status, json.loads(answer) if answer.startswith(b"{") else answer


# ---------------------------------------------------------------------- Meta / WhatsApp
async def test_signature_headers_with_bytes_that_are_not_utf8_are_refused(
        app: Harness, caplog: pytest.LogCaptureFixture) -> None:
    body = dumps(wa_text(CUSTOMER, "hi"))
    for channel, account in (("whatsapp", "wa"), ("instagram", "ig")):
        status, _ = await _post_raw(app, channel, account, body, signature=b"sha256=\xff\xfe" + b"0" * 60)
        assert status == 403
        status, _ = await _post_raw(app, channel, account, body, signature=b"sha256=\xc3\xa9")
        assert status == 403
    assert await app.services.store.meta(CID) == {}
    assert tracebacks(caplog) == []


@pytest.mark.parametrize("raw", [DEEP, b'{"object":"whatsapp_business_account","entry":[],"n":NaN}',
                                 b'{"object":"whatsapp_business_account","entry":[{"id":1e400}]}'])
async def test_signed_bodies_that_are_not_strict_json_are_400(
        app: Harness, caplog: pytest.LogCaptureFixture, raw: bytes) -> None:
    status, answer = await _post_raw(app, "whatsapp", "wa", raw)
    assert status == 400, answer
    assert answer["error"]["code"] == "malformed"
    assert tracebacks(caplog) == []


@pytest.mark.parametrize(("field", "value"), [
    ("text", {"body": 5}), ("text", {"body": ["x"]}), ("from", []), ("from", {"a": 1}), ("id", 5.5)])
async def test_a_signed_whatsapp_message_with_a_non_string_field_is_acknowledged_and_skipped(
        app: Harness, caplog: pytest.LogCaptureFixture, field: str, value: Any) -> None:
    bad = wa_text(CUSTOMER, "hi")
    msg = bad["entry"][0]["changes"][0]["value"]["messages"][0]
    msg[field] = value
    status, answer = await _post_raw(app, "whatsapp", "wa", dumps(bad))
    assert (status, answer) == (200, {"ok": True, "items": 0})
    assert "webhook.bad_item" in [r.getMessage() for r in caplog.records]
    await app.drain()
    assert await app.services.store.meta(CID) == {}
    # The next, well-formed message is handled as the conversation's first.
    status, answer = await _post_raw(app, "whatsapp", "wa", dumps(wa_text(CUSTOMER, "hello")))
    assert (status, answer["items"]) == (200, 1)
    await app.until(lambda: app.fake.sent_to(CUSTOMER), what="the greeting")
    assert tracebacks(caplog) == []


async def test_one_bad_item_does_not_drop_the_good_ones_of_the_batch(app: Harness) -> None:
    good = wa_message(CUSTOMER, "text", {"body": "fine"})["entry"][0]["changes"][0]["value"]
    batch = wa_webhook(messages=[{"from": [], "id": "wamid.bad", "type": "text", "text": {"body": "x"}},
                                 *good["messages"]], contacts=good["contacts"])
    status, answer = await _post_raw(app, "whatsapp", "wa", dumps(batch))
    assert (status, answer["items"]) == (200, 1)
    await app.until(lambda: app.fake.sent_to(CUSTOMER), what="the greeting")


@pytest.mark.parametrize(("name", "clean"), [("a\u001fb\u001fc", "abc"), ("Zoe\x00\x1b[31m", "Zoe[31m"),
                                             ("n" * 10_000, "n" * 100)])
async def test_a_profile_name_with_control_characters_is_cleaned_and_the_conversation_answers(
        app: Harness, caplog: pytest.LogCaptureFixture, name: str, clean: str) -> None:
    status, answer = await _post_raw(app, "whatsapp", "wa", dumps(wa_text(CUSTOMER, "hi\x00", name=name)))
    assert (status, answer["items"]) == (200, 1)
    await app.until(lambda: app.fake.sent_to(CUSTOMER), what="the greeting")
    assert app.fake.sent_to(CUSTOMER)[0]["text"]["body"] == f"Hello {clean}!"
    meta = await app.services.store.meta(CID)
    assert meta["name"] == clean
    users = [e for e in await app.transcript(CID) if e["role"] == "user"]
    assert users[0]["text"] == "hi"
    status, listed = await app.api("GET", "/api/conversations", params={"q": clean[:20]})
    assert status == 200 and [c["id"] for c in listed["conversations"]] == [CID]
    assert tracebacks(caplog) == []


async def test_an_instagram_event_with_a_non_string_text_is_skipped(app: Harness) -> None:
    payload = ig_dm("1789400000000777", text="hi")
    payload["entry"][0]["messaging"][0]["message"]["text"] = {"nested": True}
    status, answer = await _post_raw(app, "instagram", "ig", dumps(payload))
    assert (status, answer) == (200, {"ok": True, "items": 0})


# ---------------------------------------------------------------------- Telegram
async def test_telegram_secret_with_bad_bytes_chat_id_1e400_and_deep_json_are_4xx(
        redis: Redis, redis_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with FakeTelegram() as fake:
        fake.add_bot(TOKEN)
        async with running(redis_url, tmp_path, fake) as h:
            base, path = str(h.server.make_url("")), b"/webhooks/telegram/tg"
            body = json.dumps(text_update(1, 4301, "hi")).encode()
            status, _ = await raw_request(base, "POST", path, [(b"X-Telegram-Bot-Api-Secret-Token", b"\xff\xfe")], body)
            assert status == 403
            good = [(b"X-Telegram-Bot-Api-Secret-Token", SECRET.encode()), (b"Content-Type", b"application/json")]
            overflow = body.replace(b'"id": 4301', b'"id": 1e400')
            assert overflow != body
            for bad in (overflow, DEEP, body.replace(b'"update_id": 1', b'"update_id": NaN')):
                status, _ = await raw_request(base, "POST", path, good, bad)
                assert status == 400, bad[:80]
            assert await h.services.store.meta("telegram:tg:4301") == {}
            update = text_update(2, 4302, "/start")
            update["message"]["from"]["first_name"] = "Ana\x1f\x00"
            update["message"]["chat"]["first_name"] = "Ana\x1f\x00"
            assert await h.post(update) == 200
            await h.wait_sent(4302, 1)
            assert (await h.services.store.meta("telegram:tg:4302"))["name"] == "Ana"
    assert tracebacks(caplog) == []


# ---------------------------------------------------------------------- Twilio
async def test_a_twilio_profile_name_with_control_characters_is_cleaned(
        redis: Redis, redis_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from .fakes.twilio_api import FakeTwilio, twilio_account
    from .fakes.twilio_api import running_app as twilio_app
    from .fakes.twilio_api import write_flows as twilio_flows

    customer, sender = "+15551234567", "+14155238886"
    async with FakeTwilio(account_sid="AC" + "1f" * 16, auth_token="wa-auth-token-0001") as fake, \
            twilio_app(redis_url, fake, {"wa": twilio_account(fake, "twilio", from_number=sender)},
                       twilio_flows(tmp_path / "flows")) as app:
        params = fake.inbound(to=f"whatsapp:{sender}", from_=f"whatsapp:{customer}", body="hi\x00",
                              profile_name="a\x1fb\x1fc\x00")
        post = await fake.post(app.url("twilio", "wa"), params)
        assert post.status == 200
        cid = conversation_id("twilio", "wa", customer)
        await app.until(lambda: fake.sent, what="the greeting")
        meta = await app.services.store.meta(cid)
        assert meta["name"] == "abc"
    assert tracebacks(caplog) == []
