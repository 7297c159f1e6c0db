"""What a hostile tester of the channel webhooks found, each over real HTTP against the fakes:
a body-hash query that crashed Twilio's signature check, the bot token in a polling log line,
service messages answered as if the customer wrote, another Page's events answered with this
account's token, broken Meta timestamps deciding the messaging window, a redelivered click
answered twice, and Meta handshake failures that left no trace."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis
from twilio.request_validator import RequestValidator

from bot.channels import meta
from bot.channels.base import DeliveryTemporary, RawRequest
from bot.channels.twilio import TwilioAdapter
from bot.store.keys import conversation_id
from tests.waiting import wait_for

from .fakes.graph import (
    PAGE_ID,
    VERIFY_TOKEN,
    GraphFake,
    Harness,
    dm,
    dumps,
    ig_dm,
    instagram_account,
    messaging_webhook,
    messenger_account,
    wa_message,
    wa_text,
    whatsapp_account,
)
from .fakes.graph import running_app as graph_app
from .fakes.graph import write_flows as graph_flows
from .fakes.telegram import FakeTelegram, callback_update, text_update
from .fakes.twilio_api import FakeTwilio, TwilioHarness, twilio_account
from .fakes.twilio_api import running_app as twilio_app
from .fakes.twilio_api import write_flows as twilio_flows
from .test_telegram import TOKEN, running

ACCOUNT_SID = "AC" + "2e" * 16
AUTH_TOKEN = "hardening-auth-token"
SENDER = "+14155238886"
OTHER_PAGE = "1111111111"


def _records(caplog: pytest.LogCaptureFixture, event: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == event]


def _everything_logged(caplog: pytest.LogCaptureFixture) -> str:
    """Every captured record's message and fields, as one text to search for a secret (but the
    fake platforms' own access logs, which show the paths they were called on)."""
    return "\n".join(f"{r.getMessage()} {vars(r)!r}" for r in caplog.records if r.name != "aiohttp.access")


# ---------------------------------------------------------------------------- Twilio: body hash queries
@pytest.fixture
async def twilio(redis: Redis, redis_url: str, tmp_path: Path) -> AsyncIterator[TwilioHarness]:
    async with FakeTwilio(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN) as fake:
        accounts = {"wa": twilio_account(fake, "twilio", from_number=SENDER),
                    "txt": twilio_account(fake, "sms", from_number=SENDER)}
        async with twilio_app(redis_url, fake, accounts, twilio_flows(tmp_path / "flows")) as harness:
            yield harness


@pytest.mark.parametrize("channel", ["twilio", "sms"])
@pytest.mark.parametrize("query", ["foo=bodySHA256", "xbodySHA256=1", "bodySHA256", "bodySHA256="])
async def test_a_query_that_only_mentions_bodySHA256_is_a_403_not_a_500(
        twilio: TwilioHarness, caplog: pytest.LogCaptureFixture, channel: str, query: str) -> None:
    account = "wa" if channel == "twilio" else "txt"
    url = f"{twilio.url(channel, account)}?{query}"
    post = await twilio.fake.post(url, [("a", "b")], signature="anything")
    assert post.status == 403, post.text
    assert '"bad_signature"' in post.text
    assert len(_records(caplog, "webhook.rejected")) == 1
    assert [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR] == []


async def test_a_json_body_signed_with_its_hash_still_verifies(twilio: TwilioHarness) -> None:
    """Twilio's JSON-bodied webhooks: the body's SHA-256 in ``bodySHA256``, the signature over the URL."""
    body = '{"MessageSid": "SM1", "Body": "hi"}'
    digest = hashlib.sha256(body.encode()).hexdigest()
    url = f"{twilio.url('twilio', 'wa')}?bodySHA256={digest}"
    signature = RequestValidator(AUTH_TOKEN).compute_signature(url, {})
    adapter = twilio.services.adapters["wa"]
    assert isinstance(adapter, TwilioAdapter)
    adapter.verify(RawRequest("POST", url, {"X-Twilio-Signature": signature}, body.encode()))
    async with aiohttp.ClientSession() as http:
        local = str(twilio.server.make_url(f"/webhooks/twilio/wa?bodySHA256={digest}"))
        async with http.post(local, data=body.encode(), headers={"X-Twilio-Signature": signature,
                                                                  "Content-Type": "application/json"}) as resp:
            # verified; then not a form Twilio posts for messages: 400, not 403
            assert resp.status == 400 and (await resp.json())["error"]["code"] == "malformed"
        async with http.post(local, data=body.encode() + b" ", headers={"X-Twilio-Signature": signature,
                                                                         "Content-Type": "application/json"}) as resp:
            assert resp.status == 403  # the body no longer matches its hash


# ---------------------------------------------------------------------------- Telegram
async def test_polling_through_a_redirecting_api_never_logs_the_bot_token(
        redis: Redis, redis_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with FakeTelegram() as fake:
        fake.add_bot(TOKEN)
        fake.redirect = "ftp://files.example.com"
        async with running(redis_url, tmp_path, fake, settings={"mode": "polling", "poll_timeout": 1},
                           webhook=False) as h:
            await wait_for(lambda: _records(caplog, "telegram.poll_failed"), what="telegram.poll_failed")
            adapter = h.services.adapters["tg"]
            with pytest.raises(DeliveryTemporary) as raised:  # the send path: the same redirect, redacted alike
                await adapter.send("tg", {"external_id": "42"}, {"text": "hi"})
            assert TOKEN not in str(raised.value) and "<token>" in str(raised.value)
    failed = _records(caplog, "telegram.poll_failed")[0]
    assert "<token>" in failed.error  # type: ignore[attr-defined]
    logged = _everything_logged(caplog)
    assert TOKEN not in logged and TOKEN.split(":", 1)[1] not in logged


SERVICE_MESSAGES: dict[str, dict[str, Any]] = {
    "new_chat_members": {"new_chat_members": [{"id": 9, "is_bot": False, "first_name": "Bo"}]},
    "left_chat_member": {"left_chat_member": {"id": 9, "is_bot": False, "first_name": "Bo"}},
    "pinned_message": {"pinned_message": {"message_id": 1, "date": 1, "chat": {"id": 4301, "type": "private"}}},
    "message_auto_delete_timer_changed": {"message_auto_delete_timer_changed": {"message_auto_delete_time": 86400}},
    "dice": {"dice": {"emoji": "🎲", "value": 4}},
    "poll": {"poll": {"id": "5", "question": "?", "options": [], "total_voter_count": 0, "is_closed": False,
                      "is_anonymous": True, "type": "regular", "allows_multiple_answers": False}},
    "story": {"story": {"chat": {"id": 7, "type": "private"}, "id": 3}},
    "empty": {},
}


async def test_service_and_unsupported_messages_are_acknowledged_and_ignored(
        redis: Redis, redis_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="salesbot")
    chat = 4301
    async with FakeTelegram() as fake:
        fake.add_bot(TOKEN)
        async with running(redis_url, tmp_path, fake) as h:
            for extra in SERVICE_MESSAGES.values():
                update = text_update(h.update_id(), chat, "")
                del update["message"]["text"]
                update["message"].update(extra)
                assert await h.post(update) == 200
            assert await h.transcript(chat) == []
            assert await h.services.store.meta(f"telegram:tg:{chat}") == {}
            assert await h.says(chat, "/start real") == 200  # the first thing the flow sees
            [hello] = await h.wait_sent(chat, 1)
            assert hello.text == "Hi! You came from real."
            assert [e["text"] for e in await h.transcript(chat) if e["role"] == "user"] == ["/start real"]
    ignored = [r.type for r in _records(caplog, "webhook.ignored_message_type")]  # type: ignore[attr-defined]
    assert ignored == list(SERVICE_MESSAGES)


async def test_a_redelivered_click_is_answered_once(
        redis: Redis, redis_url: str, tmp_path: Path) -> None:
    chat = 4302
    async with FakeTelegram() as fake:
        fake.add_bot(TOKEN)
        async with running(redis_url, tmp_path, fake) as h:
            await h.says(chat, "/start")
            [hello] = await h.wait_sent(chat, 1)
            click = callback_update(h.update_id(), chat, hello.keyboard[0][0]["callback_data"], hello)
            assert await h.post(click) == 200
            assert await h.post(click) == 200  # Telegram's redelivery: same update_id, same query id
            assert await h.post(click) == 200
            await h.wait_sent(chat, 2)
            assert len(fake.answers) == 1


# ---------------------------------------------------------------------------- Meta
CUSTOMER = "24688001357900"
WA_CUSTOMER = "16505551234"


@pytest.fixture
async def graph() -> AsyncIterator[GraphFake]:
    async with GraphFake(messaging="messenger") as fake:
        yield fake


@pytest.fixture
async def app(redis: Redis, redis_url: str, graph: GraphFake, tmp_path: Path) -> AsyncIterator[Harness]:
    open_fb = messenger_account(graph.base_url)
    open_fb["credentials"] = {k: v for k, v in open_fb["credentials"].items() if k != "page_id"}
    accounts = {"fb": messenger_account(graph.base_url), "ig": instagram_account(graph.base_url),
                "wa": whatsapp_account(graph.base_url), "open": open_fb}
    async with graph_app(redis_url, graph, accounts, graph_flows(tmp_path / "flows")) as harness:
        yield harness


@pytest.mark.parametrize("payload", [
    messaging_webhook("page", [dm(CUSTOMER, OTHER_PAGE, text="hi")], OTHER_PAGE),
    messaging_webhook("page", [dm(CUSTOMER, OTHER_PAGE, text="hi")], PAGE_ID),  # the event names another Page
    messaging_webhook("page", [dm(CUSTOMER, PAGE_ID, text="hi")], OTHER_PAGE),
], ids=["entry-and-recipient", "recipient", "entry"])
async def test_another_pages_events_are_acknowledged_and_ignored(
        app: Harness, caplog: pytest.LogCaptureFixture, payload: dict[str, Any]) -> None:
    caplog.set_level(logging.INFO, logger="salesbot")
    status, answer = await app.webhook("messenger", "fb", payload)
    assert (status, answer) == (200, {"ok": True, "items": 0})
    assert _records(caplog, "webhook.other_account")
    await app.drain()
    assert app.fake.sent == [] and app.fake.calls == []
    assert await app.services.store.meta(conversation_id("messenger", "fb", CUSTOMER)) == {}
    # This Page's own event on the same URL is answered.
    status, answer = await app.webhook("messenger", "fb", messaging_webhook(
        "page", [dm(CUSTOMER, PAGE_ID, text="hi")], PAGE_ID))
    assert (status, answer["items"]) == (200, 1)
    await app.until(lambda: app.fake.sent_to(CUSTOMER), what="the greeting")


async def test_another_instagram_accounts_events_are_ignored(app: Harness) -> None:
    other = ig_dm(CUSTOMER, text="hi")
    other["entry"][0]["id"] = "17841400000000999"
    other["entry"][0]["messaging"][0]["recipient"]["id"] = "17841400000000999"
    assert await app.webhook("instagram", "ig", other) == (200, {"ok": True, "items": 0})
    assert await app.webhook("instagram", "ig", ig_dm(CUSTOMER, text="hi")) == (200, {"ok": True, "items": 1})


async def test_without_a_page_id_every_pages_events_are_answered_as_before(app: Harness) -> None:
    """Documented: an account that does not name its Page cannot tell another Page's events."""
    payload = messaging_webhook("page", [dm(CUSTOMER, OTHER_PAGE, text="hi")], OTHER_PAGE)
    assert await app.webhook("messenger", "open", payload) == (200, {"ok": True, "items": 1})


@pytest.mark.parametrize("stamp", ["nan", "NaN", "inf", "-inf", 99999999999999, "1e30", -5, 0])
async def test_a_broken_timestamp_neither_closes_nor_holds_open_the_window(app: Harness, stamp: Any) -> None:
    event = dm(CUSTOMER, PAGE_ID, text="hi")
    event["timestamp"] = stamp
    started = time.time()
    app.fake.customer_wrote(CUSTOMER)  # Meta's own clock: the customer wrote now
    status, answer = await app.fake.post_webhook(app.url("messenger", "fb"), None,
                                                 raw=dumps(messaging_webhook("page", [event], PAGE_ID)))
    assert (status, answer["items"]) == (200, 1)
    await app.until(lambda: app.fake.sent_to(CUSTOMER), what="the greeting, inside the window")
    dm_at = float((await app.services.store.meta(conversation_id("messenger", "fb", CUSTOMER)))["reply_dm_at"])
    assert started - 1 <= dm_at <= time.time() + 1  # now: the item's own stamp was refused


def test_meta_timestamps_in_seconds_or_milliseconds() -> None:
    now = time.time()
    assert meta.seconds(int(now * 1000)) == pytest.approx(now, abs=0.01)
    assert meta.seconds(str(int(now))) == int(now)
    assert meta.seconds(now - 3 * meta.DAY) == now - 3 * meta.DAY  # a late redelivery keeps its time
    assert meta.seconds(now + 2 * meta.DAY) is None
    assert meta.number("nan") is None and meta.number("inf") is None and meta.number("12.5") == 12.5


async def test_a_whatsapp_flows_answer_is_ignored(app: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="salesbot")
    nfm = wa_message(WA_CUSTOMER, "interactive", {"type": "nfm_reply", "nfm_reply": {
        "name": "flow", "body": "Sent", "response_json": '{"flow_token": "t", "size": "L"}'}})
    assert await app.webhook("whatsapp", "wa", nfm) == (200, {"ok": True, "items": 0})
    assert [r.type for r in _records(caplog, "webhook.ignored_message_type")] == [  # type: ignore[attr-defined]
        "interactive.nfm_reply"]
    await app.drain()
    assert app.fake.sent_to(WA_CUSTOMER) == []
    assert await app.webhook("whatsapp", "wa", wa_text(WA_CUSTOMER, "hi")) == (200, {"ok": True, "items": 1})
    await app.until(lambda: app.fake.sent_to(WA_CUSTOMER), what="the greeting")


@pytest.mark.parametrize(("params", "reason"), [
    ({"hub.mode": "subscribe", "hub.challenge": "7", "hub.verify_token": "wrong-token"}, "does not match"),
    ({"hub.mode": "unsubscribe", "hub.challenge": "7", "hub.verify_token": VERIFY_TOKEN}, "hub.mode"),
    ({"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN}, "hub.challenge"),
])
async def test_a_failed_handshake_is_logged_without_the_token(
        app: Harness, caplog: pytest.LogCaptureFixture, params: dict[str, str], reason: str) -> None:
    async with aiohttp.ClientSession() as http, http.get(app.url("messenger", "fb"), params=params) as resp:
        assert resp.status == 403
    (rejected,) = _records(caplog, "webhook.rejected")
    assert reason in rejected.reason and rejected.method == "GET"  # type: ignore[attr-defined]
    logged = _everything_logged(caplog)
    assert VERIFY_TOKEN not in logged and "wrong-token" not in logged
