"""Telegram: webhooks (or long polling) in, Bot API calls out (plain JSON over aiohttp).

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
    ``answerCallbackQuery``, once per click) become ``Inbound`` items keyed by ``update_id``;
    other updates, service messages (members, pins, timers) and content no step reads (dice,
    polls, stories) are acknowledged and ignored. With ``settings.mode = "polling"`` the worker runs a
    ``TelegramPoller`` (``getUpdates``) instead, delivering through the same path.

Outbound
    The shared renderer shapes each transcript entry for ``CAPABILITIES``: reply buttons and
    lists become an inline keyboard (one option per row beyond three short ones) whose
    ``callback_data`` is the payload when it fits in 64 bytes, else ``~<number>``, which comes
    back as the option's number (the interpreter matches numbers); link buttons become URL
    buttons; texts over 4096 characters are split; attachments are sent by URL
    (``sendPhoto``/``sendDocument``/…), with the text as caption when it fits in 1024.
    A 429 raises ``DeliveryTemporary`` with Telegram's ``retry_after`` and holds every call of
    the bot, in every process, until it has passed; the parts of an entry already sent are not
    sent again on retry. Each call takes the bot's ``rate``/``burst`` and the chat's limit from
    the shared limiter in Redis; they default to Telegram's limits (``DEFAULT_LIMITS``).

Modules: ``adapter`` (the ``ChannelAdapter``), ``updates`` (parsing), ``outbound`` (entries as
Bot API calls), ``pacing`` (the per-chat limit), ``transport`` (``BotApi`` for sends, PTB's
transport over aiohttp for polling), ``polling``.
"""

from __future__ import annotations

from .adapter import DEFAULT_API, DEFAULT_LIMITS, SECRET_HEADER, TelegramAdapter, create
from .outbound import CALLBACK_DATA_MAX, CAPABILITIES, CAPTION_MAX, plan
from .polling import TelegramPoller
from .transport import AiohttpRequest, BotApi, retry_seconds
from .updates import FILE_SCHEME, parse_update

__all__ = [
    "CALLBACK_DATA_MAX", "CAPABILITIES", "CAPTION_MAX", "DEFAULT_API", "DEFAULT_LIMITS", "FILE_SCHEME",
    "SECRET_HEADER", "AiohttpRequest", "BotApi", "TelegramAdapter", "TelegramPoller", "create", "parse_update", "plan",
    "retry_seconds",
]
