"""A fake Telegram Bot API server on loopback (aiohttp), following https://core.telegram.org/bots/api.

* ``POST|GET /bot<token>/<method>`` with a JSON, form-encoded or multipart body (or a query
  string); JSON-serialized fields (``reply_markup``, ``allowed_updates``) may be strings.
* Answers ``{"ok": true, "result": …}`` or ``{"ok": false, "error_code", "description",
  "parameters"?}`` with the same HTTP status.
* Methods: ``getMe``, ``sendMessage``, ``sendPhoto``, ``sendDocument``, ``sendVideo``,
  ``sendAudio``, ``sendVoice``, ``answerCallbackQuery``, ``getUpdates`` (long polling with
  ``offset``/``timeout``), ``setWebhook``, ``deleteWebhook``, ``getWebhookInfo``.
* Limits checked as documented: text 1–4096 characters, caption ≤ 1024, ``callback_data``
  1–64 bytes, ``answerCallbackQuery`` text ≤ 200.
* Flood control: about one message a second per chat (a bucket of ``chat_burst`` refilled at
  ``chat_rate``/s) and ``bot_rate`` messages in any second per bot; beyond them a 429 with
  ``parameters.retry_after``, and every call before that time passes is refused again
  (counted in ``retry_violations``).
* ``arrivals``: every send request as it came in (time, method, and the ``via`` name of a client
  whose base URL is ``<url>/via/<name>``: which of several processes sent it).
* Updates: ``send_update`` posts an update to the webhook set with ``setWebhook`` (with the
  ``X-Telegram-Bot-Api-Secret-Token`` header) or queues it for ``getUpdates``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Self

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

SEND_METHODS = {"sendMessage": None, "sendPhoto": "photo", "sendDocument": "document", "sendVideo": "video",
                "sendAudio": "audio", "sendVoice": "voice"}
JSON_FIELDS = {"reply_markup", "allowed_updates", "link_preview_options", "reply_parameters", "entities",
               "caption_entities"}


@dataclass
class SentRecord:
    method: str
    chat_id: str
    params: dict[str, Any]
    message_id: int
    at: float  # time.monotonic() when accepted

    @property
    def text(self) -> str:
        return str(self.params.get("text") or self.params.get("caption") or "")

    @property
    def keyboard(self) -> list[list[dict[str, Any]]]:
        markup = self.params.get("reply_markup") or {}
        return markup.get("inline_keyboard") or []

    @property
    def file(self) -> str | None:
        name = SEND_METHODS.get(self.method)
        return str(self.params[name]) if name else None


@dataclass(frozen=True)
class Arrival:
    at: float  # time.monotonic() when the request reached the handler (before anything is parsed)
    method: str
    via: str  # the client's name when it called through /via/<name>/bot<token>/… (several processes)


@dataclass
class Failure:
    status: int
    description: str
    retry_after: int | None = None
    method: str | None = None


@dataclass
class FakeBot:
    token: str
    id: int
    username: str
    webhook_url: str = ""
    webhook_secret: str | None = None
    updates: list[dict[str, Any]] = field(default_factory=list)
    update_ids: Any = field(default_factory=lambda: itertools.count(1000))


class FakeTelegram:
    def __init__(self, *, chat_rate: float = 1.0, chat_burst: int = 3, bot_rate: int = 30,
                 enforce_limits: bool = True) -> None:
        self.bots: dict[str, FakeBot] = {}
        self.chat_rate, self.chat_burst, self.bot_rate = chat_rate, chat_burst, bot_rate
        self.enforce_limits = enforce_limits
        self.sent: list[SentRecord] = []
        self.calls: list[tuple[str, str, int, float]] = []  # (method, chat_id, status, at)
        self.arrivals: list[Arrival] = []  # every send request, as it came in
        self.answers: list[dict[str, Any]] = []  # answerCallbackQuery calls
        self.webhook_posts: list[tuple[int, dict[str, Any]]] = []  # (our status, update)
        self.failures: deque[Failure] = deque()
        self.blocked_chats: set[str] = set()
        #: A slow platform: while set to an unset event, send calls are held (after their arrival
        #: is logged) until the test sets it.
        self.hold: asyncio.Event | None = None
        #: A misbehaving API: while set, every call is answered 302 to this prefix + the path
        #: (``ftp://…/bot<token>/<method>``: aiohttp refuses it with the URL in its error text).
        self.redirect: str | None = None
        self.retry_violations = 0
        self.rate_limited = 0
        self._buckets: dict[str, tuple[float, float]] = {}  # chat -> (tokens, at)
        self._window: deque[float] = deque()
        self._penalty: dict[str, float] = {}  # chat or "*" -> monotonic time until which calls are refused
        self._message_ids: dict[str, itertools.count[int]] = {}
        self._changed = asyncio.Condition()
        self._http: aiohttp.ClientSession | None = None
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        app.router.add_route("*", "/via/{via}/bot{token}/{method}", self._handle)  # a client named in its base URL
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

    def add_bot(self, token: str, *, username: str = "salesbot_test_bot") -> FakeBot:
        bot = FakeBot(token, int(token.split(":", 1)[0]) if token.split(":", 1)[0].isdigit() else 1, username)
        self.bots[token] = bot
        return bot

    # ------------------------------------------------------------------ test controls
    def fail_next(self, status: int = 429, *, retry_after: int | None = None, description: str | None = None,
                  method: str | None = None) -> None:
        default = {429: f"Too Many Requests: retry after {retry_after}", 403: "Forbidden: bot was blocked by the user",
                   400: "Bad Request: chat not found", 500: "Internal Server Error", 502: "Bad Gateway"}
        self.failures.append(Failure(status, description or default.get(status, "Error"), retry_after, method))

    def sent_to(self, chat_id: str | int) -> list[SentRecord]:
        return [s for s in self.sent if s.chat_id == str(chat_id)]

    async def wait_for(self, predicate: Any, timeout: float = 10.0) -> None:
        """Wait (bounded) until ``predicate(self)`` is true; re-checked on every accepted call."""
        async def check() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: predicate(self))

        await asyncio.wait_for(check(), timeout)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # ------------------------------------------------------------------ updates (the user's side)
    def next_update_id(self, token: str) -> int:
        return next(self.bots[token].update_ids)

    async def send_update(self, token: str, update: dict[str, Any], *, secret: str | None = ...,  # type: ignore[assignment]
                          url: str | None = None) -> int | None:
        """Deliver an update as Telegram does: POST to the webhook (returns our status) or queue it."""
        bot = self.bots[token]
        target = url or bot.webhook_url
        if not target:
            bot.updates.append(update)
            await self._notify()
            return None
        headers = {"Content-Type": "application/json"}
        token_header = bot.webhook_secret if secret is ... else secret
        if token_header is not None:
            headers["X-Telegram-Bot-Api-Secret-Token"] = token_header
        assert self._http is not None
        async with self._http.post(target, data=json.dumps(update).encode(), headers=headers) as resp:
            await resp.read()
            self.webhook_posts.append((resp.status, update))
            return resp.status

    # ------------------------------------------------------------------ the API
    @staticmethod
    async def _params(request: web.Request) -> dict[str, Any]:
        params: dict[str, Any] = dict(request.query)
        ctype = request.content_type
        if request.can_read_body:
            if ctype == "application/json":
                body = await request.json()
                if not isinstance(body, dict):
                    raise ValueError("the JSON body must be an object")
                params.update(body)
            elif ctype in ("application/x-www-form-urlencoded", "multipart/form-data"):
                form = await request.post()
                for key, value in form.items():
                    params[key] = value.filename if isinstance(value, web.FileField) else value
        for key in JSON_FIELDS & params.keys():
            if isinstance(params[key], str):
                params[key] = json.loads(params[key])
        return params

    @staticmethod
    def _error(status: int, description: str, retry_after: int | None = None) -> web.Response:
        body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
        if retry_after is not None:
            body["parameters"] = {"retry_after": retry_after}
        return web.json_response(body, status=status)

    async def _handle(self, request: web.Request) -> web.Response:
        arrived = time.monotonic()
        if self.redirect is not None:
            self.calls.append((request.match_info["method"], "", 302, arrived))
            return web.Response(status=302, headers={"Location": self.redirect + request.path})
        bot = self.bots.get(request.match_info["token"])
        method = request.match_info["method"]
        if method in SEND_METHODS:
            self.arrivals.append(Arrival(arrived, method, request.match_info.get("via", "")))
            if self.hold is not None:
                await self._notify()
                await self.hold.wait()
        if bot is None:
            return self._error(401, "Unauthorized")
        try:
            params = await self._params(request)
        except ValueError:
            return self._error(400, "Bad Request: can't parse request body")
        handler = getattr(self, f"_m_{method}", None)
        if handler is None and method not in SEND_METHODS:
            return self._error(404, "Not Found")
        chat = str(params.get("chat_id", ""))
        if self.failures and (self.failures[0].method in (None, method)) and method not in ("getUpdates", "getMe"):
            failure = self.failures.popleft()
            self.calls.append((method, chat, failure.status, time.monotonic()))
            if failure.status == 429 and failure.retry_after:
                self._penalty["*"] = time.monotonic() + failure.retry_after
            return self._error(failure.status, failure.description, failure.retry_after)
        if method in SEND_METHODS:
            response = self._send(bot, method, params)
        else:
            response = await handler(bot, params)  # type: ignore[misc]
        await self._notify()
        return response

    def _limited(self, chat: str) -> int | None:
        """Seconds to wait when this send exceeds a flood limit, else None (and the send counts)."""
        now = time.monotonic()
        for scope in (chat, "*"):
            until = self._penalty.get(scope, 0.0)
            if now < until:
                self.retry_violations += 1
                return max(1, math.ceil(until - now))
        if not self.enforce_limits:
            return None
        while self._window and self._window[0] <= now - 1.0:
            self._window.popleft()
        tokens, at = self._buckets.get(chat, (float(self.chat_burst), now))
        tokens = min(float(self.chat_burst), tokens + (now - at) * self.chat_rate)
        if len(self._window) >= self.bot_rate:
            wait = self._window[0] + 1.0 - now
            self._penalty["*"] = now + wait
            return max(1, math.ceil(wait))
        if tokens < 1:
            wait = (1 - tokens) / self.chat_rate
            self._buckets[chat] = (tokens, now)
            self._penalty[chat] = now + wait
            return max(1, math.ceil(wait))
        self._buckets[chat] = (tokens - 1, now)
        self._window.append(now)
        return None

    def _send(self, bot: FakeBot, method: str, params: dict[str, Any]) -> web.Response:
        chat = str(params.get("chat_id", ""))
        now = time.monotonic()
        if not chat:
            return self._error(400, "Bad Request: chat_id is empty")
        if chat in self.blocked_chats:
            self.calls.append((method, chat, 403, now))
            return self._error(403, "Forbidden: bot was blocked by the user")
        field_ = SEND_METHODS[method]
        if field_ is None:
            text = params.get("text")
            if not isinstance(text, str) or not text.strip():
                return self._error(400, "Bad Request: message text is empty")
            if len(text) > 4096:
                return self._error(400, "Bad Request: message is too long")
        else:
            if not params.get(field_):
                return self._error(400, f"Bad Request: there is no {field_} in the request")
            if len(str(params.get("caption") or "")) > 1024:
                return self._error(400, "Bad Request: message caption is too long")
        for row in (params.get("reply_markup") or {}).get("inline_keyboard") or ():
            for button in row:
                data = button.get("callback_data")
                if data is not None and not 1 <= len(str(data).encode()) <= 64:
                    return self._error(400, "Bad Request: BUTTON_DATA_INVALID")
                if not button.get("text"):
                    return self._error(400, "Bad Request: text buttons are unallowed in the inline keyboard")
        wait = self._limited(chat)
        if wait is not None:
            self.rate_limited += 1
            self.calls.append((method, chat, 429, now))
            return self._error(429, f"Too Many Requests: retry after {wait}", wait)
        counter = self._message_ids.setdefault(chat, itertools.count(1))
        message_id = next(counter)
        self.calls.append((method, chat, 200, now))
        self.sent.append(SentRecord(method, chat, params, message_id, now))
        result: dict[str, Any] = {"message_id": message_id, "date": int(time.time()),
                                  "chat": {"id": int(chat) if chat.lstrip("-").isdigit() else 0, "type": "private"},
                                  "from": {"id": bot.id, "is_bot": True, "first_name": "Bot", "username": bot.username}}
        if field_ is None:
            result["text"] = params["text"]
        else:
            if params.get("caption"):
                result["caption"] = params["caption"]
            file = {"file_id": f"F{message_id}", "file_unique_id": f"U{message_id}"}
            result[field_] = [{**file, "width": 640, "height": 480}] if field_ == "photo" else (
                {**file, "duration": 1} if field_ in ("video", "audio", "voice") else file)
            if field_ == "video":
                result[field_].update(width=640, height=480)
        if params.get("reply_markup"):
            result["reply_markup"] = params["reply_markup"]
        return web.json_response({"ok": True, "result": result})

    async def _m_getMe(self, bot: FakeBot, params: dict[str, Any]) -> web.Response:
        return web.json_response({"ok": True, "result": {"id": bot.id, "is_bot": True, "first_name": "Bot",
                                                         "username": bot.username}})

    async def _m_answerCallbackQuery(self, bot: FakeBot, params: dict[str, Any]) -> web.Response:
        if not params.get("callback_query_id"):
            return self._error(400, "Bad Request: query is too old and response timeout expired or query ID is invalid")
        if len(str(params.get("text") or "")) > 200:
            return self._error(400, "Bad Request: text is too long")
        self.answers.append(params)
        return web.json_response({"ok": True, "result": True})

    async def _m_setWebhook(self, bot: FakeBot, params: dict[str, Any]) -> web.Response:
        bot.webhook_url = str(params.get("url") or "")
        bot.webhook_secret = params.get("secret_token")
        return web.json_response({"ok": True, "result": True, "description": "Webhook was set"})

    async def _m_deleteWebhook(self, bot: FakeBot, params: dict[str, Any]) -> web.Response:
        bot.webhook_url, bot.webhook_secret = "", None
        if str(params.get("drop_pending_updates")).lower() == "true":
            bot.updates.clear()
        return web.json_response({"ok": True, "result": True, "description": "Webhook was deleted"})

    async def _m_getWebhookInfo(self, bot: FakeBot, params: dict[str, Any]) -> web.Response:
        return web.json_response({"ok": True, "result": {"url": bot.webhook_url, "has_custom_certificate": False,
                                                         "pending_update_count": len(bot.updates)}})

    async def _m_getUpdates(self, bot: FakeBot, params: dict[str, Any]) -> web.Response:
        if bot.webhook_url:
            return self._error(409, "Conflict: can't use getUpdates method while webhook is active; "
                                    "use deleteWebhook to delete the webhook first")
        offset = int(params.get("offset") or 0)
        timeout = float(params.get("timeout") or 0)
        limit = int(params.get("limit") or 100)
        if offset:
            bot.updates[:] = [u for u in bot.updates if u["update_id"] >= offset]  # confirmed
        if not bot.updates and timeout > 0:
            async with self._changed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait_for(lambda: bool(bot.updates)), timeout)
        return web.json_response({"ok": True, "result": bot.updates[:limit]})


# ---------------------------------------------------------------------- update builders
def user(chat_id: int, first_name: str = "Ana") -> dict[str, Any]:
    return {"id": chat_id, "is_bot": False, "first_name": first_name, "language_code": "en"}


def text_update(update_id: int, chat_id: int, text: str, *, message_id: int = 1) -> dict[str, Any]:
    return {"update_id": update_id, "message": {"message_id": message_id, "date": int(time.time()),
                                                "from": user(chat_id), "chat": {"id": chat_id, "type": "private",
                                                                                "first_name": "Ana"},
                                                "text": text}}


def photo_update(update_id: int, chat_id: int, *, caption: str | None = None, message_id: int = 1) -> dict[str, Any]:
    message: dict[str, Any] = {
        "message_id": message_id, "date": int(time.time()), "from": user(chat_id),
        "chat": {"id": chat_id, "type": "private"},
        "photo": [{"file_id": "AgAC-small", "file_unique_id": "AQAD1", "width": 90, "height": 67, "file_size": 1200},
                  {"file_id": "AgAC-large", "file_unique_id": "AQAD2", "width": 1280, "height": 960,
                   "file_size": 98123}]}
    if caption:
        message["caption"] = caption
    return {"update_id": update_id, "message": message}


def callback_update(update_id: int, chat_id: int, data: str, message: SentRecord | None = None,
                    *, query_id: str | None = None) -> dict[str, Any]:
    """A click on an inline button of ``message`` (a message the bot sent)."""
    msg: dict[str, Any] = {"message_id": message.message_id if message else 1, "date": int(time.time()),
                           "chat": {"id": chat_id, "type": "private"}, "text": message.text if message else ""}
    if message is not None and message.params.get("reply_markup"):
        msg["reply_markup"] = message.params["reply_markup"]
    return {"update_id": update_id, "callback_query": {"id": query_id or f"cbq{update_id}", "chat_instance": "-7369",
                                                       "from": user(chat_id), "message": msg, "data": data}}
