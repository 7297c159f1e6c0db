"""Telegram's per-chat limit: about one message a second per chat, short bursts allowed.

Kept, like the bot's limit (``bot.channels.pacing``), in the shared limiter: a chat's replies may
leave from any process. The chat's key shares the bot's hash tag, so both limits are taken in
one script call (one round trip per Bot API call).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...store.ratelimit import Limit

#: A chat's interval is stretched by 10 %: the platform counts arrivals, which jitter behind our clock
#: (a request may leave up to ``ratelimit.LATE``, 100 ms, after its turn).
CHAT_MARGIN = 0.1


class ChatLimits:
    """Per chat, ``chat_burst`` messages at once, then one per ``chat_interval`` (+10 %). The outbox
    already spaces a chat's backlog; this also covers the parts of one entry and a reply that
    follows the previous message at once."""

    def __init__(self, bot: str, settings: Mapping[str, Any], defaults: Mapping[str, Any]) -> None:
        interval = float(settings.get("chat_interval", defaults["chat_interval"]))
        self.bot, self.burst = bot, max(1, int(settings.get("chat_burst", 3)))
        self.rate = 1 / interval if interval > 0 else None  # 0: no per-chat limit

    def of(self, chat: str) -> Limit | None:
        return Limit(f"{self.bot}:chat:{chat}", self.rate, self.burst, margin=CHAT_MARGIN) if self.rate else None
