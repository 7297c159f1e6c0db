"""Telegram end to end over real HTTP on loopback: a fake Bot API server receives our sends, and
updates are posted to our server's webhook the way Telegram posts them (or fetched by long
polling). The app runs with role ``all`` (its worker fires timers and drains the outbox); the
tests wait on what the fake receives, with bounded waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis
from telegram.error import ChatMigrated, NetworkError, RetryAfter

from bot.channels import telegram as tg
from bot.channels.base import MalformedWebhook, RawRequest, WebhookRejected
from bot.config import AccountConfig, load_config
from bot.server.app import create_app
from bot.server.keys import SERVICES
from bot.server.services import Services
from bot.store import codec
from bot.store.outbox import AccountLimits, DeliveryRejected, DeliveryTemporary
from tests.server.conftest import NO_AUTOMATIONS

from .fakes.telegram import FakeTelegram, SentRecord, callback_update, photo_update, text_update

TOKEN = "654321:e2e-token"
SECRET = "e2e-Secret_token-42"
LONG_ROW_ID = "rugs_" + "x" * 70  # over 64 bytes: its callback_data becomes the row's number

FLOW = {
    "format": "salesbot.flow/1", "id": "tgdemo", "name": "Telegram end-to-end", "start": "hello",
    "steps": {
        "hello": {"type": "message",
                  "text": "Hi! You came from {{ message.start_param | default('nowhere', true) }}.",
                  "buttons": [{"title": "Catalog", "next": "catalog"},
                              {"title": "Remind me later", "synonyms": ["later"], "next": "later"},
                              {"title": "Website", "url": "https://lalehome.example.com"}],
                  "other_answer": "not_understood"},
        "not_understood": {"type": "message", "text": "Sorry, please tap a button.", "next": "done"},
        "catalog": {"type": "list", "header": "Catalog", "text": "Which catalog would you like?",
                    "footer": "Prices include VAT", "button": "Choose a catalog",
                    "sections": [
                        {"title": "Furniture", "rows": [
                            {"id": "living_room", "title": "Living room", "description": "Sofas and armchairs",
                             "next": "cat_other"},
                            {"id": "bedroom", "title": "Bedroom", "description": "Beds and wardrobes",
                             "next": "cat_bedroom"}]},
                        {"title": "Textiles", "rows": [
                            {"id": "curtains", "title": "Curtains", "next": "cat_other"},
                            {"id": LONG_ROW_ID, "title": "Rugs", "next": "cat_rugs"}]}],
                    "other_answer": "not_understood"},
        "cat_bedroom": {"type": "message", "text": "Here is our bedroom catalog 🛏️",
                        "attachments": [{"kind": "image", "url": "https://lalehome.example.com/img/bedroom.jpg"}],
                        "next": "later"},
        "cat_rugs": {"type": "message", "text": "Rugs catalog",
                     "attachments": [{"kind": "document", "url": "https://lalehome.example.com/pdf/rugs.pdf",
                                      "name": "Rugs.pdf"}],
                     "next": "done"},
        "cat_other": {"type": "message", "text": "Coming soon.", "next": "done"},
        "later": {"type": "message", "text": "I'll check back with you in 2 seconds.", "next": "wait"},
        "wait": {"type": "pause", "until": [{"on": "message", "next": "early"},
                                            {"on": "timer", "after": "2s", "next": "followup"}]},
        "early": {"type": "message", "text": "You were quick!", "next": "done"},
        "followup": {"type": "message", "text": "Still there? Send us a photo of your room 📷", "next": "wait_photo"},
        "wait_photo": {"type": "pause", "until": [{"on": "message", "next": "thanks"}]},
        "thanks": {"type": "message",
                   "text": "Thanks! We got your {{ message.attachments[0].kind }}: {{ message.text }}",
                   "next": "done"},
        "done": {"type": "stop"},
    },
}

BURST = {
    "format": "salesbot.flow/1", "id": "burst", "name": "Three messages at once", "start": "m1",
    "steps": {"m1": {"type": "message", "text": "Burst one", "next": "m2"},
              "m2": {"type": "message", "text": "Burst two", "next": "m3"},
              "m3": {"type": "message", "text": "Burst three", "next": "done"},
              "done": {"type": "stop"}},
}


# ---------------------------------------------------------------------- harness
class Harness:
    def __init__(self, fake: FakeTelegram, server: TestServer) -> None:
        self.fake = fake
        self.server = server
        self.http: aiohttp.ClientSession | None = None

    @property
    def services(self) -> Services:
        return self.server.app[SERVICES]

    @property
    def webhook(self) -> str:
        return str(self.server.make_url("/webhooks/telegram/tg"))

    def update_id(self) -> int:
        return self.fake.next_update_id(TOKEN)

    async def post(self, update: dict[str, Any], **kwargs: Any) -> int | None:
        return await self.fake.send_update(TOKEN, update, **kwargs)

    async def says(self, chat: int, text: str) -> int | None:
        return await self.post(text_update(self.update_id(), chat, text))

    async def clicks(self, chat: int, record: SentRecord, title: str) -> int | None:
        data = next(b["callback_data"] for row in record.keyboard for b in row if b.get("text") == title)
        return await self.post(callback_update(self.update_id(), chat, data, record))

    async def wait_sent(self, chat: int, count: int, timeout: float = 15.0) -> list[SentRecord]:
        await self.fake.wait_for(lambda f: len(f.sent_to(chat)) >= count, timeout)
        return self.fake.sent_to(chat)

    async def transcript(self, chat: int) -> list[dict[str, Any]]:
        rows = await self.services.store.read_log(f"telegram:tg:{chat}", 0, 1000)
        return [codec.unpack(blob) for _, blob in rows]


def _write_flows(tmp_path: Path) -> Path:
    flows = tmp_path / "flows"
    flows.mkdir(exist_ok=True)
    (flows / "tgdemo.json").write_text(json.dumps(FLOW))
    (flows / "burst.json").write_text(json.dumps(BURST))
    return flows


@contextlib.asynccontextmanager
async def running(redis_url: str, tmp_path: Path, fake: FakeTelegram, *, greeting: str = "tgdemo",
                  settings: dict[str, Any] | None = None, webhook: bool = True) -> AsyncIterator[Harness]:
    config = load_config(env={}, overrides={
        "redis_url": redis_url, "flows_dir": str(_write_flows(tmp_path)), "admin_token": "t",
        "automations_dir": str(NO_AUTOMATIONS),
        "timer_poll_interval": 0.05, "shutdown_grace": 5,
        "accounts": {"tg": {"channel": "telegram", "greeting_bot": greeting, "api_base_url": fake.url,
                            "credentials": {"token": TOKEN, "secret_token": SECRET},
                            "settings": settings or {}}}})
    server = TestServer(create_app(config, role="all"), host="127.0.0.1")
    await server.start_server()
    harness = Harness(fake, server)
    if webhook:  # what setWebhook(url, secret_token=...) would have registered
        fake.bots[TOKEN].webhook_url, fake.bots[TOKEN].webhook_secret = harness.webhook, SECRET
    try:
        yield harness
    finally:
        await server.close()


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as f:
        f.add_bot(TOKEN)
        yield f


# ---------------------------------------------------------------------- end to end
async def test_a_full_conversation_with_buttons_a_list_a_pause_and_media(
        redis: Redis, redis_url: str, tmp_path: Path, fake: FakeTelegram) -> None:
    chat = 4201
    async with running(redis_url, tmp_path, fake) as h:
        assert await h.says(chat, "/start promo42") == 200
        [hello] = await h.wait_sent(chat, 1)
        assert hello.method == "sendMessage"
        assert hello.text == "Hi! You came from promo42."  # the deep link parameter reached the flow
        assert [[b["text"] for b in row] for row in hello.keyboard] == [["Catalog", "Remind me later"], ["Website"]]
        assert hello.keyboard[1][0]["url"] == "https://lalehome.example.com"

        await h.clicks(chat, hello, "Catalog")
        _, catalog = await h.wait_sent(chat, 2)
        assert len(fake.answers) == 1 and fake.answers[0]["callback_query_id"].startswith("cbq")
        assert [[b["text"] for b in row] for row in catalog.keyboard] == [["Living room"], ["Bedroom"], ["Curtains"],
                                                                          ["Rugs"]]
        assert catalog.text.startswith("Catalog\n\nWhich catalog would you like?")
        assert "Bedroom — Beds and wardrobes" in catalog.text and catalog.text.endswith("Prices include VAT")
        assert catalog.keyboard[3][0]["callback_data"] == "~4"  # the 75-byte row id does not fit

        said = time.monotonic()
        await h.says(chat, "2")  # typed: the row's number
        *_, photo, later = await h.wait_sent(chat, 4)
        assert photo.method == "sendPhoto" and photo.file == "https://lalehome.example.com/img/bedroom.jpg"
        assert photo.text == "Here is our bedroom catalog 🛏️"  # the text went as the caption
        assert later.text == "I'll check back with you in 2 seconds."
        assert later.at - photo.at >= 0.9  # one message a second to a chat

        *_, followup = await h.wait_sent(chat, 5)  # the pause's 2 s timer fired
        assert followup.text.startswith("Still there?")
        assert followup.at - said >= 1.9  # the timer was set when "later" ran, not when it was delivered

        await h.post(photo_update(h.update_id(), chat, caption="my living room"))
        *_, thanks = await h.wait_sent(chat, 6)
        assert thanks.text == "Thanks! We got your image: my living room"

        transcript = await h.transcript(chat)
        users = [e for e in transcript if e["role"] == "user"]
        assert [u["text"] for u in users] == ["/start promo42", "Catalog", "2", "my living room"]
        assert users[1]["payload"] and users[1]["kind"] == "button"
        assert users[3]["attachments"] == [{"kind": "image", "url": "tg-file:AgAC-large", "name": None}]
        assert fake.rate_limited == 0, [(c[0], c[2], round(c[3] - fake.calls[0][3], 3)) for c in fake.calls]
        assert fake.rate_limited == 0 and fake.retry_violations == 0


async def test_a_click_on_an_option_whose_payload_did_not_fit_maps_back_by_number(
        redis: Redis, redis_url: str, tmp_path: Path, fake: FakeTelegram) -> None:
    chat = 4202
    async with running(redis_url, tmp_path, fake) as h:
        await h.says(chat, "/start")
        [hello] = await h.wait_sent(chat, 1)
        assert hello.text == "Hi! You came from nowhere."
        await h.clicks(chat, hello, "Catalog")
        _, catalog = await h.wait_sent(chat, 2)
        await h.clicks(chat, catalog, "Rugs")  # callback_data "~4"
        *_, rugs = await h.wait_sent(chat, 3)
        assert rugs.method == "sendDocument" and rugs.file == "https://lalehome.example.com/pdf/rugs.pdf"
        assert rugs.text == "Rugs catalog"
        assert len(fake.answers) == 2  # every click is answered (answerCallbackQuery)


async def test_a_wrong_or_missing_secret_or_a_malformed_body_changes_nothing(
        redis: Redis, redis_url: str, tmp_path: Path, fake: FakeTelegram) -> None:
    chat = 4203
    async with running(redis_url, tmp_path, fake) as h:
        assert await h.post(text_update(h.update_id(), chat, "/start wrong"), secret="not-the-secret") == 403
        assert await h.post(text_update(h.update_id(), chat, "/start missing"), secret=None) == 401
        async with aiohttp.ClientSession() as http:
            for body in (b"{not json", b"[]", b'{"update_id": "x"}',
                         b'{"update_id": 5, "message": {"text": "no chat"}}'):
                async with http.post(h.webhook, data=body, headers={"X-Telegram-Bot-Api-Secret-Token": SECRET,
                                                                    "Content-Type": "application/json"}) as resp:
                    assert resp.status == 400, body
        assert await h.transcript(chat) == []
        assert await h.services.store.meta(f"telegram:tg:{chat}") == {}
        # A valid update afterwards is the first thing the flow ever sees of this chat.
        assert await h.says(chat, "/start valid") == 200
        [hello] = await h.wait_sent(chat, 1)
        assert hello.text == "Hi! You came from valid."
        assert [e["text"] for e in await h.transcript(chat) if e["role"] == "user"] == ["/start valid"]


async def test_a_redelivered_update_is_handled_once(
        redis: Redis, redis_url: str, tmp_path: Path, fake: FakeTelegram) -> None:
    chat = 4204
    async with running(redis_url, tmp_path, fake) as h:
        update = text_update(h.update_id(), chat, "/start once")
        assert await h.post(update) == 200
        assert await h.post(update) == 200  # Telegram retries until it sees a 2XX: same update_id
        [hello] = await h.wait_sent(chat, 1)
        click = callback_update(h.update_id(), chat, hello.keyboard[0][0]["callback_data"], hello)
        assert await h.post(click) == 200
        assert await h.post(click) == 200
        await h.says(chat, "a later message")  # a sync point: handled after both duplicates
        sent = await h.wait_sent(chat, 3)
        assert [s.text.split("\n")[0] for s in sent] == ["Hi! You came from once.", "Catalog",
                                                         "Sorry, please tap a button."]
        users = [e["text"] for e in await h.transcript(chat) if e["role"] == "user"]
        assert users == ["/start once", "Catalog", "a later message"]


async def test_a_429_retry_after_is_honoured(redis: Redis, redis_url: str, tmp_path: Path, fake: FakeTelegram) -> None:
    chat = 4205
    async with running(redis_url, tmp_path, fake) as h:
        fake.fail_next(429, retry_after=2, method="sendMessage")
        await h.says(chat, "/start flood")
        [hello] = await h.wait_sent(chat, 1)
        refused = next(c for c in fake.calls if c[2] == 429)
        assert hello.at - refused[3] >= 1.95  # nothing was sent before retry_after passed
        assert fake.retry_violations == 0


async def test_outbound_sends_keep_to_telegrams_limits_under_a_burst(
        redis: Redis, redis_url: str, tmp_path: Path) -> None:
    """40 chats start at once and each is owed three messages (120 in all): the fake refuses
    more than one message a second per chat (a bucket of 2) and 30 a second per bot."""
    chats = [5000 + i for i in range(40)]
    async with FakeTelegram(chat_rate=1.0, chat_burst=2, bot_rate=30) as fake:
        fake.add_bot(TOKEN)
        async with running(redis_url, tmp_path, fake, greeting="burst") as h:
            assert h.services.outbox.accounts["tg"][1] == AccountLimits(**tg.DEFAULT_LIMITS)
            started = time.monotonic()
            statuses = await asyncio.gather(*(h.says(c, "/start") for c in chats))
            assert set(statuses) == {200}
            await fake.wait_for(lambda f: len(f.sent) >= 3 * len(chats), timeout=30)
            elapsed = time.monotonic() - started
        assert fake.rate_limited == 0 and fake.retry_violations == 0
        for c in chats:
            assert [s.text for s in fake.sent_to(c)] == ["Burst one", "Burst two", "Burst three"]
        times = sorted(s.at for s in fake.sent)
        busiest = max(sum(1 for t in times if start <= t < start + 1.0) for start in times)
        gaps = [b.at - a.at for c in chats for a, b in itertools.pairwise(fake.sent_to(c))]
        print(f"\nburst: {len(times)} messages in {elapsed:.2f}s, busiest second {busiest}, "
              f"min per-chat gap {min(gaps):.3f}s, 429s {fake.rate_limited}")
        assert busiest <= 30
        assert min(gaps) >= 0.95


async def test_long_polling_delivers_through_the_same_path(
        redis: Redis, redis_url: str, tmp_path: Path, fake: FakeTelegram) -> None:
    chat = 4206
    fake.bots[TOKEN].webhook_url = "https://old.example.com/hook"  # the poller removes it first
    async with running(redis_url, tmp_path, fake, settings={"mode": "polling", "poll_timeout": 10},
                       webhook=False) as h:
        await fake.wait_for(lambda f: not f.bots[TOKEN].webhook_url)  # deleteWebhook was called
        update = text_update(h.update_id(), chat, "/start polled")
        await h.post(update)  # queued for getUpdates
        [hello] = await h.wait_sent(chat, 1)
        assert hello.text == "Hi! You came from polled."
        await h.post(update)  # the same update again: handled once
        await h.clicks(chat, hello, "Catalog")
        _, catalog = await h.wait_sent(chat, 2)
        assert catalog.text.startswith("Catalog")
        assert len(fake.answers) == 1
        await fake.wait_for(lambda f: not f.bots[TOKEN].updates, timeout=15)  # confirmed by the next offset
        assert [e["text"] for e in await h.transcript(chat) if e["role"] == "user"] == ["/start polled", "Catalog"]
        stopping = time.monotonic()
    assert time.monotonic() - stopping < 4  # a pending long poll does not hold up shutdown


# ---------------------------------------------------------------------- the adapter alone
def _config(url: str = "http://127.0.0.1:9", **settings: Any) -> AccountConfig:
    return AccountConfig(channel="telegram", api_base_url=url,
                         credentials={"token": TOKEN, "secret_token": SECRET}, settings=settings)


def _adapter(http: aiohttp.ClientSession, url: str = "http://127.0.0.1:9") -> tg.TelegramAdapter:
    return tg.create(account="tg", config=_config(url), http=http, public_url="https://bot.example.com")


def _raw(update: Any, secret: str | None = SECRET) -> RawRequest:
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers["X-Telegram-Bot-Api-Secret-Token"] = secret
    return RawRequest("POST", "https://bot.example.com/webhooks/telegram/tg", headers, json.dumps(update).encode())


async def test_the_secret_is_checked_and_an_account_without_one_refuses_webhooks() -> None:
    async with aiohttp.ClientSession() as http:
        adapter = _adapter(http)
        adapter.verify(_raw(text_update(1, 42, "hi")))
        with pytest.raises(WebhookRejected) as missing:
            adapter.verify(_raw(text_update(1, 42, "hi"), secret=None))
        assert missing.value.status == 401
        with pytest.raises(WebhookRejected) as wrong:
            adapter.verify(_raw(text_update(1, 42, "hi"), secret=SECRET[:-1] + "X"))
        assert wrong.value.status == 403
        open_account = tg.create(account="tg", config=AccountConfig(channel="telegram", credentials={"token": TOKEN}),
                                 http=http, public_url="")
        with pytest.raises(WebhookRejected) as unset:
            open_account.verify(_raw(text_update(1, 42, "hi"), secret=""))
        assert unset.value.status == 403


def test_updates_are_normalised() -> None:
    [start] = tg.parse_update(text_update(7, 42, "/start@salesbot_test_bot ref-9"))
    assert (start.chat_id, start.dedupe_id, start.start_param, start.profile_name) == ("42", "7", "ref-9", "Ana")
    [plain] = tg.parse_update(text_update(8, 42, "/starting"))
    assert plain.start_param is None
    doc = {"update_id": 9, "message": {"message_id": 3, "date": 1, "chat": {"id": -100, "type": "group"},
                                       "document": {"file_id": "D1", "file_unique_id": "u", "file_name": "cv.pdf",
                                                    "mime_type": "application/pdf"}}}
    [item] = tg.parse_update(doc)
    assert item.chat_id == "-100" and item.text == ""
    assert item.attachments[0].kind == "document" and item.attachments[0].name == "cv.pdf"
    assert item.attachments[0].url == "tg-file:D1"
    contact = {"update_id": 10, "message": {"message_id": 4, "date": 1, "chat": {"id": 42, "type": "private"},
                                           "contact": {"phone_number": "+905551112233", "first_name": "Ana"}}}
    [item] = tg.parse_update(contact)
    assert item.phone == "+905551112233" and item.text == "+905551112233"
    where = {"update_id": 11, "message": {"message_id": 5, "date": 1, "chat": {"id": 42, "type": "private"},
                                         "location": {"latitude": 41.0, "longitude": 29.0}}}
    assert tg.parse_update(where)[0].attachments[0].url == "geo:41.0,29.0"
    voice = {"update_id": 12, "message": {"message_id": 6, "date": 1, "chat": {"id": 42, "type": "private"},
                                         "voice": {"file_id": "V1", "file_unique_id": "u", "duration": 3}}}
    assert tg.parse_update(voice)[0].attachments[0].kind == "voice"
    assert tg.parse_update({"update_id": 13, "edited_message": text_update(0, 42, "x")["message"]}) == []
    assert tg.parse_update({"update_id": 14, "my_chat_member": {}}) == []
    for bad in ([], {"update_id": "1"}, {"update_id": True}, {"update_id": 1, "message": {"text": "no chat"}},
                {"update_id": 1, "message": {"chat": {"id": "abc"}, "text": "x"}},
                {"update_id": 1, "message": {"chat": {"id": "4301"}, "text": "x"}},
                {"update_id": 1, "message": {"chat": {"id": 0.5}, "text": "x"}},
                {"update_id": 1, "message": {"chat": {"id": True}, "text": "x"}},
                {"update_id": 1, "callback_query": {"id": "q", "from": {"id": 1.5}, "data": "a"}}):
        with pytest.raises(MalformedWebhook):
            tg.parse_update(bad)


def test_a_click_is_the_buttons_payload_with_its_title_or_the_number_it_stands_for() -> None:
    record = SentRecord("sendMessage", "42", {"text": "Pick", "reply_markup": {"inline_keyboard": [
        [{"text": "Yes please", "callback_data": "abc.0"}], [{"text": "Rugs", "callback_data": "~4"}]]}}, 9, 0.0)
    [yes] = tg.parse_update(callback_update(20, 42, "abc.0", record))
    assert (yes.payload, yes.text, yes.reply) == ("abc.0", "Yes please", {"callback_query_id": "cbq20"})
    [rugs] = tg.parse_update(callback_update(21, 42, "~4", record))
    assert (rugs.payload, rugs.text) == (None, "4")


def test_the_plan_of_calls_for_an_entry() -> None:
    entry = {"text": "x" * 9000, "buttons": [{"title": "A", "payload": "a", "url": None, "number": 1}]}
    calls = tg.plan(entry)
    assert [m for m, _ in calls] == ["sendMessage"] * 3
    assert all(len(p["text"]) <= 4096 for _, p in calls)
    assert "reply_markup" not in calls[0][1] and "reply_markup" in calls[-1][1]
    long_payload = {"text": "Pick", "buttons": [{"title": "Long", "payload": "p" * 65, "url": None, "number": 1},
                                                 {"title": "Ünïcode", "payload": "ü" * 33, "url": None, "number": 2}]}
    [(_, params)] = tg.plan(long_payload)
    assert [b["callback_data"] for row in params["reply_markup"]["inline_keyboard"] for b in row] == ["~1", "~2"]
    media = {"text": "caption " * 200, "attachments": [{"kind": "image", "url": "https://e.x/a.jpg"}]}
    assert [m for m, _ in tg.plan(media)] == ["sendPhoto", "sendMessage"]  # over 1024: no caption
    unsafe = {"text": "Files", "attachments": [{"kind": "document", "url": "/etc/passwd", "name": "p"},
                                               {"kind": "image", "url": "tg-file:AgAC"}]}
    calls = tg.plan(unsafe)
    assert calls == [("sendPhoto", {"photo": "AgAC", "caption": "Files\np: /etc/passwd"})]


async def test_every_bot_api_error_maps_as_ptbs_own_transport_maps_it(fake: FakeTelegram) -> None:
    """The send path's lean client (``BotApi``) raises what PTB's ``BaseRequest`` would for the
    same answer, so each maps to the same delivery error: refused for good, or retried."""
    fake.enforce_limits = False
    async with aiohttp.ClientSession() as http:
        adapter = _adapter(http, fake.url)
        cases: list[tuple[int, type[Exception], float | None]] = [
            (400, DeliveryRejected, None), (403, DeliveryRejected, None), (401, DeliveryTemporary, 60.0),
            (404, DeliveryTemporary, 60.0), (409, DeliveryTemporary, None), (500, DeliveryTemporary, None),
            (502, DeliveryTemporary, None)]
        for status, error, retry_after in cases:
            fake.fail_next(status)
            with pytest.raises(error) as raised:
                await adapter.send("tg", {"external_id": "81"}, {"text": f"status {status}"})
            assert getattr(raised.value, "retry_after", None) == retry_after, status
        assert fake.sent_to(81) == []
        assert await adapter.send("tg", {"external_id": "81"}, {"text": "fine"}) == "81:1"
    migrated = tg.transport._failure(400, json.dumps({"ok": False, "error_code": 400, "description": "migrated",
                                                      "parameters": {"migrate_to_chat_id": -100123}}).encode())
    assert isinstance(migrated, ChatMigrated) and migrated.new_chat_id == -100123
    flood = tg.transport._failure(400, b'{"ok": false, "parameters": {"retry_after": 7}}')
    assert isinstance(flood, RetryAfter) and tg.retry_seconds(flood) == 7
    assert isinstance(tg.transport._failure(500, b"<html>gateway</html>"), NetworkError)  # not JSON


async def test_a_network_error_names_no_bot_token() -> None:
    """aiohttp's errors may quote the URL, and a Bot API URL holds the bot token: never in a log."""
    token = "123456:network-error-secret"
    async with aiohttp.ClientSession() as http:
        for base in ("http:/nohost", "ftp://host"):  # refused by aiohttp with the URL in the text
            with pytest.raises(NetworkError) as raised:
                await tg.transport.BotApi(http, f"{base}/bot{token}", secret=token).call("sendMessage", {"chat_id": 1})
            assert token not in str(raised.value) and "<token>" in str(raised.value)


async def test_failures_map_to_delivery_errors_and_partial_entries_resume(fake: FakeTelegram) -> None:
    fake.enforce_limits = False
    original = fake._send
    calls = {"n": 0}

    def second_call_fails(bot: Any, method: str, params: dict[str, Any]) -> Any:
        calls["n"] += 1
        return fake._error(502, "Bad Gateway") if calls["n"] == 2 else original(bot, method, params)

    fake._send = second_call_fails  # type: ignore[method-assign]
    async with aiohttp.ClientSession() as http:
        adapter = _adapter(http, fake.url)
        entry = {"ref": "r1", "text": "y" * 5000}  # two parts
        with pytest.raises(DeliveryTemporary):
            await adapter.send("tg", {"external_id": "77"}, entry)
        assert len(fake.sent_to(77)) == 1
        platform_id = await adapter.send("tg", {"external_id": "77"}, entry)  # the outbox's retry
        texts = [s.text for s in fake.sent_to(77)]
        assert len(texts) == 2 and "".join(texts) == "y" * 5000  # the first part was not sent twice
        assert platform_id == "77:2"
        fake.blocked_chats.add("78")
        with pytest.raises(DeliveryRejected, match="blocked"):
            await adapter.send("tg", {"external_id": "78"}, {"text": "hi"})
        with pytest.raises(DeliveryRejected):
            await adapter.send("tg", {}, {"text": "hi"})
        fake.fail_next(429, retry_after=3)
        with pytest.raises(DeliveryTemporary) as flood:
            await adapter.send("tg", {"external_id": "79"}, {"text": "hi"})
        assert flood.value.retry_after == 3
        with pytest.raises(DeliveryTemporary) as held:  # the whole bot waits: no call is made
            await adapter.send("tg", {"external_id": "80"}, {"text": "hi"})
        assert 2 < (held.value.retry_after or 0) <= 3
        assert fake.retry_violations == 0
