"""Twilio SMS/MMS end to end: numbered text menus, MMS media, status callbacks, unsubscribed
recipients and the per-number rate, against the fake Twilio REST API on loopback."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from bot.store import keys as k
from bot.store.keys import conversation_id

from .fakes.twilio_api import FakeTwilio, TwilioHarness, running_app, twilio_account, write_flows

ACCOUNT_SID = "AC" + "5e" * 16
AUTH_TOKEN = "sms-auth-token-0001"
SENDER = "+15017122661"
CUSTOMER = "+15558675310"
CID = conversation_id("sms", "txt", CUSTOMER)


@pytest.fixture
async def fake() -> AsyncIterator[FakeTwilio]:
    async with FakeTwilio(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN) as twilio:
        yield twilio


@pytest.fixture
def flows(tmp_path: Path) -> Path:
    return write_flows(tmp_path / "flows")  # type: ignore[no-any-return]


def _app(redis_url: str, fake: FakeTwilio, flows: Path, **settings: Any) -> Any:
    """The SMS account; a fast number (a short code's rate) unless the test says otherwise."""
    settings = {"rate": 50, "burst": 50, **settings}
    return running_app(redis_url, fake, {"txt": twilio_account(fake, "sms", from_number=SENDER, **settings)}, flows)


@pytest.fixture
async def app(redis: Redis, redis_url: str, fake: FakeTwilio, flows: Path) -> AsyncIterator[TwilioHarness]:
    async with _app(redis_url, fake, flows) as harness:
        yield harness


async def _say(app: TwilioHarness, body: str = "", *, number: str = CUSTOMER, **kw: Any) -> int:
    post = await app.fake.post(app.url("sms", "txt"), app.fake.inbound(to=SENDER, from_=number, body=body, **kw))
    return post.status


async def test_a_full_conversation_over_sms(app: TwilioHarness) -> None:
    fake = app.fake
    assert await _say(app, "Hello") == 200

    # One MMS: the numbered menu with the image.
    (menu,) = await app.sent_to(CUSTOMER, 1)
    assert (menu.to, menu.from_) == (CUSTOMER, SENDER)
    assert menu.body == "Hi there! What would you like?\n\n1. Drinks\n2. Talk to a person\n3. Opening hours"
    assert menu.media_urls == ["https://cdn.example.com/welcome.jpg"]
    assert menu.status_callback == "https://bot.example.com/webhooks/sms/txt"

    assert await _say(app, "1") == 200
    drinks = (await app.sent_to(CUSTOMER, 2))[1]
    assert drinks.body == "Pick a drink\n\n1. Tea\n2. Coffee\n3. Cocoa" and drinks.media_urls == []

    assert await _say(app, "coffee") == 200  # a row's title works as well as its number
    coffee = (await app.sent_to(CUSTOMER, 3))[2]
    assert coffee.body == "One coffee coming up."

    started = time.monotonic()
    ready = (await app.sent_to(CUSTOMER, 4, what="the message after the 2 s pause"))[3]
    assert time.monotonic() - started > 1.0
    assert ready.body == "Your coffee is ready. Here is your receipt."
    assert ready.media_urls == ["https://cdn.example.com/receipt.pdf"]

    for status in ("sent", "delivered"):
        assert (await fake.post_status(ready, status)).status == 200
    transcript = await app.transcript(CID)
    ready_ref = next(e["ref"] for e in transcript if e.get("step") == "ready")
    assert [(e["status"], e["ref"]) for e in transcript if e.get("event") == "delivery"] == [
        ("sent", ready_ref), ("delivered", ready_ref)]
    assert [e["text"] for e in transcript if e.get("role") == "user"] == ["Hello", "1", "coffee"]
    assert (await app.services.store.meta(CID))["phone"] == CUSTOMER


async def test_2_answers_the_second_button(app: TwilioHarness) -> None:
    assert await _say(app, "hi") == 200
    await app.sent_to(CUSTOMER, 1)
    assert await _say(app, "2") == 200
    person = (await app.sent_to(CUSTOMER, 2))[1]
    assert person.body == "A person will write to you soon."
    assert (await app.state(CID)).run.wait.step == "wait_person"


async def test_without_mms_media_becomes_links(redis: Redis, redis_url: str, fake: FakeTwilio, flows: Path) -> None:
    async with _app(redis_url, fake, flows, mms=False) as app:
        assert await _say(app, "hi") == 200
        (menu,) = await app.sent_to(CUSTOMER, 1)
    assert menu.media_urls == []
    assert menu.body == ("Hi there! What would you like?\nwelcome.jpg: https://cdn.example.com/welcome.jpg"
                         "\n\n1. Drinks\n2. Talk to a person\n3. Opening hours")


async def test_an_unsubscribed_recipient_takes_the_failed_branch(app: TwilioHarness) -> None:
    assert await _say(app, "hi") == 200
    await app.sent_to(CUSTOMER, 1)
    app.fake.unsubscribed.add(CUSTOMER)  # the customer texted STOP
    assert await _say(app, "2") == 200

    async def undelivered() -> bool:
        state = await app.state(CID)
        return state.run is not None and state.run.vars.get("undelivered") == "yes"

    await app.until(undelivered, what="the failed branch")
    assert [c.status for c in app.fake.calls] == [201, 400]
    assert len(app.fake.sent) == 1


async def test_a_redelivered_sms_is_handled_once(app: TwilioHarness) -> None:
    params = app.fake.inbound(to=SENDER, from_=CUSTOMER, body="hi", sid="SM" + "7a" * 16)
    for _ in range(3):
        assert (await app.fake.post(app.url("sms", "txt"), params)).status == 200
    await app.sent_to(CUSTOMER, 1)
    await app.drain()
    assert len(app.fake.sent) == 1
    assert [e["text"] for e in await app.transcript(CID) if e.get("role") == "user"] == ["hi"]


async def test_an_inbound_mms(app: TwilioHarness) -> None:
    url = f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/MM9/Media/ME9"
    assert await _say(app, "", media=[(url, "image/png")]) == 200
    await app.sent_to(CUSTOMER, 1)
    (entry,) = [e for e in await app.transcript(CID) if e.get("role") == "user"]
    assert entry["kind"] == "media" and entry["attachments"] == [{"kind": "image", "url": url, "name": None}]


async def test_wrong_signatures_and_malformed_bodies_do_not_reach_the_flow(app: TwilioHarness, redis: Redis) -> None:
    fake, url = app.fake, app.url("sms", "txt")
    params = fake.inbound(to=SENDER, from_=CUSTOMER, body="hi")
    assert (await fake.post(url, params, sign=False)).status == 401
    assert (await fake.post(url, params, signature=fake.sign(url, params, "wrong-token"))).status == 403
    assert (await fake.post(url, params, signature="")).status == 401
    without_from = [(key, v) for key, v in params if key != "From"]
    assert (await fake.post(url, without_from)).status == 400
    assert await redis.exists(k.ConversationKey(CID).state, k.ConversationKey(CID).meta) == 0
    await app.drain()
    assert fake.calls == []


async def test_long_text_is_split_into_sms_of_at_most_1600_characters(redis: Redis, redis_url: str,
                                                                      fake: FakeTwilio, tmp_path: Path) -> None:
    text = " ".join(f"word{i}" for i in range(700))
    flows = write_flows(tmp_path / "flows", {"format": "salesbot.flow/1", "id": "shop", "name": "Long",
                                             "start": "long", "steps": {"long": {"type": "message", "text": text}}})
    async with _app(redis_url, fake, flows) as app:
        assert await _say(app, "hi") == 200
        await app.sent_to(CUSTOMER, 2)
        await app.drain()
    assert len(fake.sent) == -(-len(text) // 1600)
    assert all(len(m.body) <= 1600 for m in fake.sent)
    assert " ".join(m.body for m in fake.sent) == text


async def test_the_default_sms_rate_paces_a_burst(redis: Redis, redis_url: str, tmp_path: Path) -> None:
    """With no settings an SMS number sends one message a second; the fake refuses more."""
    flows = write_flows(tmp_path / "flows", {"format": "salesbot.flow/1", "id": "shop", "name": "Hi",
                                             "start": "hi", "steps": {"hi": {"type": "message", "text": "Hello!"}}})
    customers = [f"+1555200{i:04d}" for i in range(4)]
    async with FakeTwilio(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, rate=1, burst=2) as fake:
        account = {**twilio_account(fake, "sms", from_number=SENDER), "settings": {}}
        async with running_app(redis_url, fake, {"txt": account}, flows) as app:
            for number in customers:
                assert await _say(app, "hi", number=number) == 200
            await app.until(lambda: len(fake.sent) == len(customers), timeout=15, what="every answer")
    assert fake.rate_limited == 0
    times = [m.at for m in fake.sent]
    assert all(b - a >= 0.9 for a, b in itertools.pairwise(times)), times


async def test_a_rules_start_bot_texts_a_contact_who_never_wrote(
        redis: Redis, redis_url: str, fake: FakeTwilio, flows: Path, tmp_path: Path) -> None:
    """The automations' outbound path over SMS: a rule on ``created`` starts ``shop`` on the SMS
    account for a lead whose contact is known by phone only; its first message goes out once."""
    docs = tmp_path / "automations"
    docs.mkdir()
    (docs / "sales.json").write_text(json.dumps({
        "format": "salesbot.automations/1", "id": "sales", "pipeline": "Sales",
        "rules": [{"id": "text_first", "stage": "Incoming", "on": ["created"],
                   "do": {"start_bot": "shop", "channel": "txt"}}]}))
    accounts = {"txt": twilio_account(fake, "sms", from_number=SENDER, rate=50, burst=50)}
    async with running_app(redis_url, fake, accounts, flows, automations_dir=str(docs)) as app:
        directory = app.services.directory
        assert directory is not None
        contact = await directory.create_contact({"name": "Ada", "phone": CUSTOMER})
        lead = await directory.create_lead({"name": "Deal"}, contact_id=str(contact["id"]))
        await app.services.leads.idle()
        (menu,) = await app.sent_to(CUSTOMER, 1, what="the bot's first SMS")
        assert menu.from_ == SENDER and menu.body.startswith("Hi Ada! What would you like?")
        history = await app.services.leads.history(str(lead["id"]))
        started = [h for h in history if h.get("rule") == "text_first"]
        assert [h["outcome"] for h in started] == ["fired", "acted", "bot_started"], started
        assert CID in started[-1]["detail"]
        await app.drain()
        assert len([m for m in fake.sent if m.number == CUSTOMER]) == 1
