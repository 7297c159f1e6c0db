"""Twilio WhatsApp end to end: our app behind a public URL on loopback, a fake Twilio REST API
on loopback, webhooks posted and signed the way Twilio posts them, the worker loops driven by
the test. Plus the adapter against the fake directly: error mapping, windows, templates."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from redis.asyncio import Redis
from twilio.request_validator import RequestValidator

from bot.channels.base import (
    CREDENTIALS_RETRY_AFTER,
    DeliveryRejected,
    DeliveryTemporary,
    RawRequest,
    WebhookRejected,
)
from bot.channels.registry import ChannelRegistry
from bot.channels.twilio import TwilioAdapter
from bot.config import AccountConfig
from bot.store import keys as k
from bot.store.keys import conversation_id
from bot.store.outbox import AccountLimits, DeliveryDeferred

from .fakes.twilio_api import PUBLIC_URL, FakeTwilio, TwilioHarness, running_app, twilio_account, write_flows

ACCOUNT_SID = "AC" + "1f" * 16
AUTH_TOKEN = "wa-auth-token-0001"
SENDER = "+14155238886"
CUSTOMER = "+15551234567"
WA_SENDER, WA_CUSTOMER = f"whatsapp:{SENDER}", f"whatsapp:{CUSTOMER}"
CID = conversation_id("twilio", "wa", CUSTOMER)
MENU_CONTENT = "HX" + "a1" * 16
TEMPLATE_CONTENT = "HX" + "b2" * 16


@pytest.fixture
async def fake() -> AsyncIterator[FakeTwilio]:
    async with FakeTwilio(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN) as twilio:
        yield twilio


@pytest.fixture
def flows(tmp_path: Path) -> Path:
    return write_flows(tmp_path / "flows")  # type: ignore[no-any-return]


async def _app(redis_url: str, fake: FakeTwilio, flows: Path, **settings: object):  # type: ignore[no-untyped-def]
    return running_app(redis_url, fake, {"wa": twilio_account(fake, "twilio", from_number=SENDER, **settings)}, flows)


@pytest.fixture
async def app(redis: Redis, redis_url: str, fake: FakeTwilio, flows: Path) -> AsyncIterator[TwilioHarness]:
    async with await _app(redis_url, fake, flows) as harness:
        yield harness


@pytest.fixture
async def quick_app(redis: Redis, redis_url: str, fake: FakeTwilio, flows: Path) -> AsyncIterator[TwilioHarness]:
    """The account maps the welcome step's buttons to a Content API quick-reply content."""
    fake.add_content(MENU_CONTENT, [("Drinks", "drinks"), ("Talk to a person", "person"),
                                    ("Opening hours", "hours")])
    async with await _app(redis_url, fake, flows, content_sids={"hello": MENU_CONTENT}) as harness:
        yield harness


async def _say(app: TwilioHarness, body: str = "", **kw: object) -> int:
    post = await app.fake.post(app.url("twilio", "wa"),
                               app.fake.inbound(to=WA_SENDER, from_=WA_CUSTOMER, body=body, **kw))  # type: ignore[arg-type]
    return post.status


def _user_entries(transcript: list[dict]) -> list[dict]:  # type: ignore[type-arg]
    return [e for e in transcript if e.get("role") == "user"]


# ---------------------------------------------------------------------------- webhook security

def test_the_signature_is_the_documented_one() -> None:
    """Twilio's published example: the exact URL (query included) plus the sorted parameters."""
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    params = {"CallSid": "CA1234567890ABCDE", "Caller": "+12349013030", "Digits": "1234",
              "From": "+12349013030", "To": "+18005551212"}
    assert RequestValidator("12345").compute_signature(url, params) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
    adapter = TwilioAdapter(name="twilio", whatsapp=True, account="a", http=None,  # type: ignore[arg-type]
                            public_url=PUBLIC_URL, config=AccountConfig(channel="twilio", credentials={
                                "account_sid": ACCOUNT_SID, "auth_token": "12345", "from_number": SENDER}))
    body = "&".join(f"{key}={value.replace('+', '%2B')}" for key, value in params.items()).encode()
    good = RawRequest("POST", url, {"x-twilio-signature": "0/KCTR6DLpKmkAf8muzZqo1nDgQ="}, body)
    adapter.verify(good)
    for wrong_url in ("https://mycompany.com/myapp.php", "https://mycompany.com/myapp.php?foo=1&bar=3"):
        with pytest.raises(WebhookRejected) as caught:
            adapter.verify(RawRequest("POST", wrong_url, good.headers, body))
        assert caught.value.status == 403


def test_a_shared_key_signature_is_checked_with_its_key() -> None:
    """Webhook Rules sign with a SharedKey (HMAC-SHA256) and say so in a header."""
    adapter = TwilioAdapter(name="twilio", whatsapp=True, account="a", http=None,  # type: ignore[arg-type]
                            public_url=PUBLIC_URL, config=AccountConfig(channel="twilio", credentials={
                                "account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN, "from_number": SENDER,
                                "webhook_key": "shared-key-secret"}))
    url = f"{PUBLIC_URL}/webhooks/twilio/a"
    params = {"MessageSid": "SM1", "From": WA_CUSTOMER, "Body": "hi"}
    body = "&".join(f"{key}={value}" for key, value in params.items()).encode().replace(b"+", b"%2B")
    settings = {"X-Twilio-Webhooks-Signature-Settings": "key=webhooks_sharedkey_1,algorithm=HMAC_SHA256"}
    signed = RequestValidator("shared-key-secret").compute_signature(url, params, algorithm="HMAC_SHA256")
    adapter.verify(RawRequest("POST", url, {**settings, "X-Twilio-Signature": signed}, body))
    with_token = RequestValidator(AUTH_TOKEN).compute_signature(url, params, algorithm="HMAC_SHA256")
    with pytest.raises(WebhookRejected):
        adapter.verify(RawRequest("POST", url, {**settings, "X-Twilio-Signature": with_token}, body))


async def test_bad_signatures_and_malformed_bodies_change_nothing(app: TwilioHarness, redis: Redis) -> None:
    fake, url = app.fake, app.url("twilio", "wa")
    params = fake.inbound(to=WA_SENDER, from_=WA_CUSTOMER, body="Hi, äöå: do you deliver?")
    assert (await fake.post(url, params, sign=False)).status == 401
    assert (await fake.post(url, params, signature=fake.sign(url, params, "another-token"))).status == 403
    assert (await fake.post(url, params, signature="0/KCTR6DLpKmkAf8muzZqo1nDgQ=")).status == 403
    # Signed over the URL our server saw rather than the public one Twilio called.
    local = str(app.server.make_url("/webhooks/twilio/wa"))
    assert (await fake.post(url, params, signature=fake.sign(local, params))).status == 403
    # A parameter changed after signing.
    tampered = [(key, "Hi, send me everything" if key == "Body" else value) for key, value in params]
    assert (await fake.post(url, tampered, signature=fake.sign(url, params))).status == 403
    # Signed but unreadable: 400.
    for bad in ([(key, v) for key, v in params if key not in ("MessageSid", "SmsSid", "SmsMessageSid")],
                [(key, v) for key, v in params if key != "From"],
                [(key, "two" if key == "NumMedia" else v) for key, v in params],
                [(key, "1" if key == "NumMedia" else v) for key, v in params]):
        post = await fake.post(url, bad)
        assert post.status == 400, post.text
    raw_body = b"\xff\xfe not a form"
    async with aiohttp.ClientSession() as http, http.post(local, data=raw_body, headers={
            "X-Twilio-Signature": fake.sign(url, [(raw_body.decode("utf-8", "replace"), "")]),
            "Content-Type": "application/x-www-form-urlencoded"}) as resp:
        assert resp.status == 400

    assert await app.services.store.meta(CID) == {}
    assert await redis.exists(k.ConversationKey(CID).state, k.ConversationKey(CID).meta) == 0
    await app.drain()
    assert fake.sent == [] and fake.calls == []

    post = await fake.post(url, params)
    assert post.status == 200 and post.text == '<?xml version="1.0" encoding="UTF-8"?><Response/>'
    await app.sent_to(CUSTOMER, 1)


async def test_unknown_accounts_and_channels_are_404(app: TwilioHarness) -> None:
    params = app.fake.inbound(to=WA_SENDER, from_=WA_CUSTOMER, body="hi")
    assert (await app.fake.post(f"{PUBLIC_URL}/webhooks/twilio/nope", params)).status == 404
    assert (await app.fake.post(f"{PUBLIC_URL}/webhooks/sms/wa", params)).status == 404


# ---------------------------------------------------------------------------- the conversation

async def test_a_full_conversation_with_quick_replies_a_list_a_pause_and_media(quick_app: TwilioHarness) -> None:
    app, fake = quick_app, quick_app.fake
    callback = f"{PUBLIC_URL}/webhooks/twilio/wa"
    assert await _say(app, "Hello!", profile_name="Ayşe Yılmaz") == 200

    # The image first (WhatsApp carries one media per message), then the quick-reply content.
    image, menu = await app.sent_to(CUSTOMER, 2)
    assert image.to == WA_CUSTOMER and image.from_ == WA_SENDER
    assert image.media_urls == ["https://cdn.example.com/welcome.jpg"] and image.body == ""
    assert menu.content_sid == MENU_CONTENT and menu.body == ""
    assert menu.content_variables == {"1": "Hi Ayşe Yılmaz! What would you like?"}
    assert menu.text == "Hi Ayşe Yılmaz! What would you like?"
    assert menu.buttons == [("Drinks", "drinks"), ("Talk to a person", "person"), ("Opening hours", "hours")]
    assert {m.status_callback for m in (image, menu)} == {callback}

    # A tap: ButtonPayload is the content's own id, ButtonText its title.
    assert await _say(app, button=("drinks", "Drinks")) == 200
    drinks = (await app.sent_to(CUSTOMER, 3))[2]
    assert drinks.body == "Pick a drink\n\n1. Tea\n2. Coffee\n3. Cocoa"

    assert await _say(app, "2") == 200  # the second row
    coffee = (await app.sent_to(CUSTOMER, 4))[3]
    assert coffee.body == "One coffee coming up."

    # The pause: nothing until its 2 seconds have passed, then the document with its caption.
    started = time.monotonic()
    ready = (await app.sent_to(CUSTOMER, 5, what="the message after the pause"))[4]
    assert time.monotonic() - started > 1.0
    assert ready.body == "Your coffee is ready. Here is your receipt."
    assert ready.media_urls == ["https://cdn.example.com/receipt.pdf"]

    # Status callbacks are matched to the conversation through the message sid.
    assert (await fake.post_status(menu, "delivered")).status == 200
    assert (await fake.post_status(menu, "read")).status == 200
    assert (await fake.post_status(menu, "sent")).status == 200
    transcript = await app.transcript(CID)
    statuses = [(e["status"], e["ref"]) for e in transcript if e.get("event") == "delivery"]
    menu_ref = next(e["ref"] for e in transcript if e.get("role") == "bot" and e.get("step") == "hello")
    assert statuses == [("delivered", menu_ref), ("read", menu_ref), ("sent", menu_ref)]
    users = _user_entries(transcript)
    assert [(u["text"], u.get("payload")) for u in users] == [("Hello!", None), ("Drinks", "drinks"), ("2", None)]
    meta = await app.services.store.meta(CID)
    assert meta["name"] == "Ayşe Yılmaz" and meta["phone"] == CUSTOMER
    state = await app.state(CID)
    assert state.run is None or not state.run.active
    assert fake.rate_limited == 0


async def test_without_content_the_menu_is_numbered_and_2_is_the_second_button(app: TwilioHarness) -> None:
    assert await _say(app, "hi") == 200
    (menu,) = await app.sent_to(CUSTOMER, 1)  # one image, the text as its caption
    assert menu.media_urls == ["https://cdn.example.com/welcome.jpg"]
    assert menu.content_sid is None
    assert menu.body == "Hi there! What would you like?\n\n1. Drinks\n2. Talk to a person\n3. Opening hours"
    assert await _say(app, " 2 ") == 200
    person = (await app.sent_to(CUSTOMER, 2))[1]
    assert person.body == "A person will write to you soon."
    state = await app.state(CID)
    assert state.run.wait.step == "wait_person"


async def test_a_redelivered_webhook_is_handled_once(app: TwilioHarness) -> None:
    params = app.fake.inbound(to=WA_SENDER, from_=WA_CUSTOMER, body="hi", sid="SM" + "0d" * 16)
    first = await app.fake.post(app.url("twilio", "wa"), params)
    second = await app.fake.post(app.url("twilio", "wa"), params)  # Twilio's retry: a new idempotency token
    assert first.status == second.status == 200
    await app.sent_to(CUSTOMER, 1)
    await app.drain()
    assert len(app.fake.sent) == 1
    assert [u["text"] for u in _user_entries(await app.transcript(CID))] == ["hi"]
    # The same for a click: the second delivery does not answer the next question.
    click = app.fake.inbound(to=WA_SENDER, from_=WA_CUSTOMER, body="1", sid="SM" + "0e" * 16)
    assert (await app.fake.post(app.url("twilio", "wa"), click)).status == 200
    await app.sent_to(CUSTOMER, 2)
    assert (await app.fake.post(app.url("twilio", "wa"), click)).status == 200
    await app.drain()
    assert len(app.fake.sent) == 2
    assert [u["text"] for u in _user_entries(await app.transcript(CID))] == ["hi", "1"]


async def test_inbound_media_reaches_the_flow(app: TwilioHarness) -> None:
    media = [(f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/MM1/Media/ME1", "image/jpeg"),
             (f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/MM1/Media/ME2", "audio/ogg")]
    assert await _say(app, "my receipt", media=media) == 200
    await app.sent_to(CUSTOMER, 1)
    (entry,) = _user_entries(await app.transcript(CID))
    assert entry["text"] == "my receipt"
    assert [(a["kind"], a["url"]) for a in entry["attachments"]] == [
        ("image", media[0][0]), ("voice", media[1][0])]


async def test_a_failed_status_callback_takes_the_failed_branch(redis: Redis, redis_url: str, flows: Path) -> None:
    """Outside the 24-hour window Twilio accepts a free-form message, then reports 63016."""
    async with FakeTwilio(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, enforce_window=True,
                          window_failure="callback") as fake, await _app(redis_url, fake, flows) as app:
        assert await _say(app, "hi") == 200
        await app.sent_to(CUSTOMER, 1)
        assert await _say(app, "2") == 200
        fake.open_windows[CUSTOMER] = time.time() - 25 * 3600  # as if the answer left a day later
        person = (await app.sent_to(CUSTOMER, 2))[1]
        await app.drain()
        assert fake.doomed and fake.doomed[0][0] is person
        (post,) = await fake.deliver_callbacks()
        assert post.status == 200 and ("ErrorCode", "63016") in post.params
        state = await app.state(CID)
        assert state.run.vars.get("undelivered") == "yes"
        # The same callback again (Twilio retries), or as "undelivered": handled once.
        duplicates = app.services.metrics.duplicates._value.get()
        assert (await fake.post_status(person, "failed", error_code="63016")).status == 200
        assert (await fake.post_status(person, "undelivered", error_code="30008")).status == 200
        assert app.services.metrics.duplicates._value.get() == duplicates + 2
        await app.drain()
        assert len(fake.sent) == 2


# ---------------------------------------------------------------------------- rate limits

async def test_outbound_sends_keep_to_the_number_rate_under_a_burst(redis: Redis, redis_url: str,
                                                                   tmp_path: Path) -> None:
    flows = write_flows(tmp_path / "flows", {"format": "salesbot.flow/1", "id": "shop", "name": "Hi",
                                             "start": "hi", "steps": {"hi": {"type": "message", "text": "Hello!"}}})
    customers = [f"+1555000{i:04d}" for i in range(12)]
    # The fake allows 5 a second per sender (and a burst of 2 for network jitter).
    async with (FakeTwilio(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, rate=5, burst=2) as fake,
                await _app(redis_url, fake, flows, rate=5, burst=1) as app):
        for number in customers:
            post = await fake.post(app.url("twilio", "wa"), fake.inbound(
                to=WA_SENDER, from_=f"whatsapp:{number}", body="hi"))
            assert post.status == 200
        await app.until(lambda: len(fake.sent) == len(customers), timeout=15, what="every answer")
        assert fake.rate_limited == 0
        assert sorted(m.number for m in fake.sent) == sorted(customers)
        times = [m.at for m in fake.sent]
        assert times[-1] - times[0] >= (len(customers) - 2) / 5


async def test_without_pacing_the_fake_rate_limits_and_retry_after_is_honoured(redis: Redis, redis_url: str,
                                                                              tmp_path: Path) -> None:
    flows = write_flows(tmp_path / "flows", {"format": "salesbot.flow/1", "id": "shop", "name": "Hi",
                                             "start": "hi", "steps": {"hi": {"type": "message", "text": "Hello!"}}})
    customers = [f"+1555100{i:04d}" for i in range(6)]
    async with (FakeTwilio(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, rate=5, burst=2) as fake,
                await _app(redis_url, fake, flows, rate=1000, burst=1000) as app):
        for number in customers:
            await fake.post(app.url("twilio", "wa"), fake.inbound(to=WA_SENDER, from_=f"whatsapp:{number}",
                                                                 body="hi"))
        await app.until(lambda: len(fake.sent) == len(customers), timeout=20, what="every answer")
        assert fake.rate_limited > 0  # the control: without the account's rate the burst is refused …
        refused = [c for c in fake.calls if c.status == 429]
        for call in refused:  # … and each refused message came back no sooner than Retry-After (1 s)
            later = [c for c in fake.calls if c.to == call.to and c.at > call.at]
            assert later and later[0].at - call.at >= 0.9


async def test_twilio_defaults_for_the_outbox_limits(redis: Redis, redis_url: str, fake: FakeTwilio,
                                                    flows: Path) -> None:
    accounts = {"wa": {**twilio_account(fake, "twilio", from_number=SENDER), "settings": {}},
                "sms": {**twilio_account(fake, "sms", from_number=SENDER), "settings": {}},
                "fast": twilio_account(fake, "sms", from_number=SENDER, rate=100, burst=20)}
    async with running_app(redis_url, fake, accounts, flows) as app:
        limits = {name: lim for name, (_, lim) in app.services.outbox.accounts.items()}
    assert limits["wa"] == AccountLimits(rate=10, chat_interval=1.0, burst=10)
    assert limits["sms"] == AccountLimits(rate=1, chat_interval=1.0, burst=1)
    assert limits["fast"] == AccountLimits(rate=100, chat_interval=0, burst=20)


# ---------------------------------------------------------------------------- the adapter against the fake

@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def _adapter(fake: FakeTwilio, http: aiohttp.ClientSession, **settings: object) -> TwilioAdapter:
    config = AccountConfig(channel="twilio", api_base_url=fake.url, settings=settings, credentials={
        "account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN, "from_number": SENDER})
    adapter = ChannelRegistry().create("twilio", account="wa", config=config, http=http, public_url=PUBLIC_URL)
    assert isinstance(adapter, TwilioAdapter)
    return adapter


CHAT = {"channel": "twilio", "account": "wa", "external_id": CUSTOMER, "last_inbound_at": "0"}


def _fresh(chat: dict[str, str]) -> dict[str, str]:
    return {**chat, "last_inbound_at": f"{time.time():.3f}"}


@pytest.mark.parametrize(("status", "code", "retry_after"), [(429, 20429, 3), (429, 20429, None), (503, 20500, None),
                                                             (400, 63018, None)])
async def test_temporary_errors(fake: FakeTwilio, http: aiohttp.ClientSession, status: int, code: int,
                                retry_after: float | None) -> None:
    adapter = _adapter(fake, http)
    fake.fail_next(status, code, retry_after=retry_after)
    with pytest.raises(DeliveryTemporary) as caught:
        await adapter.send("wa", _fresh(CHAT), {"role": "bot", "text": "Hi", "ref": "r:1"})
    assert caught.value.retry_after == retry_after
    if status == 429 and retry_after:  # Retry-After holds the account: no process sends before it passes
        with pytest.raises(DeliveryDeferred) as held:
            await adapter.send("wa", _fresh(CHAT), {"role": "bot", "text": "Hi", "ref": "r:1"})
        assert 0 < (held.value.retry_after or 0) <= retry_after
        return
    assert await adapter.send("wa", _fresh(CHAT), {"role": "bot", "text": "Hi", "ref": "r:1"})


async def test_twilio_unreachable_is_temporary(http: aiohttp.ClientSession) -> None:
    async with FakeTwilio(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN) as gone:
        adapter = _adapter(gone, http)
    with pytest.raises(DeliveryTemporary):
        await adapter.send("wa", _fresh(CHAT), {"role": "bot", "text": "Hi", "ref": "r:1"})


@pytest.mark.parametrize(("status", "code", "words"), [(400, 21610, "unsubscribed"), (400, 63016, "24-hour"),
                                                       (400, 21211, "invalid")])
async def test_permanent_errors(fake: FakeTwilio, http: aiohttp.ClientSession, status: int, code: int,
                                words: str) -> None:
    fake.fail_next(status, code)
    with pytest.raises(DeliveryRejected, match=words):
        await _adapter(fake, http).send("wa", _fresh(CHAT), {"role": "bot", "text": "Hi", "ref": "r:1"})


async def test_refused_credentials_are_retried_after_a_minute(fake: FakeTwilio, http: aiohttp.ClientSession) -> None:
    """A rotated auth token is the operator's to fix, not the message's fault: retried as
    Telegram's refused token and Graph's 190 are, not failed for good (every reply lost)."""
    config = AccountConfig(channel="twilio", api_base_url=fake.url, credentials={
        "account_sid": ACCOUNT_SID, "auth_token": "not-the-token", "from_number": SENDER})
    adapter = ChannelRegistry().create("twilio", account="wa", config=config, http=http, public_url=PUBLIC_URL)
    with pytest.raises(DeliveryTemporary, match="20003") as caught:
        await adapter.send("wa", _fresh(CHAT), {"role": "bot", "text": "Hi"})
    assert caught.value.retry_after == CREDENTIALS_RETRY_AFTER == 60.0
    assert fake.sent == []
    fake.fail_next(401, 20003)  # the same answer for the right account (a token rotated meanwhile)
    with pytest.raises(DeliveryTemporary, match="Authenticate") as again:
        await _adapter(fake, http).send("wa", _fresh(CHAT), {"role": "bot", "text": "Hi", "ref": "r:1"})
    assert again.value.retry_after == 60.0


async def test_63016_falls_back_to_the_template_and_a_closed_window_uses_it(fake: FakeTwilio,
                                                                          http: aiohttp.ClientSession) -> None:
    fake.enforce_window = True
    fake.add_content(TEMPLATE_CONTENT, [], body="Hello {{1}}, your order {{2}} has shipped.")
    adapter = _adapter(fake, http, templates={"order_shipped": TEMPLATE_CONTENT})
    entry = {"role": "bot", "ref": "r:t", "text": "Your order has shipped.", "template": "order_shipped",
             "template_params": ["Ada", "A-17"]}
    # Our record says the window is open, Twilio says it is not: 63016, then the template.
    sid = await adapter.send("wa", _fresh(CHAT), entry)
    assert [c.status for c in fake.calls] == [400, 201]
    (sent,) = fake.sent
    assert sent.sid == sid and sent.content_sid == TEMPLATE_CONTENT and sent.body == ""
    assert sent.text == "Hello Ada, your order A-17 has shipped."
    # Our record says the window is closed: the template straight away.
    await adapter.send("wa", CHAT, entry)
    assert [c.status for c in fake.calls] == [400, 201, 201]
    # No template: rejected.
    with pytest.raises(DeliveryRejected, match="24-hour"):
        await adapter.send("wa", CHAT, {"role": "bot", "ref": "r:x", "text": "Free-form"})
    # A template with no ContentSid configured and no text to send instead.
    with pytest.raises(DeliveryRejected, match=r"settings\.templates"):
        await adapter.send("wa", CHAT, {"role": "bot", "ref": "r:y", "template": "unknown"})
    # Inside the window, free-form text goes as it is.
    fake.customer_wrote(CUSTOMER)
    await adapter.send("wa", _fresh(CHAT), {"role": "bot", "ref": "r:z", "text": "Free-form"})
    assert fake.sent[-1].body == "Free-form"


async def test_a_retried_multi_part_message_does_not_repeat_its_first_parts(fake: FakeTwilio,
                                                                          http: aiohttp.ClientSession) -> None:
    adapter = _adapter(fake, http)
    text = "\n\n".join(f"Paragraph {i}: " + "lorem ipsum " * 60 for i in range(3))
    entry = {"role": "bot", "ref": "r:long", "text": text,
             "attachments": [{"kind": "image", "url": "https://cdn.example.com/a.jpg", "name": "a"}]}
    fake.fail_next(429, 20429, retry_after=1, after=1)  # the second part is refused
    with pytest.raises(DeliveryTemporary):
        await adapter.send("wa", _fresh(CHAT), entry)
    assert len(fake.sent) == 1
    last = await adapter.send("wa", _fresh(CHAT), entry)
    bodies = [m.body for m in fake.sent]
    assert len(bodies) == len(set(bodies)), "a part was sent twice"
    assert " ".join(bodies).split() == text.split()
    assert fake.sent[-1].sid == last and fake.sent[-1].media_urls == ["https://cdn.example.com/a.jpg"]


async def test_send_form_fields(fake: FakeTwilio, http: aiohttp.ClientSession) -> None:
    """What reaches Twilio: To/From with the whatsapp: prefix, StatusCallback, MediaUrl."""
    adapter = _adapter(fake, http, status_callbacks=True)
    await adapter.send("wa", _fresh(CHAT), {"role": "bot", "ref": "r:1", "text": "Look",
                                            "attachments": [{"kind": "image", "url": "https://x.example/a.png"}]})
    (m,) = fake.sent
    assert (m.to, m.from_, m.body, m.media_urls) == (WA_CUSTOMER, WA_SENDER, "Look", ["https://x.example/a.png"])
    assert m.status_callback == f"{PUBLIC_URL}/webhooks/twilio/wa"
    quiet = _adapter(fake, http, status_callbacks=False)
    await quiet.send("wa", _fresh(CHAT), {"role": "bot", "ref": "r:2", "text": "No callbacks"})
    assert fake.sent[-1].status_callback is None
    with pytest.raises(DeliveryRejected):
        await adapter.send("wa", {"channel": "twilio"}, {"role": "bot", "text": "to nobody"})
    assert fake.sent[0].content_variables is None


async def test_a_list_mapped_to_a_list_picker_content(fake: FakeTwilio, http: aiohttp.ClientSession) -> None:
    picker = "HX" + "c3" * 16
    fake.add_content(picker, [("Tea", "tea"), ("Coffee", "coffee")], kind="twilio/list-picker")
    adapter = _adapter(fake, http, content_sids={"drinks": picker})
    entry = {"role": "bot", "ref": "r:l", "step": "drinks", "kind": "list", "text": "Pick a drink",
             "list": {"button": "Drinks", "header": None, "footer": None, "sections": [{"title": "Hot", "rows": [
                 {"id": "tea", "title": "Tea", "description": None, "number": 1},
                 {"id": "coffee", "title": "Coffee", "description": None, "number": 2}]}]}}
    await adapter.send("wa", _fresh(CHAT), entry)
    (sent,) = fake.sent
    assert sent.content_sid == picker and sent.content_variables == {"1": "Pick a drink"}
    assert sent.buttons == [("Tea", "tea"), ("Coffee", "coffee")]
    # The pick comes back with the item's id and title.
    params = fake.inbound(to=WA_SENDER, from_=WA_CUSTOMER, body="Coffee") + [("ListId", "coffee"),
                                                                           ("ListTitle", "Coffee")]
    url = f"{PUBLIC_URL}/webhooks/twilio/wa"
    body = "&".join(f"{key}={value}" for key, value in params).replace("+", "%2B").encode()
    request = RawRequest("POST", url, {"X-Twilio-Signature": fake.sign(url, params)}, body)
    adapter.verify(request)
    (item,) = adapter.parse(request)
    assert (item.kind, item.payload, item.text, item.chat_id) == ("message", "coffee", "Coffee", CUSTOMER)
    # Without a mapping the same list is numbered text.
    await _adapter(fake, http).send("wa", _fresh(CHAT), entry)
    assert fake.sent[-1].body == "Pick a drink\n\n1. Tea\n2. Coffee"
