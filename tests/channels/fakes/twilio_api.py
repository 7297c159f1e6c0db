"""A fake Twilio REST API and webhook sender on loopback (aiohttp), following the documented API.

REST (https://www.twilio.com/docs/messaging/api/message-resource#create-a-message-resource):

* ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json``, form-encoded: ``To``, ``From`` or
  ``MessagingServiceSid``, ``Body``, ``MediaUrl`` (repeated), ``ContentSid``,
  ``ContentVariables`` (JSON object), ``StatusCallback``. HTTP Basic auth
  ``AccountSid:AuthToken`` is checked (20003 otherwise).
* 201 with the message resource (``sid`` ``SM…``, ``status`` ``queued`` — ``accepted`` with
  a messaging service); errors as ``{"code", "message", "more_info", "status"}`` with the same
  HTTP status: 21602 no body, 21603 no From, 21604 no To, 21617 body over 1600 characters,
  21623 too many media, 21654 ContentVariables without ContentSid, 21655 unknown ContentSid,
  21910 a WhatsApp From with a non-WhatsApp To, 21610 unsubscribed recipient (``unsubscribed``),
  63016 a free-form WhatsApp message outside the 24-hour window (with ``enforce_window``:
  synchronously, or — like the real service — accepted and later reported by a ``failed``
  status callback (``deliver_callbacks``) when ``window_failure="callback"``), and 429/20429 with
  ``Retry-After`` when a sender number exceeds its rate (a bucket of ``burst`` refilled at ``rate`` per second).
* Content API (``add_content``): a ``twilio/quick-reply`` or ``twilio/list-picker`` content
  is stored with its actions; a message sent with its ``ContentSid`` shows those buttons and the
  body with ``{{n}}`` replaced by ``ContentVariables``.

Webhooks (https://www.twilio.com/docs/messaging/guides/webhook-request): ``post`` sends a
form-encoded POST signed with ``RequestValidator.compute_signature`` over the public URL (the
one configured at Twilio) and delivers it to the local server that URL is routed to, as a
reverse proxy would. ``inbound`` builds an incoming SMS/WhatsApp message's parameters;
``post_status`` sends a status callback for a message we received.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import urlencode

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import MultiDict
from twilio.request_validator import RequestValidator

from tests.waiting import WorkerDriver

if TYPE_CHECKING:
    from bot.runtime.worker import Worker
    from bot.server.services import Services

WHATSAPP = "whatsapp:"
BODY_MAX = 1600
MMS_MEDIA_MAX = 10


def _sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


@dataclass
class Content:
    sid: str
    kind: str  # twilio/quick-reply | twilio/list-picker
    body: str
    actions: list[dict[str, str]]  # quick-reply: {"title", "id"}; list-picker: {"item", "id", "description"?}


@dataclass
class SentMessage:
    sid: str
    account_sid: str
    to: str
    from_: str | None
    messaging_service_sid: str | None
    body: str
    media_urls: list[str]
    content_sid: str | None
    content_variables: dict[str, str] | None
    status_callback: str | None
    content: Content | None
    at: float  # time.monotonic() when accepted

    @property
    def number(self) -> str:
        return self.to.removeprefix(WHATSAPP)

    @property
    def text(self) -> str:
        """What the customer reads: the Body, or the content's body with its variables."""
        if self.content is None:
            return self.body
        variables = self.content_variables or {}
        return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: variables.get(m.group(1), ""), self.content.body)

    @property
    def buttons(self) -> list[tuple[str, str]]:
        """(title, id) of the content's quick replies or list items."""
        if self.content is None:
            return []
        return [(a.get("title") or a.get("item") or "", a["id"]) for a in self.content.actions]


@dataclass
class Failure:
    status: int
    code: int
    message: str
    retry_after: float | None = None
    after: int = 0  # calls to let through before this failure


@dataclass
class Call:
    sender: str
    to: str
    status: int
    at: float


@dataclass
class WebhookPost:
    url: str
    params: list[tuple[str, str]]
    status: int
    text: str


ERROR_MESSAGES = {
    20003: "Authenticate",
    20429: "Too Many Requests",
    21602: "Message body is required.",
    21603: "A 'From' phone number is required.",
    21604: "A 'To' phone number is required.",
    21610: "Attempt to send to unsubscribed recipient",
    21617: "The concatenated message body exceeds the 1600 character limit.",
    21623: "Number of media files exceeds allowed limit.",
    21654: "ContentVariables require ContentSid.",
    21655: "The ContentSid is Invalid.",
    21910: "Invalid From and To pair. From and To should be of the same channel.",
    63016: "Failed to send freeform message because you are outside the allowed window.",
}


class FakeTwilio:
    def __init__(self, *, account_sid: str, auth_token: str, rate: float | None = None, burst: int = 1,
                 enforce_window: bool = False, window_failure: str = "sync") -> None:
        self.account_sid, self.auth_token = account_sid, auth_token
        self.rate, self.burst = rate, burst
        self.enforce_window = enforce_window
        self.window_failure = window_failure
        self.open_windows: dict[str, float] = {}  # customer number -> time.time() of their last message
        self.unsubscribed: set[str] = set()
        self.contents: dict[str, Content] = {}
        self.sent: list[SentMessage] = []
        self.calls: list[Call] = []
        self.failures: deque[Failure] = deque()
        self.rate_limited = 0
        self.webhooks: list[WebhookPost] = []
        self._routes: list[tuple[str, str]] = []  # (public prefix, local prefix)
        self._buckets: dict[str, tuple[float, float]] = {}
        self.doomed: list[tuple[SentMessage, str]] = []  # accepted messages that will fail (code)
        self._http: aiohttp.ClientSession | None = None
        app = web.Application()
        app.router.add_post("/2010-04-01/Accounts/{account}/Messages.json", self._create)
        self.server = TestServer(app, host="127.0.0.1")

    # ------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> Self:
        await self.server.start_server()
        self._http = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._http is not None:
            await self._http.close()
        await self.server.close()

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    # ------------------------------------------------------------------ set-up
    def route(self, public_prefix: str, local_prefix: str) -> None:
        """Webhooks to ``public_prefix…`` reach ``local_prefix…`` (a reverse proxy's job)."""
        self._routes.append((public_prefix.rstrip("/"), local_prefix.rstrip("/")))

    def add_content(self, sid: str, titles: Iterable[tuple[str, str]], *, kind: str = "twilio/quick-reply",
                    body: str = "{{1}}") -> Content:
        key = "title" if kind == "twilio/quick-reply" else "item"
        content = Content(sid, kind, body, [{key: title, "id": id_} for title, id_ in titles])
        self.contents[sid] = content
        return content

    def fail_next(self, status: int, code: int, message: str | None = None, *,
                  retry_after: float | None = None, after: int = 0) -> None:
        """Fail a coming call (the next one, or the one after ``after`` successful calls)."""
        self.failures.append(Failure(status, code, message or ERROR_MESSAGES.get(code, "error"), retry_after, after))

    def customer_wrote(self, number: str) -> None:
        """The customer's last message: opens the WhatsApp 24-hour window."""
        self.open_windows[number] = time.time()

    # ------------------------------------------------------------------ REST
    def _error(self, status: int, code: int, message: str | None = None,
               headers: dict[str, str] | None = None) -> web.Response:
        body = {"code": code, "message": message or ERROR_MESSAGES.get(code, "error"),
                "more_info": f"https://www.twilio.com/docs/errors/{code}", "status": status}
        return web.json_response(body, status=status, headers=headers)

    def _authorised(self, request: web.Request, account: str) -> bool:
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
        except ValueError:
            return False
        return user == self.account_sid == account and password == self.auth_token

    def _take(self, sender: str) -> bool:
        if self.rate is None:
            return True
        now = time.monotonic()
        tokens, at = self._buckets.get(sender, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate)
        if tokens < 1:
            self._buckets[sender] = (tokens, now)
            return False
        self._buckets[sender] = (tokens - 1, now)
        return True

    async def _create(self, request: web.Request) -> web.Response:
        account = request.match_info["account"]
        if not self._authorised(request, account):
            return self._error(401, 20003)
        form = await request.post()
        to, sender = str(form.get("To") or ""), str(form.get("From") or "")
        service = str(form.get("MessagingServiceSid") or "")
        content_sid = str(form.get("ContentSid") or "") or None
        number = to.removeprefix(WHATSAPP)
        outside = (self.enforce_window and to.startswith(WHATSAPP) and content_sid is None
                   and time.time() - self.open_windows.get(number, 0) > 24 * 3600)
        response = self._check(form, to, sender, service)
        if response is None and outside and self.window_failure == "sync":
            response = self._error(400, 63016)
        self.calls.append(Call(sender or service, to, response.status if response else 201, time.monotonic()))
        if response is not None:
            return response
        variables = json.loads(str(form["ContentVariables"])) if form.get("ContentVariables") else None
        message = SentMessage(
            sid=_sid("SM" if not form.getall("MediaUrl", []) else "MM"), account_sid=account, to=to,
            from_=sender or None, messaging_service_sid=service or None, body=str(form.get("Body") or ""),
            media_urls=[str(u) for u in form.getall("MediaUrl", [])], content_sid=content_sid,
            content_variables=variables, status_callback=str(form.get("StatusCallback") or "") or None,
            content=self.contents.get(content_sid) if content_sid else None, at=time.monotonic())
        self.sent.append(message)
        if outside:  # accepted now, failed later: see ``deliver_callbacks``
            self.doomed.append((message, "63016"))
        now = format_datetime(datetime.now(UTC), usegmt=True)
        uri = f"/2010-04-01/Accounts/{account}/Messages/{message.sid}.json"
        return web.json_response({
            "account_sid": account, "api_version": "2010-04-01", "body": message.text,
            "date_created": now, "date_sent": None, "date_updated": now, "direction": "outbound-api",
            "error_code": None, "error_message": None, "from": message.from_,
            "messaging_service_sid": message.messaging_service_sid, "num_media": str(len(message.media_urls)),
            "num_segments": "1", "price": None, "price_unit": "USD", "sid": message.sid,
            "status": "accepted" if service else "queued", "to": to, "uri": uri,
            "subresource_uris": {"media": uri.replace(".json", "/Media.json")},
        }, status=201)

    def _check(self, form: Any, to: str, sender: str, service: str) -> web.Response | None:
        if self.failures and self.failures[0].after > 0:
            self.failures[0].after -= 1
        elif self.failures:
            f = self.failures.popleft()
            headers = {"Retry-After": str(int(f.retry_after))} if f.retry_after is not None else None
            return self._error(f.status, f.code, f.message, headers)
        if not to:
            return self._error(400, 21604)
        if not sender and not service:
            return self._error(400, 21603)
        body = str(form.get("Body") or "")
        media = form.getall("MediaUrl", [])
        if not body and not media and not form.get("ContentSid"):
            return self._error(400, 21602)
        if len(body) > BODY_MAX:
            return self._error(400, 21617)
        if form.get("ContentVariables") and not form.get("ContentSid"):
            return self._error(400, 21654)
        if form.get("ContentSid") and form["ContentSid"] not in self.contents:
            return self._error(400, 21655)
        if sender.startswith(WHATSAPP) != to.startswith(WHATSAPP):
            return self._error(400, 21910)
        if len(media) > (1 if to.startswith(WHATSAPP) else MMS_MEDIA_MAX):
            return self._error(400, 21623)
        number = to.removeprefix(WHATSAPP)
        if number in self.unsubscribed:
            return self._error(400, 21610)
        if not self._take(sender or service):
            self.rate_limited += 1
            return self._error(429, 20429, headers={"Retry-After": "1"})
        return None

    # ------------------------------------------------------------------ webhooks
    def _local(self, url: str) -> str:
        for public, local in self._routes:
            if url.startswith(public):
                return local + url[len(public):]
        return url

    def sign(self, url: str, params: Iterable[tuple[str, str]], token: str | None = None) -> str:
        return RequestValidator(token or self.auth_token).compute_signature(url, MultiDict(list(params)))

    async def post(self, url: str, params: Iterable[tuple[str, str]], *, signature: str | None = None,
                   sign: bool = True) -> WebhookPost:
        """POST a webhook as Twilio does: form-encoded, signed over the public ``url``."""
        assert self._http is not None
        pairs = [(k, str(v)) for k, v in params]
        headers = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
                   "User-Agent": "TwilioProxy/1.1", "I-Twilio-Idempotency-Token": secrets.token_hex(16)}
        if sign:
            headers["X-Twilio-Signature"] = signature if signature is not None else self.sign(url, pairs)
        async with self._http.post(self._local(url), data=urlencode(pairs).encode(), headers=headers) as resp:
            post = WebhookPost(url, pairs, resp.status, await resp.text())
        self.webhooks.append(post)
        return post

    def inbound(self, *, to: str, from_: str, body: str = "", sid: str | None = None,
                media: Iterable[tuple[str, str]] = (), button: tuple[str, str] | None = None,
                profile_name: str | None = None) -> list[tuple[str, str]]:
        """The parameters of an incoming message (WhatsApp when ``from_`` starts with ``whatsapp:``)."""
        sid = sid or _sid("SM" if not media else "MM")
        media = list(media)
        params = [("ToCountry", "US"), ("ToState", "CA"), ("SmsMessageSid", sid),
                  ("NumMedia", str(len(media))), ("ToCity", ""), ("FromZip", ""), ("SmsSid", sid),
                  ("FromState", ""), ("SmsStatus", "received"), ("FromCity", ""), ("Body", body),
                  ("FromCountry", "US"), ("To", to), ("ToZip", ""), ("NumSegments", "1"),
                  ("MessageSid", sid), ("AccountSid", self.account_sid), ("From", from_),
                  ("ApiVersion", "2010-04-01")]
        for i, (url, mime) in enumerate(media):
            params += [(f"MediaContentType{i}", mime), (f"MediaUrl{i}", url)]
        if from_.startswith(WHATSAPP):
            number = from_[len(WHATSAPP):]
            params += [("WaId", number.lstrip("+")), ("ProfileName", profile_name or ""),
                       ("MessageType", "interactive" if button else ("image" if media else "text")),
                       ("Forwarded", "false"), ("FrequentlyForwarded", "false"), ("ReferralNumMedia", "0")]
            self.customer_wrote(number)
            if button:
                payload, title = button
                params += [("ButtonPayload", payload), ("ButtonText", title)]
                params = [(k, title if k == "Body" else v) for k, v in params]
        return params

    def status_params(self, message: SentMessage | str, status: str, *, error_code: str | None = None,
                      to: str = "", from_: str = "") -> list[tuple[str, str]]:
        if isinstance(message, SentMessage):
            sid, to, from_ = message.sid, message.to, message.from_ or ""
        else:
            sid = message
        params = [("SmsSid", sid), ("SmsStatus", status), ("MessageStatus", status), ("To", to),
                  ("MessageSid", sid), ("AccountSid", self.account_sid), ("From", from_),
                  ("ApiVersion", "2010-04-01")]
        if error_code:
            params.append(("ErrorCode", error_code))
        if to.startswith(WHATSAPP):
            params += [("ChannelToAddress", to[len(WHATSAPP):]), ("ChannelPrefix", "whatsapp"),
                       ("ChannelInstallSid", _sid("XE"))]
        return params

    async def deliver_callbacks(self) -> list[WebhookPost]:
        """Twilio works through its queue: the doomed messages' ``failed`` status callbacks."""
        doomed, self.doomed = self.doomed, []
        return [await self.post_status(m, "failed", error_code=code) for m, code in doomed]

    async def post_status(self, message: SentMessage, status: str, *,
                          error_code: str | None = None) -> WebhookPost:
        """The status callback of a message we accepted, to its ``StatusCallback``."""
        assert message.status_callback, "the message was sent without a StatusCallback"
        return await self.post(message.status_callback, self.status_params(message, status, error_code=error_code))


# ---------------------------------------------------------------------------- our app, for end-to-end tests

PUBLIC_URL = "https://bot.example.com"  # what Twilio is configured to call; routed to the test server


@dataclass
class TwilioHarness(WorkerDriver):
    """Our app (web role) on loopback behind a "public" URL, the worker loops driven by the test."""

    fake: FakeTwilio
    server: TestServer
    services: Services
    worker: Worker

    def url(self, channel: str, account: str) -> str:
        return f"{PUBLIC_URL}/webhooks/{channel}/{account}"

    async def sent_to(self, number: str, count: int, what: str = "") -> list[SentMessage]:
        def got() -> list[SentMessage] | None:
            sent = [m for m in self.fake.sent if m.number == number]
            return sent if len(sent) >= count else None
        return await self.until(got, what=what or f"{count} messages to {number}")  # type: ignore[no-any-return]

    async def transcript(self, cid: str) -> list[dict[str, Any]]:
        from bot.store import codec
        return [codec.unpack(b) for _, b in await self.services.store.read_log(cid, 0, 1000)]

    async def state(self, cid: str) -> Any:
        from bot.store import codec
        raw = await self.services.store.state(cid)
        return codec.decode_state(raw) if raw else None


def twilio_account(fake: FakeTwilio, channel: str, *, from_number: str, **settings: Any) -> dict[str, Any]:
    """An account of our config pointing at ``fake`` (chat pacing off unless given)."""
    return {"channel": channel, "greeting_bot": settings.pop("greeting_bot", "shop"), "api_base_url": fake.url,
            "credentials": {"account_sid": fake.account_sid, "auth_token": fake.auth_token,
                            "from_number": from_number},
            "settings": {"chat_interval": 0, **settings}}


@contextlib.asynccontextmanager
async def running_app(redis_url: str, fake: FakeTwilio, accounts: dict[str, Any], flows_dir: Any,
                      **config: Any) -> AsyncIterator[TwilioHarness]:
    from bot.config import load_config
    from bot.runtime.worker import Worker
    from bot.server.app import create_app
    from bot.server.keys import SERVICES
    from tests.server.conftest import NO_AUTOMATIONS  # the example's rules would act on every test's leads

    cfg = load_config(env={}, overrides={
        "redis_url": redis_url, "flows_dir": str(flows_dir), "admin_token": "test-admin-token",
        "public_url": PUBLIC_URL, "timer_poll_interval": 0.05, "accounts": accounts,
        "automations_dir": str(NO_AUTOMATIONS), **config})
    app = create_app(cfg, role="web")
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    fake.route(PUBLIC_URL, str(server.make_url("")))
    try:
        services = app[SERVICES]
        yield TwilioHarness(fake, server, services, Worker(services))
    finally:
        await server.close()


#: The conversation the acceptance tests walk through: 3 reply buttons and an image, a list, a
#: 2-second pause, a document.
SHOP_FLOW: dict[str, Any] = {
    "format": "salesbot.flow/1", "id": "shop", "name": "Shop", "start": "hello",
    "steps": {
        "hello": {"type": "message", "text": "Hi {{ contact.name | default('there', true) }}! What would you like?",
                  "attachments": [{"kind": "image", "url": "https://cdn.example.com/welcome.jpg",
                                   "name": "welcome.jpg"}],
                  "buttons": [{"title": "Drinks", "next": "drinks"}, {"title": "Talk to a person", "next": "person"},
                              {"title": "Opening hours", "next": "hours"}]},
        "drinks": {"type": "list", "text": "Pick a drink", "button": "Drinks",
                   "sections": [{"title": "Hot", "rows": [{"id": "tea", "title": "Tea", "next": "tea"},
                                                          {"id": "coffee", "title": "Coffee", "next": "coffee"},
                                                          {"id": "cocoa", "title": "Cocoa", "next": "tea"}]}]},
        "coffee": {"type": "message", "text": "One coffee coming up.", "next": "brew"},
        "brew": {"type": "pause", "until": [{"on": "timer", "after": "2s", "next": "ready"}]},
        "ready": {"type": "message", "text": "Your coffee is ready. Here is your receipt.",
                  "attachments": [{"kind": "document", "url": "https://cdn.example.com/receipt.pdf",
                                   "name": "receipt.pdf"}]},
        "tea": {"type": "message", "text": "Tea is on its way."},
        "person": {"type": "message", "text": "A person will write to you soon.", "failed": "undelivered",
                   "next": "wait_person"},
        "wait_person": {"type": "pause", "next": "hours"},
        "hours": {"type": "message", "text": "We are open 9 to 18."},
        "undelivered": {"type": "action", "actions": [{"do": "set_variable", "name": "undelivered",
                                                        "value": "yes"}]},
    },
}


def write_flows(directory: Any, *flows: dict[str, Any]) -> Any:
    """The flows (``SHOP_FLOW`` by default) as files, each checked to compile."""
    from bot.builder.validate import check_document

    directory.mkdir(parents=True, exist_ok=True)
    for flow in flows or (SHOP_FLOW,):
        problems, compiled = check_document(flow)
        assert compiled is not None, problems
        (directory / f"{flow['id']}.json").write_text(json.dumps(flow, indent=1), encoding="utf-8")
    return directory
