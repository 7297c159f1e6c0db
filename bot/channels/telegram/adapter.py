"""The Telegram adapter: webhook verification and parsing in, paced Bot API calls out."""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
from telegram import Bot
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

from ...config import AccountConfig
from ...inputs import BadJson, header_bytes, loads
from ..base import DeliveryRejected, DeliveryTemporary, Inbound, MalformedWebhook, RawRequest, WebhookRejected
from ..host import ChannelHost
from .outbound import CAPABILITIES, chat_param, plan
from .pacing import ChatPacer, Window
from .polling import TelegramPoller
from .transport import AiohttpRequest, retry_seconds
from .updates import parse_update

log = logging.getLogger("salesbot.channels.telegram")

DEFAULT_API = "https://api.telegram.org"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
#: Outbox pacing for Telegram accounts unless the account's settings say otherwise: about one
#: message a second per chat, and below 30 a second per bot (bucket rate + burst <= 30).
DEFAULT_LIMITS = {"chat_interval": 1.0, "rate": 25.0, "burst": 5}


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
        self._window = Window(int(config.settings.get("api_rate", 30)), period=1.05)
        interval = float(config.settings.get("chat_interval", DEFAULT_LIMITS["chat_interval"])) or 0.001
        self._pacer = ChatPacer(1 / (interval * 1.05), int(config.settings.get("chat_burst", 3)))
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
        slot = await self._window.acquire()
        try:
            self._hold()
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
        finally:
            self._window.done(slot)

    async def send(self, account: str, chat: Mapping[str, str], message: Mapping[str, Any]) -> str | None:
        external = chat.get("external_id")
        if not external:
            raise DeliveryRejected("the conversation has no Telegram chat id")
        calls = plan(message, self.capabilities)
        key = (str(external), str(message.get("ref") or hashlib.sha1(repr(calls).encode()).hexdigest()))
        done, last = self._progress.pop(key, (0, None))
        chat_id = chat_param(str(external))
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
    def poller(self, host: ChannelHost) -> TelegramPoller:
        return TelegramPoller(self, self.bot, host, account=self.account, settings=self.config.settings)

    async def close(self) -> None:
        return None


_BOT_METHODS = {"sendMessage": "send_message", "sendPhoto": "send_photo", "sendDocument": "send_document",
                "sendVideo": "send_video", "sendAudio": "send_audio", "sendVoice": "send_voice",
                "answerCallbackQuery": "answer_callback_query"}


def create(*, account: str, config: AccountConfig, http: aiohttp.ClientSession, public_url: str) -> TelegramAdapter:
    return TelegramAdapter(account=account, config=config, http=http, public_url=public_url)

