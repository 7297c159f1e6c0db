"""The Telegram adapter: webhook verification and parsing in, paced Bot API calls out."""

from __future__ import annotations

import hashlib
import hmac
import logging
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
from ...store.ratelimit import SharedLimiter
from ..base import (
    DeliveryRejected,
    DeliveryTemporary,
    Inbound,
    MalformedWebhook,
    RawRequest,
    WebhookRejected,
    credentials_refused,
)
from ..host import ChannelHost
from ..pacing import AccountPacing
from .outbound import CAPABILITIES, chat_param, plan
from .pacing import ChatLimits
from .polling import TelegramPoller
from .transport import AiohttpRequest, BotApi, keep_out_of_logs, retry_seconds
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
    #: Telegram sends bots no delivery or read receipts: the outbox records no platform ids.
    platform_statuses = False

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
        read_timeout = float(config.settings.get("read_timeout", 20.0))
        self.request = AiohttpRequest(http, secret=self._token, read_timeout=read_timeout)
        keep_out_of_logs(self._token)  # PTB's Bot logs its URL, token included, at DEBUG
        # PTB's Bot for polling and webhook set-up; sends go through the lean client (``BotApi``)
        self.bot = Bot(self._token, base_url=f"{base}/bot", base_file_url=f"{base}/file/bot",
                       request=self.request, get_updates_request=self.request)
        self.api = BotApi(http, f"{base}/bot{self._token}", secret=self._token, read_timeout=read_timeout)
        self.mode = str(config.settings.get("mode", "webhook"))
        self.public_url = public_url
        # the bot's limit (rate + burst <= 30 in any second) and each chat's, shared by every process
        self.pacing = AccountPacing("telegram", account, config.settings, DEFAULT_LIMITS)
        self._chats = ChatLimits(self.pacing.limit.name, config.settings, DEFAULT_LIMITS)
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
            await self.api.call("answerCallbackQuery", {"callback_query_id": query_id})
        except TelegramError as exc:  # the click is delivered; a late answer only leaves a spinner
            log.warning("telegram.answer_callback_failed", extra={"account": self.account, "error": str(exc)})

    # ----------------------------------------------------------------- outbound
    def use_limiter(self, limiter: SharedLimiter) -> None:
        self.pacing.use(limiter)

    async def call(self, method: str, params: dict[str, Any]) -> Any:
        """One Bot API call (its ``result``, as JSON), paced and with errors mapped to delivery errors."""
        chat = self._chats.of(str(params["chat_id"])) if "chat_id" in params and method != "answerCallbackQuery" \
            else None
        await self.pacing.acquire(*([chat] if chat else []))
        try:
            return await self.api.call(method, params)
        except RetryAfter as exc:
            seconds = retry_seconds(exc)
            await self.pacing.hold(seconds)  # Telegram's retry_after holds every call of the bot, in every process
            raise DeliveryTemporary(f"Telegram flood control: retry after {seconds:g}s", retry_after=seconds) from exc
        except (Forbidden, BadRequest, ChatMigrated) as exc:
            raise DeliveryRejected(f"Telegram refused {method}: {exc}") from exc
        except InvalidToken as exc:
            raise credentials_refused(f"Telegram rejected the bot token: {exc}") from exc
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
            message_id = result.get("message_id") if isinstance(result, dict) else None
            if message_id is not None:
                last = f"{external}:{message_id}"
        return last

    # ----------------------------------------------------------------- polling
    def poller(self, host: ChannelHost) -> TelegramPoller:
        return TelegramPoller(self, self.bot, host, account=self.account, settings=self.config.settings)

    async def close(self) -> None:
        return None


def create(*, account: str, config: AccountConfig, http: aiohttp.ClientSession, public_url: str) -> TelegramAdapter:
    return TelegramAdapter(account=account, config=config, http=http, public_url=public_url)

