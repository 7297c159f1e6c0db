"""Telegram: webhooks (or long polling) in, python-telegram-bot's ``Bot`` out.

Account configuration::

    [accounts.tg]
    channel = "telegram"
    greeting_bot = "welcome"
    api_base_url = "https://api.telegram.org"     # optional; a local Bot API server or a fake
    credentials = { token = "123:ABC", secret_token = "a-long-random-string" }
    settings = { mode = "webhook" }                # or "polling"

Inbound
    ``POST /webhooks/telegram/<account>`` with the ``X-Telegram-Bot-Api-Secret-Token`` header
    (set as ``secret_token`` in ``setWebhook``), compared in constant time: missing → 401,
    wrong (or no secret configured) → 403. ``message`` updates (text, captions, photos,
    documents, video, audio, voice, stickers, contacts, locations, ``/start <param>`` deep
    links) and ``callback_query`` updates (inline-button clicks, answered with
    ``answerCallbackQuery``) become ``Inbound`` items keyed by ``update_id``; other updates
    are acknowledged and ignored. With ``settings.mode = "polling"`` the worker runs a
    ``TelegramPoller`` (``getUpdates``) instead, delivering through the same path.

Outbound
    The shared renderer shapes each transcript entry for ``CAPABILITIES``: reply buttons and
    lists become an inline keyboard (one option per row beyond three short ones) whose
    ``callback_data`` is the payload when it fits in 64 bytes, else ``~<number>``, which comes
    back as the option's number (the interpreter matches numbers); link buttons become URL
    buttons; texts over 4096 characters are split; attachments are sent by URL
    (``sendPhoto``/``sendDocument``/…), with the text as caption when it fits in 1024.
    A 429 raises ``DeliveryTemporary`` with Telegram's ``retry_after`` and holds every call of
    the bot until it has passed; the parts of an entry already sent are not sent again on retry.
    Calls are paced to ``settings.api_rate`` (default 30) per second per bot; the outbox's
    per-chat interval (1 s) and account rate default to Telegram's limits (``DEFAULT_LIMITS``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import hmac
import json
import logging
import math
import os
import re
import secrets
import time
import warnings
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup
from telegram._utils.defaultvalue import DefaultValue
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Conflict,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
    TimedOut,
)
from telegram.request import BaseRequest, RequestData

from ..config import AccountConfig
from ..inputs import BadJson, header_bytes, loads
from .base import (
    Capabilities,
    DeliveryRejected,
    DeliveryTemporary,
    Inbound,
    InboundAttachment,
    MalformedWebhook,
    RawRequest,
    WebhookRejected,
)
from .render import ListMenu, Rendered, render

if TYPE_CHECKING:
    from ..server.services import Services

log = logging.getLogger("salesbot.channels.telegram")

DEFAULT_API = "https://api.telegram.org"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
CALLBACK_DATA_MAX = 64  # bytes
CAPTION_MAX = 1024
#: Outbox pacing for Telegram accounts unless the account's settings say otherwise: about one
#: message a second per chat, and below 30 a second per bot (bucket rate + burst <= 30).
DEFAULT_LIMITS = {"chat_interval": 1.0, "rate": 25.0, "burst": 5}

CAPABILITIES = Capabilities(
    max_buttons=10, button_title_max=64, payload_max_bytes=CALLBACK_DATA_MAX,
    lists=True, max_list_rows=100, list_title_max=64, list_description_max=120, list_button_max=64,
    url_buttons=True, quick_replies=False, text_max=4096,
    attachments=frozenset({"image", "video", "audio", "voice", "document"}), templates=False, mixed_buttons=True,
)

_SEND_METHOD = {"image": "sendPhoto", "video": "sendVideo", "audio": "sendAudio", "voice": "sendVoice",
                "document": "sendDocument"}
_FILE_FIELD = {"sendPhoto": "photo", "sendVideo": "video", "sendAudio": "audio", "sendVoice": "voice",
               "sendDocument": "document"}
_NUMBER_TOKEN = re.compile(r"^~(\d{1,4})$")
FILE_SCHEME = "tg-file:"  # an inbound file's reference: tg-file:<file_id> (resolve with getFile)


# --------------------------------------------------------------------------- HTTP for PTB
class AiohttpRequest(BaseRequest):
    """python-telegram-bot's transport over the process's shared ``aiohttp`` session."""

    def __init__(self, http: aiohttp.ClientSession, *, read_timeout: float = 20.0, connect_timeout: float = 10.0) -> None:
        self._http = http
        self._read_timeout = read_timeout
        self._connect_timeout = connect_timeout

    @property
    def read_timeout(self) -> float | None:
        return self._read_timeout

    async def initialize(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None  # the session belongs to the services

    async def do_request(self, url: str, method: str, request_data: RequestData | None = None,
                         read_timeout: Any = BaseRequest.DEFAULT_NONE, write_timeout: Any = BaseRequest.DEFAULT_NONE,
                         connect_timeout: Any = BaseRequest.DEFAULT_NONE,
                         pool_timeout: Any = BaseRequest.DEFAULT_NONE) -> tuple[int, bytes]:
        read = self._read_timeout if isinstance(read_timeout, DefaultValue) else read_timeout
        connect = self._connect_timeout if isinstance(connect_timeout, DefaultValue) else connect_timeout
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=read)
        kwargs: dict[str, Any] = {}
        headers = {"User-Agent": self.USER_AGENT}
        if request_data is not None:
            files = request_data.multipart_data
            if files:
                form = aiohttp.FormData()
                for name, value in request_data.json_parameters.items():
                    form.add_field(name, value)
                for name, (filename, content, mime) in files.items():
                    form.add_field(name, content, filename=filename, content_type=mime)
                kwargs["data"] = form
            else:
                kwargs["data"] = request_data.json_payload
                headers["Content-Type"] = "application/json"
        try:
            async with self._http.request(method, url, headers=headers, timeout=timeout, **kwargs) as resp:
                status, body = resp.status, await resp.read()
        except TimeoutError as exc:
            raise TimedOut() from exc
        except aiohttp.ClientError as exc:
            raise NetworkError(f"aiohttp.{type(exc).__name__}: {exc}") from exc
        if status == 429:
            raise _retry_after(body) or RetryAfter(1)
        return status, body


def _retry_after(body: bytes) -> RetryAfter | None:
    """PTB's own ``RetryAfter`` for a 429 body, made without its deprecation warning (PTB 22
    warns when the exception reads its int-typed ``retry_after`` for its message)."""
    try:
        seconds = json.loads(body)["parameters"]["retry_after"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(seconds, int | float) or isinstance(seconds, bool):
        return None
    with warnings.catch_warnings():  # synchronous: no other task runs inside
        warnings.simplefilter("ignore")
        return RetryAfter(max(1, int(math.ceil(seconds))))


def retry_seconds(exc: RetryAfter) -> float:
    """``RetryAfter.retry_after`` in seconds, whichever type this PTB version returns."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = exc.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


class _Window:
    """At most ``limit`` calls in any ``period`` seconds; ``acquire`` waits for a slot."""

    def __init__(self, limit: int, period: float = 1.0) -> None:
        self.limit, self.period = max(1, int(limit)), period
        self.calls: collections.deque[float] = collections.deque()

    async def acquire(self) -> None:
        while True:
            now = time.monotonic()
            while self.calls and self.calls[0] <= now - self.period:
                self.calls.popleft()
            if len(self.calls) < self.limit:
                self.calls.append(now)
                return
            await asyncio.sleep(self.calls[0] + self.period - now + 0.001)


class _ChatPacer:
    """Per chat, a bucket of ``burst`` messages refilled at ``rate`` a second: Telegram's "about
    one message a second, short bursts allowed". ``acquire`` waits for a token. The outbox
    already spaces a chat's backlog; this also covers the parts of one entry and a reply that
    follows the previous message at once."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, float(max(1, burst))
        self.chats: dict[str, tuple[float, float]] = {}

    async def acquire(self, chat: str) -> None:
        while True:
            now = time.monotonic()
            tokens, at = self.chats.get(chat, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            if tokens >= 1:
                self.chats[chat] = (tokens - 1, now)
                if len(self.chats) > 10_000:  # forget chats whose bucket is full again
                    full = now - self.burst / self.rate
                    self.chats = {c: v for c, v in self.chats.items() if v[1] > full}
                return
            self.chats[chat] = (tokens, now)
            await asyncio.sleep((1 - tokens) / self.rate + 0.001)


# --------------------------------------------------------------------------- inbound
def _name(user: Mapping[str, Any] | None) -> str | None:
    if not user:
        return None
    name = " ".join(p for p in (user.get("first_name"), user.get("last_name")) if p)
    return name or user.get("username") or None


def _button_title(message: Mapping[str, Any] | None, data: str) -> str | None:
    markup = (message or {}).get("reply_markup") or {}
    for row in markup.get("inline_keyboard") or ():
        for button in row:
            if isinstance(button, dict) and button.get("callback_data") == data:
                return str(button.get("text") or "") or None
    return None


def _attachments(message: Mapping[str, Any]) -> tuple[InboundAttachment, ...]:
    def ref(obj: Mapping[str, Any]) -> str:
        return f"{FILE_SCHEME}{obj['file_id']}"

    out: list[InboundAttachment] = []
    if message.get("photo"):
        sizes = [p for p in message["photo"] if isinstance(p, dict) and p.get("file_id")]
        if sizes:
            best = max(sizes, key=lambda p: (p.get("width", 0) * p.get("height", 0), p.get("file_size", 0)))
            out.append(InboundAttachment("image", ref(best), None, "image/jpeg", best["file_id"]))
    for field_, kind in (("animation", "video"), ("video", "video"), ("video_note", "video"), ("audio", "audio"),
                         ("voice", "voice"), ("sticker", "sticker")):
        obj = message.get(field_)
        if isinstance(obj, dict) and obj.get("file_id"):
            out.append(InboundAttachment(kind, ref(obj), obj.get("file_name"), obj.get("mime_type"), obj["file_id"]))
    doc = message.get("document")
    if isinstance(doc, dict) and doc.get("file_id") and not message.get("animation"):
        out.append(InboundAttachment("document", ref(doc), doc.get("file_name"), doc.get("mime_type"), doc["file_id"]))
    loc = message.get("location")
    if isinstance(loc, dict) and "latitude" in loc and "longitude" in loc:
        out.append(InboundAttachment("location", f"geo:{loc['latitude']},{loc['longitude']}"))
    return tuple(out)


def parse_update(update: Any) -> list[Inbound]:
    """The normalised items of one Bot API ``Update`` (a JSON object)."""
    if not isinstance(update, dict) or not isinstance(update.get("update_id"), int) or isinstance(update.get("update_id"), bool):
        raise MalformedWebhook("not a Telegram update (no integer update_id)")
    uid = str(update["update_id"])
    try:
        if "message" in update:
            return _message_item(uid, update["message"])
        if "callback_query" in update:
            return _callback_item(uid, update["callback_query"])
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise MalformedWebhook(f"unreadable Telegram update: {type(exc).__name__}") from exc
    return []  # edited messages, channel posts, member updates, …: acknowledged, not for the flow


def _message_item(uid: str, message: Mapping[str, Any]) -> list[Inbound]:
    chat = message["chat"]
    chat_id = str(int(chat["id"]))
    user = message.get("from")
    text = message.get("text")
    if text is None:
        text = message.get("caption") or ""
    if not isinstance(text, str):
        raise TypeError("text")
    phone = None
    contact = message.get("contact")
    if isinstance(contact, dict) and contact.get("phone_number"):
        phone = str(contact["phone_number"])
        text = text or phone
    start = None
    if message.get("text"):
        head, _, rest = text.partition(" ")
        if head == "/start" or head.startswith("/start@"):
            start = rest.strip() or None
    return [Inbound("message", chat_id, dedupe_id=uid,
                    sender_id=str(user["id"]) if isinstance(user, dict) and "id" in user else None,
                    profile_name=_name(user) or _name(chat), phone=phone, text=text,
                    attachments=_attachments(message), start_param=start)]


def _callback_item(uid: str, query: Mapping[str, Any]) -> list[Inbound]:
    user = query.get("from") or {}
    message = query.get("message")
    chat_id = str(int(message["chat"]["id"])) if isinstance(message, dict) and message.get("chat") else str(int(user["id"]))
    data = query.get("data")
    if not isinstance(data, str):  # a game button (we send none): nothing for the flow
        return []
    title = _button_title(message, data)
    number = _NUMBER_TOKEN.match(data)
    if number:  # the payload did not fit in callback_data: the option's number stands for it
        text, payload = number.group(1), None
    else:
        text, payload = title or data, data
    return [Inbound("message", chat_id, dedupe_id=uid, sender_id=str(user.get("id")) if user.get("id") else None,
                    profile_name=_name(user), text=text, payload=payload,
                    reply={"callback_query_id": str(query["id"])})]


# --------------------------------------------------------------------------- outbound
def _fits(data: str) -> bool:
    return 0 < len(data.encode("utf-8")) <= CALLBACK_DATA_MAX and not _NUMBER_TOKEN.match(data)


def _numbers(entry: Mapping[str, Any]) -> dict[str, int]:
    """payload / row id -> the number the interpreter answers to."""
    out: dict[str, int] = {}
    replies = [b for b in entry.get("buttons") or () if b.get("payload")]
    for i, b in enumerate(replies, 1):
        out.setdefault(str(b["payload"]), int(b.get("number") or i))
    rows = [r for s in (entry.get("list") or {}).get("sections") or () for r in s.get("rows") or ()]
    for i, r in enumerate(rows, 1):
        out.setdefault(str(r["id"]), int(r.get("number") or i))
    return out


def _callback(token: str, numbers: Mapping[str, int], position: int) -> str:
    return token if _fits(token) else f"~{numbers.get(token, position)}"


def _keyboard(part: Rendered, numbers: Mapping[str, int]) -> InlineKeyboardMarkup | None:
    rows: list[list[InlineKeyboardButton]] = []
    if part.menu is not None:
        n = 0
        for _title, section in part.menu.sections:
            for row in section:
                n += 1
                rows.append([InlineKeyboardButton(row.title, callback_data=_callback(row.id, numbers, n))])
    elif part.buttons:
        buttons = [InlineKeyboardButton(b.title, callback_data=_callback(b.payload, numbers, i))
                   for i, b in enumerate(part.buttons, 1)]
        if len(buttons) <= 3 and sum(len(b.title) for b in part.buttons) <= 30:
            rows.append(buttons)
        else:
            rows.extend([b] for b in buttons)
    for link in part.links:
        rows.append([InlineKeyboardButton(link.title, url=link.url)])
    return InlineKeyboardMarkup(rows) if rows else None


def _menu_text(text: str, menu: ListMenu) -> str:
    lines = [menu.header] if menu.header else []
    if text:
        lines.append(text)
    described = [(t, r) for t, rows in menu.sections for r in rows if r.description]
    if described:
        detail = []
        for title, rows in menu.sections:
            if title and len(menu.sections) > 1:
                detail.append(title)
            detail.extend(f"• {r.title} — {r.description}" if r.description else f"• {r.title}" for r in rows)
        lines.append("\n".join(detail))
    if menu.footer:
        lines.append(menu.footer)
    return "\n\n".join(lines) or menu.button


def _file_ref(url: str) -> str | None:
    """What ``sendPhoto`` & co. may be given: an http(s) URL or a Telegram file id, never a path."""
    if url.startswith(FILE_SCHEME):
        ref = url[len(FILE_SCHEME):]
    elif urlsplit(url).scheme in ("http", "https") and urlsplit(url).netloc:
        ref = url
    else:
        return None
    return None if os.path.exists(ref) else ref  # PTB would upload a local file of that name


def _chat(external_id: str) -> int | str:
    try:
        return int(external_id)
    except ValueError:
        return external_id  # @channelusername


Call = tuple[str, dict[str, Any]]


def plan(message: Mapping[str, Any], caps: Capabilities = CAPABILITIES) -> list[Call]:
    """The Bot API calls (method, parameters without chat_id) that deliver one transcript entry."""
    entry = dict(message)
    numbers = _numbers(entry)
    calls: list[Call] = []
    parts = render(entry, caps)
    for part in parts:
        markup = _keyboard(part, numbers)
        text = _menu_text(part.text, part.menu) if part.menu is not None else part.text
        media: list[Call] = []
        for a in part.attachments:
            ref = _file_ref(str(a.get("url") or ""))
            if ref is None:  # not something Telegram may fetch: a link in the text instead
                text = (text + f"\n{a.get('name') or a.get('kind')}: {a.get('url')}").strip()
                continue
            method = _SEND_METHOD[a["kind"]]
            media.append((method, {_FILE_FIELD[method]: ref}))
        text = text[: caps.text_max]
        if len(media) == 1 and len(text) <= CAPTION_MAX:
            method, params = media[0]
            if text:
                params["caption"] = text
            if markup is not None:
                params["reply_markup"] = markup
            calls.append((method, params))
            continue
        calls.extend(media)
        if text or markup is not None:
            params = {"text": text or "⬇"}
            if markup is not None:
                params["reply_markup"] = markup
            calls.append(("sendMessage", params))
    return calls


class TelegramAdapter:
    name = "telegram"
    capabilities = CAPABILITIES
    default_limits = DEFAULT_LIMITS

    def __init__(self, *, account: str, config: AccountConfig, http: aiohttp.ClientSession, public_url: str) -> None:
        self.account = account
        self.config = config
        creds = config.credentials
        if "token" not in creds:
            raise ValueError(f"account {account!r}: credentials.token (the bot token) is required")
        self._token = creds["token"].get_secret_value()
        secret = creds.get("secret_token")
        self._secret = secret.get_secret_value().encode() if secret is not None else None
        base = (config.api_base_url or DEFAULT_API).rstrip("/")
        self.request = AiohttpRequest(http, read_timeout=float(config.settings.get("read_timeout", 20.0)))
        self.bot = Bot(self._token, base_url=f"{base}/bot", base_file_url=f"{base}/file/bot",
                       request=self.request, get_updates_request=self.request)
        self.mode = str(config.settings.get("mode", "webhook"))
        self.public_url = public_url
        # a little over a second: the platform counts arrivals, which jitter behind our clock
        self._window = _Window(int(config.settings.get("api_rate", 30)), period=1.05)
        interval = float(config.settings.get("chat_interval", DEFAULT_LIMITS["chat_interval"])) or 0.001
        self._pacer = _ChatPacer(1 / (interval * 1.05), int(config.settings.get("chat_burst", 3)))
        self._blocked_until = 0.0  # monotonic: Telegram's retry_after holds every call of the bot
        self._progress: dict[tuple[str, str], tuple[int, str | None]] = {}

    # ----------------------------------------------------------------- inbound
    def handshake(self, request: RawRequest) -> tuple[int, str] | None:
        return None

    def verify(self, request: RawRequest) -> None:
        given = next((v for k, v in request.headers.items() if k.lower() == SECRET_HEADER.lower()), None)
        if given is None:
            raise WebhookRejected("the request did not include the secret token", 401)
        if self._secret is None:
            raise WebhookRejected("this account has no secret_token configured: webhooks are refused", 403)
        if not hmac.compare_digest(header_bytes(given) or b"", self._secret):  # None: not UTF-8
            raise WebhookRejected("the request had the wrong secret token", 403)

    def parse(self, request: RawRequest) -> list[Inbound]:
        try:
            update = loads(request.body)
        except BadJson as exc:
            raise MalformedWebhook(f"the body is not JSON: {exc.reason}") from exc
        return parse_update(update)

    async def acknowledge(self, item: Inbound) -> None:
        query_id = item.reply.get("callback_query_id")
        if not query_id:
            return
        try:
            await self.bot.answer_callback_query(query_id)
        except TelegramError as exc:  # the click is delivered; a late answer only leaves a spinner
            log.warning("telegram.answer_callback_failed", extra={"account": self.account, "error": str(exc)})

    # ----------------------------------------------------------------- outbound
    def _hold(self) -> None:
        wait = self._blocked_until - time.monotonic()
        if wait > 0:
            raise DeliveryTemporary(f"Telegram flood control: retry in {wait:.1f}s", retry_after=wait)

    async def call(self, method: str, params: dict[str, Any]) -> Any:
        """One Bot API call through PTB, paced and with errors mapped to delivery errors."""
        self._hold()
        if "chat_id" in params and method != "answerCallbackQuery":
            await self._pacer.acquire(str(params["chat_id"]))
        await self._window.acquire()
        self._hold()
        try:
            if method in _BOT_METHODS:
                return await getattr(self.bot, _BOT_METHODS[method])(**params)
            return await self.bot.do_api_request(method, api_kwargs=params)
        except RetryAfter as exc:
            seconds = retry_seconds(exc)
            self._blocked_until = max(self._blocked_until, time.monotonic() + seconds)
            raise DeliveryTemporary(f"Telegram flood control: retry after {seconds:g}s", retry_after=seconds) from exc
        except (Forbidden, BadRequest, ChatMigrated) as exc:
            raise DeliveryRejected(f"Telegram refused {method}: {exc}") from exc
        except InvalidToken as exc:
            raise DeliveryTemporary(f"Telegram rejected the bot token: {exc}", retry_after=60.0) from exc
        except (TimedOut, NetworkError, Conflict) as exc:
            raise DeliveryTemporary(f"Telegram {method} failed: {exc}") from exc
        except TelegramError as exc:
            raise DeliveryTemporary(f"Telegram {method} failed: {exc}") from exc

    async def send(self, account: str, chat: Mapping[str, str], message: Mapping[str, Any]) -> str | None:
        external = chat.get("external_id")
        if not external:
            raise DeliveryRejected("the conversation has no Telegram chat id")
        calls = plan(message, self.capabilities)
        key = (str(external), str(message.get("ref") or hashlib.sha1(repr(calls).encode()).hexdigest()))
        done, last = self._progress.pop(key, (0, None))
        chat_id = _chat(str(external))
        for i in range(done, len(calls)):
            method, params = calls[i]
            try:
                result = await self.call(method, {"chat_id": chat_id, **params})
            except DeliveryTemporary:
                if i:  # parts already sent are not sent again when the outbox retries
                    if len(self._progress) > 10_000:  # entries the outbox gave up on
                        self._progress.clear()
                    self._progress[key] = (i, last)
                raise
            message_id = getattr(result, "message_id", None)
            if message_id is not None:
                last = f"{external}:{message_id}"
        return last

    # ----------------------------------------------------------------- polling
    def poller(self, services: Services) -> TelegramPoller:
        return TelegramPoller(self, services)

    async def close(self) -> None:
        return None


_BOT_METHODS = {"sendMessage": "send_message", "sendPhoto": "send_photo", "sendDocument": "send_document",
                "sendVideo": "send_video", "sendAudio": "send_audio", "sendVoice": "send_voice",
                "answerCallbackQuery": "answer_callback_query"}


def create(*, account: str, config: AccountConfig, http: aiohttp.ClientSession, public_url: str) -> TelegramAdapter:
    return TelegramAdapter(account=account, config=config, http=http, public_url=public_url)


# --------------------------------------------------------------------------- long polling
Deliver = Callable[[list[Inbound]], Awaitable[None]]


class TelegramPoller:
    """``getUpdates`` long polling for an account with ``settings.mode = "polling"``.

    One worker at a time polls an account (a Redis lease), the offset is kept in Redis, and
    each update goes through the same path as a webhook (``webhooks.dispatch``), so a
    redelivered update is handled once. ``run(stop)`` returns soon after ``stop`` is set.
    """

    def __init__(self, adapter: TelegramAdapter, services: Services, *, timeout: float | None = None,
                 lease: float = 60.0) -> None:
        self.adapter = adapter
        self.services = services
        settings = adapter.config.settings
        self.timeout = float(settings.get("poll_timeout", 25) if timeout is None else timeout)
        self.lease = lease
        self.owner = secrets.token_hex(8)
        account = adapter.account
        self.lease_key = f"sb:tg:poll:{{{account}}}"
        self.offset_key = f"sb:tg:offset:{{{account}}}"
        self.polls = 0

    async def _hold_lease(self) -> bool:
        redis = self.services.redis
        if await redis.set(self.lease_key, self.owner, nx=True, px=int(self.lease * 1000)):
            return True
        if (await redis.get(self.lease_key) or b"").decode() == self.owner:
            await redis.pexpire(self.lease_key, int(self.lease * 1000))
            return True
        return False

    async def deliver(self, items: list[Inbound]) -> None:
        from .webhooks import dispatch

        await dispatch(self.services, self.adapter.account, self.adapter, items)

    async def poll_once(self, timeout: float) -> int:
        """One ``getUpdates`` call and the delivery of what it returned; returns the update count."""
        redis = self.services.redis
        raw = await redis.get(self.offset_key)
        fetched = await self.adapter.bot.get_updates(
            offset=int(raw) if raw else None, timeout=int(timeout), allowed_updates=["message", "callback_query"],
            read_timeout=timeout + 10)
        self.polls += 1
        updates = [u.to_dict() for u in fetched]  # back to Bot API JSON: one parser for both paths
        for update in updates:
            try:
                items = parse_update(update)
            except MalformedWebhook as exc:
                log.warning("telegram.update_unreadable", extra={"account": self.adapter.account, "reason": str(exc)})
                items = []
            await self.deliver(items)
            if isinstance(update, dict) and isinstance(update.get("update_id"), int):
                await redis.set(self.offset_key, update["update_id"] + 1)
        return len(updates)

    async def run(self, stop: asyncio.Event) -> None:
        account = self.adapter.account
        webhook_removed = False
        pause = 0.0
        while not stop.is_set():
            if pause:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=pause)
                if stop.is_set():
                    return
            pause = 0.0
            try:
                if not await self._hold_lease():
                    pause = self.lease / 3
                    continue
                if not webhook_removed:  # getUpdates does not work while a webhook is set
                    await self.adapter.bot.delete_webhook(drop_pending_updates=False)
                    webhook_removed = True
                poll = asyncio.ensure_future(self.poll_once(self.timeout))
                stopper = asyncio.ensure_future(stop.wait())
                try:
                    await asyncio.wait({poll, stopper}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    stopper.cancel()
                if not poll.done():  # stopping: what was fetched and not acknowledged comes back later
                    poll.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await poll
                    return
                poll.result()
            except asyncio.CancelledError:
                raise
            except RetryAfter as exc:
                pause = retry_seconds(exc)
                log.warning("telegram.poll_flood", extra={"account": account, "retry_after": pause})
            except Conflict as exc:
                pause = 5.0
                log.warning("telegram.poll_conflict", extra={"account": account, "error": str(exc)})
            except Exception as exc:  # network trouble, Redis hiccups: log and try again
                pause = 2.0
                log.warning("telegram.poll_failed", extra={"account": account, "error": repr(exc)})
        with contextlib.suppress(Exception):
            if (await self.services.redis.get(self.lease_key) or b"").decode() == self.owner:
                await self.services.redis.delete(self.lease_key)
