"""Twilio Programmable Messaging: WhatsApp (channel ``twilio``) and SMS/MMS (channel ``sms``).

Inbound, Twilio posts form-encoded webhooks to ``/webhooks/<channel>/<account>``: customer
messages and the status callbacks of messages we sent (``MessageStatus``) arrive at the same
URL. Each request is checked with the ``twilio`` package's ``RequestValidator`` over the exact
public URL Twilio called plus every form parameter (``X-Twilio-Signature``; a SharedKey
signature when ``X-Twilio-Webhooks-Signature-Settings`` names one).

Outbound, messages go through ``twilio.rest.Client.messages.create_async``. The SDK's async
path runs on an ``AsyncHttpClient``; ours sends over the process's shared aiohttp session (no
thread pool, no second connection pool, no blocking the event loop) and keeps each response's
headers so a 429 can honour ``Retry-After``. ``api_base_url`` replaces
``https://api.twilio.com`` (tests point it at a fake).

Rendering: SMS gets numbered text. WhatsApp gets numbered text too, unless the account maps
the message's buttons or list to a Content API ``ContentSid`` (``settings.content_sids``), in
which case the content (a ``twilio/quick-reply`` or ``twilio/list-picker`` whose body is
``{{1}}``) is sent with the message text as variable 1. A step's ``template`` is sent as the
``ContentSid`` named in ``settings.templates``; on WhatsApp it is also used when the 24-hour
window is closed, or when Twilio answers 63016 to a free-form message.

Errors: 429 / 20429 / 5xx / network → ``DeliveryTemporary`` (``retry_after`` from the
``Retry-After`` header); refused credentials (401, 20003) → ``DeliveryTemporary`` after 60 s,
as Telegram's refused token and Graph's 190 (``base.credentials_refused``); 63016 without a
template, 21610 (unsubscribed) and other 4xx → ``DeliveryRejected``.
"""

from __future__ import annotations

import base64
import contextvars
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlsplit

import aiohttp
from multidict import MultiDict
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http import AsyncHttpClient
from twilio.http.response import Response
from twilio.request_validator import (
    SIGNATURE_SETTINGS_HEADER,
    RequestValidator,
    get_signature_algorithm,
)
from twilio.rest import Client

from ..config import AccountConfig
from ..store.ratelimit import SharedLimiter
from .base import (
    Capabilities,
    ChannelError,
    DeliveryRejected,
    DeliveryTemporary,
    Inbound,
    InboundAttachment,
    MalformedWebhook,
    RawRequest,
    WebhookRejected,
    credentials_refused,
)
from .pacing import AccountPacing
from .render import Rendered, render

__all__ = ["TwilioAdapter", "create", "create_sms"]

log = logging.getLogger("salesbot.channels.twilio")

DEFAULT_API_BASE = "https://api.twilio.com"
WHATSAPP = "whatsapp:"
WINDOW_SECONDS = 24 * 3600
BODY_MAX = 1600  # Twilio's limit for Body
CAPTION_MAX = 1024  # WhatsApp media captions and Content API bodies
MMS_MEDIA_MAX = 10
#: Outbox limits used when an account's settings do not say: a WhatsApp sender takes 10
#: messages per second by default; an SMS long code 1 (raise ``rate`` for toll-free numbers,
#: short codes and messaging services).
WHATSAPP_LIMITS = {"rate": 10.0, "burst": 10, "chat_interval": 1.0}
SMS_LIMITS = {"rate": 1.0, "burst": 1, "chat_interval": 1.0}

_IGNORED_STATUSES = frozenset({"queued", "accepted", "scheduled", "sending", "received", "receiving"})
_FAILED_STATUSES = frozenset({"failed", "undelivered", "canceled"})
_TEMPORARY_CODES = frozenset({20429, 63018})  # too many requests; WhatsApp sender rate limit
_ERRORS = {
    "21610": "the recipient has unsubscribed (replied STOP)",
    "21211": "invalid 'To' phone number",
    "21614": "'To' is not a mobile number",
    "30003": "unreachable destination handset",
    "30004": "message blocked",
    "30005": "unknown destination handset",
    "30006": "landline or unreachable carrier",
    "30007": "filtered by the carrier",
    "30008": "unknown error",
    "63016": "outside the WhatsApp 24-hour window: a template is needed",
    "63024": "invalid WhatsApp recipient",
}

#: The headers of the last Twilio API response seen by the current task (for Retry-After).
_last_headers: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar(
    "twilio_last_headers", default=None)


class _SessionHttpClient(AsyncHttpClient):  # type: ignore[misc]  # an untyped SDK class (see the imports)
    """The twilio SDK's async HTTP client contract, over an aiohttp session owned elsewhere."""

    def __init__(self, session: aiohttp.ClientSession, timeout: float | None = None) -> None:
        super().__init__(log, True, timeout)
        self.session = session

    async def request(self, method: str, uri: str, params: dict[str, object] | None = None,
                      data: dict[str, object] | None = None, headers: dict[str, str] | None = None,
                      auth: tuple[str, str] | None = None, timeout: float | None = None,
                      allow_redirects: bool = False) -> Response:
        form: list[tuple[str, str]] = []
        for key, value in (data or {}).items():  # MediaUrl=[…] becomes repeated MediaUrl fields
            for v in value if isinstance(value, list | tuple) else [value]:
                form.append((key, str(v)))
        headers = dict(headers or {})
        if auth:  # built here: aiohttp 3.14 deprecates BasicAuth
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        wait = timeout or self.timeout
        async with self.session.request(
            method.upper(), uri, params={k: str(v) for k, v in (params or {}).items()} or None,
            data=form or None, headers=headers, allow_redirects=allow_redirects,
            timeout=aiohttp.ClientTimeout(total=wait) if wait else None,
        ) as resp:
            text = await resp.text()
            _last_headers.set(dict(resp.headers))
            return Response(resp.status, text, resp.headers)


class _OutsideWindow(Exception):
    """Twilio said 63016: a free-form WhatsApp message outside the 24-hour window."""


def _header(headers: Mapping[str, str], name: str) -> str | None:
    lname = name.lower()
    for key, value in headers.items():
        if key.lower() == lname:
            return value
    return None


def _number(address: str) -> str:
    return address.removeprefix(WHATSAPP)


def _media_kind(mime: str) -> str:
    major = mime.split("/", 1)[0].lower()
    if major == "image":
        return "image"
    if major == "video":
        return "video"
    if major == "audio":
        return "voice" if "ogg" in mime.lower() else "audio"  # WhatsApp voice notes are Opus/Ogg
    return "document"


def _retry_after() -> float | None:
    headers = _last_headers.get()
    value = _header(headers, "Retry-After") if headers else None
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def _content_variables(params: Any) -> str | None:
    if params is None:
        return None
    if isinstance(params, Mapping):
        values = {str(k): "" if v is None else str(v) for k, v in params.items()}
    elif isinstance(params, list | tuple):
        values = {str(i): "" if v is None else str(v) for i, v in enumerate(params, 1)}
    else:
        values = {"1": str(params)}
    return json.dumps(values, ensure_ascii=False)


class TwilioAdapter:
    """One Twilio sender (a WhatsApp sender or an SMS number / messaging service)."""

    #: The answer to a webhook: empty TwiML (replies go out through the REST API, later).
    webhook_reply = ("text/xml", '<?xml version="1.0" encoding="UTF-8"?><Response/>')

    def __init__(self, *, name: str, whatsapp: bool, account: str, config: AccountConfig,
                 http: aiohttp.ClientSession, public_url: str) -> None:
        self.name = name
        self.account = account
        self.whatsapp = whatsapp
        creds = {k: v.get_secret_value() for k, v in config.credentials.items()}
        settings = config.settings
        self.account_sid = creds.get("account_sid") or ""
        self.auth_token = creds.get("auth_token") or ""
        if not self.account_sid or not self.auth_token:
            raise ChannelError(f"account {account!r} ({name}): credentials need account_sid and auth_token")
        self.messaging_service_sid = creds.get("messaging_service_sid") or settings.get("messaging_service_sid")
        sender = creds.get("from_number") or settings.get("from_number")
        if not sender and not self.messaging_service_sid:
            raise ChannelError(f"account {account!r} ({name}): set credentials.from_number "
                               "(or messaging_service_sid)")
        self.sender = self._address(str(sender)) if sender else None
        self.webhook_key = creds.get("webhook_key")  # a SharedKey secret, when Webhook Rules use one
        self.content_sids: dict[str, str] = dict(settings.get("content_sids") or {}) if whatsapp else {}
        self.templates: dict[str, str] = dict(settings.get("templates") or {})
        self.mms = bool(settings.get("mms", True))
        self.status_callback = (f"{public_url.rstrip('/')}/webhooks/{name}/{account}"
                                if settings.get("status_callbacks", True) else None)
        #: what the outbox uses when the account's settings do not say (see services)
        self.default_limits = dict(WHATSAPP_LIMITS if whatsapp else SMS_LIMITS)
        self.pacing = AccountPacing(name, account, settings, self.default_limits)  # per API call, every process
        kinds = frozenset({"image", "video", "audio", "voice", "document"})
        self.capabilities = Capabilities(
            max_buttons=10 if self.content_sids else 0, button_title_max=20, payload_max_bytes=200,
            lists=False, text_max=BODY_MAX, url_buttons=False,
            attachments=kinds if (whatsapp or self.mms) else frozenset(),
            templates=bool(self.templates))
        self._text_caps = Capabilities(max_buttons=0, button_title_max=20, text_max=BODY_MAX,
                                       attachments=self.capabilities.attachments)
        self._content_caps = Capabilities(max_buttons=0, button_title_max=20, text_max=CAPTION_MAX,
                                          attachments=self.capabilities.attachments)
        self.client = Client(self.account_sid, self.auth_token,
                             http_client=_SessionHttpClient(http),
                             environment={"TWILIO_EDGE": "", "TWILIO_REGION": ""})
        self.client.api.base_url = (config.api_base_url or DEFAULT_API_BASE).rstrip("/")
        # Parts of a multi-part message already sent, so a retry does not repeat them.
        self._progress: OrderedDict[str, list[str]] = OrderedDict()

    def use_limiter(self, limiter: SharedLimiter) -> None:
        self.pacing.use(limiter)

    def _address(self, number: str) -> str:
        if self.whatsapp and not number.startswith(WHATSAPP):
            return WHATSAPP + number
        return number

    # ------------------------------------------------------------------ inbound
    def handshake(self, request: RawRequest) -> tuple[int, str] | None:
        return None

    def verify(self, request: RawRequest) -> None:
        signature = _header(request.headers, "X-Twilio-Signature")
        if not signature:
            raise WebhookRejected("missing X-Twilio-Signature", 401)
        settings_header = _header(request.headers, SIGNATURE_SETTINGS_HEADER)
        algorithm = get_signature_algorithm(settings_header)
        key = self.webhook_key if settings_header and self.webhook_key else self.auth_token
        body = request.body.decode("utf-8", "replace")
        params: Any
        # A JSON-bodied webhook carries the body's hash as the query parameter ``bodySHA256``; the
        # validator then hashes the body string. Decided as the validator decides (``parse_qs``,
        # blank values dropped): a substring test handed it a string it then walked as a dict (a 500).
        if "bodySHA256" in parse_qs(urlsplit(request.url).query):
            params = body
        else:
            params = MultiDict(parse_qsl(body, keep_blank_values=True))
        try:
            valid = RequestValidator(key).validate(request.url, params, signature, algorithm=algorithm)
        except (AttributeError, TypeError, ValueError, UnicodeError):  # whatever the request holds: refused
            valid = False
        if not valid:
            raise WebhookRejected("X-Twilio-Signature does not match", 403)

    def parse(self, request: RawRequest) -> list[Inbound]:
        try:
            text = request.body.decode("utf-8")
            pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text))
        except (UnicodeDecodeError, ValueError) as exc:
            raise MalformedWebhook(f"not a form-encoded body: {exc}") from exc
        p: MultiDict[str] = MultiDict(pairs)
        sid = p.get("MessageSid") or p.get("SmsMessageSid") or p.get("SmsSid")
        if not sid:
            raise MalformedWebhook("no MessageSid")
        status = (p.get("MessageStatus") or "").lower()
        if status and status not in ("received", "receiving"):
            return self._status(p, sid, status)
        return [self._message(p, sid)]

    def _message(self, p: MultiDict[str], sid: str) -> Inbound:
        sender = p.get("From")
        if not sender or not _number(sender):
            raise MalformedWebhook("no From")
        number = _number(sender)
        try:
            count = int(p.get("NumMedia") or 0)
        except ValueError as exc:
            raise MalformedWebhook("NumMedia is not a number") from exc
        if not 0 <= count <= MMS_MEDIA_MAX:
            raise MalformedWebhook("NumMedia out of range")
        attachments = []
        for i in range(count):
            url = p.get(f"MediaUrl{i}")
            if not url:
                raise MalformedWebhook(f"NumMedia={count} but no MediaUrl{i}")
            mime = p.get(f"MediaContentType{i}") or "application/octet-stream"
            attachments.append(InboundAttachment(_media_kind(mime), url, mime=mime,
                                                 platform_id=url.rstrip("/").rsplit("/", 1)[-1]))
        if p.get("Latitude") and p.get("Longitude"):
            attachments.append(InboundAttachment(
                "location", f"geo:{p['Latitude']},{p['Longitude']}",
                name=p.get("Address") or p.get("Label") or None))
        payload = p.get("ButtonPayload") or p.get("ListId") or None
        text = p.get("Body") or ""
        if payload:
            text = p.get("ButtonText") or p.get("ListTitle") or text
        return Inbound(
            kind="message", chat_id=number, dedupe_id=sid, sender_id=number,
            profile_name=p.get("ProfileName") or None, phone=number, text=text, payload=payload,
            attachments=tuple(attachments), start_param=p.get("ReferralSourceId") or None)

    def _status(self, p: MultiDict[str], sid: str, status: str) -> list[Inbound]:
        if status in _IGNORED_STATUSES:
            return []
        code = p.get("ErrorCode") or None
        failed = status in _FAILED_STATUSES
        error = None
        if failed:
            error = p.get("ErrorMessage") or _ERRORS.get(code or "") or f"twilio status {status}"
            if code:
                error = f"{error} (Twilio error {code})"
        return [Inbound(
            kind="status", chat_id=_number(p.get("To") or ""), dedupe_id=f"{sid}:{status}",
            status="failed" if failed else status, platform_message_id=sid, error=error,
            error_code=code)]

    async def acknowledge(self, item: Inbound) -> None:
        return None

    # ------------------------------------------------------------------ outbound
    async def send(self, account: str, chat: Mapping[str, str], message: Mapping[str, Any]) -> str | None:
        number = chat.get("external_id")
        if not number:
            raise DeliveryRejected("the conversation has no phone number to send to")
        to = self._address(number)
        template = message.get("template")
        template_sid = self.templates.get(template) if template else None
        if template and not template_sid and not (message.get("text") or message.get("attachments")):
            raise DeliveryRejected(f"template {template!r} has no ContentSid: add it to the account's "
                                   "settings.templates")
        # Parts of a multi-part message that left before a temporary failure are not sent again.
        key = f"{account}:{number}:{message.get('ref')}" if message.get("ref") else None
        done = self._progress.pop(key, []) if key else []
        use_template = template_sid is not None and (
            not message.get("text") or (self.whatsapp and not self._in_window(chat)))
        try:
            if use_template:
                assert template_sid is not None
                return await self._create(to, content_sid=template_sid,
                                          content_variables=_content_variables(message.get("template_params")))
            try:
                return await self._send_free(to, message, done)
            except _OutsideWindow:
                if template_sid is None:
                    raise DeliveryRejected(_ERRORS["63016"] + " (Twilio error 63016)") from None
            log.info("twilio.window_closed_template", extra={"account": account})
            return await self._create(to, content_sid=template_sid,
                                      content_variables=_content_variables(message.get("template_params")))
        except DeliveryTemporary:
            if key and done:
                self._progress[key] = done
                while len(self._progress) > 10_000:
                    self._progress.popitem(last=False)
            raise

    def _in_window(self, chat: Mapping[str, str]) -> bool:
        try:
            last = float(chat.get("last_inbound_at") or 0)
        except ValueError:
            return False
        return time.time() - last < WINDOW_SECONDS

    def _content_sid(self, message: Mapping[str, Any]) -> str | None:
        """The Content API content mapped to this message's buttons or list, if any."""
        if not self.content_sids:
            return None
        if message.get("list"):
            titles = [r["title"] for s in message["list"]["sections"] for r in s["rows"]]
        else:
            titles = [b["title"] for b in message.get("buttons") or () if b.get("payload")]
        if not titles:
            return None
        step = message.get("step")
        if step and step in self.content_sids:
            return self.content_sids[step]
        return self.content_sids.get("|".join(titles))

    async def _send_free(self, to: str, message: Mapping[str, Any], done: list[str]) -> str | None:
        """Text, numbered menus or Content API quick replies, and media; ``done`` grows per part."""
        content_sid = self._content_sid(message) if self.whatsapp else None
        if content_sid:
            plain = {**message, "list": None,
                     "buttons": [b for b in message.get("buttons") or () if not b.get("payload")]}
            parts = render(plain, self._content_caps)
        else:
            parts = render(dict(message), self._text_caps)
        calls = self._calls(parts, content_sid)
        sid: str | None = done[-1] if done else None
        for i, call in enumerate(calls):
            if i < len(done):
                continue  # sent before a temporary failure
            sid = await self._create(to, **call)
            done.append(sid)
        return sid

    def _calls(self, parts: list[Rendered], content_sid: str | None) -> list[dict[str, Any]]:
        """The API calls for a rendered message, in order."""
        calls: list[dict[str, Any]] = [{"body": p.text} for p in parts[:-1] if p.text]
        last = parts[-1]
        media = [a["url"] for a in last.attachments if a.get("url")]
        if content_sid:
            calls += [{"media_url": [url]} for url in media]
            calls.append({"content_sid": content_sid,
                          "content_variables": _content_variables({"1": last.text}) if last.text else None})
        elif not self.whatsapp:  # MMS: up to ten media with the text
            for i in range(0, max(1, len(media)), MMS_MEDIA_MAX):
                chunk = media[i:i + MMS_MEDIA_MAX]
                body = last.text if i == 0 else ""
                if body or chunk:
                    calls.append({"body": body or None, "media_url": chunk or None})
        elif len(media) == 1 and len(last.text) <= CAPTION_MAX:  # WhatsApp: the text as caption
            calls.append({"body": last.text or None, "media_url": media})
        else:
            if last.text:
                calls.append({"body": last.text})
            calls += [{"media_url": [url]} for url in media]
        return calls

    async def _create(self, to: str, **fields: Any) -> str:
        args = {k: v for k, v in fields.items() if v is not None}
        if self.messaging_service_sid:
            args["messaging_service_sid"] = self.messaging_service_sid
        if self.sender:
            args["from_"] = self.sender
        if self.status_callback:
            args["status_callback"] = self.status_callback
        await self.pacing.acquire()
        try:
            created = await self.client.messages.create_async(to=to, **args)
        except TwilioRestException as exc:
            error = self._error(exc)
            if int(exc.status or 0) == 429:  # every process backs off
                await self.pacing.hold(error.retry_after if isinstance(error, DeliveryTemporary) else None)
            raise error from None
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise DeliveryTemporary(f"Twilio unreachable: {exc!r}") from None
        except TwilioException as exc:
            raise DeliveryTemporary(f"Twilio error: {exc}") from None
        return str(created.sid)

    def _error(self, exc: TwilioRestException) -> Exception:
        try:
            code = int(exc.code or 0)
        except (TypeError, ValueError):
            code = 0
        status = int(exc.status or 0)
        text = f"Twilio error {code or status}: {exc.msg}"
        if status == 429 or code in _TEMPORARY_CODES:
            return DeliveryTemporary(text, retry_after=_retry_after())
        if code == 63016:
            return _OutsideWindow(text)
        if status >= 500 or status in (408, 0):
            return DeliveryTemporary(text, retry_after=_retry_after())
        if status == 401 or code == 20003:  # the account sid / auth token were refused
            log.error("twilio.auth_failed", extra={"account": self.account, "code": code})
            return credentials_refused(f"Twilio refused the account's credentials ({text})")
        if status == 403:
            log.error("twilio.auth_failed", extra={"account": self.account, "code": code})
        explained = _ERRORS.get(str(code))
        return DeliveryRejected(f"{explained} ({text})" if explained else text)

    async def close(self) -> None:
        return None  # the HTTP session belongs to the services


def create(*, account: str, config: AccountConfig, http: aiohttp.ClientSession,
           public_url: str) -> TwilioAdapter:
    """WhatsApp through Twilio (channel ``twilio``)."""
    return TwilioAdapter(name=config.channel, whatsapp=True, account=account, config=config,
                         http=http, public_url=public_url)


def create_sms(*, account: str, config: AccountConfig, http: aiohttp.ClientSession,
               public_url: str) -> TwilioAdapter:
    """SMS/MMS through Twilio (channel ``sms``)."""
    return TwilioAdapter(name=config.channel, whatsapp=False, account=account, config=config,
                         http=http, public_url=public_url)
