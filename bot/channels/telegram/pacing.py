"""Telegram's rate limits kept on our side: calls per bot and messages per chat."""

from __future__ import annotations

import asyncio
import collections
import time


class Window:
    """At most ``limit`` calls in any ``period`` seconds; ``acquire`` waits for a slot.

    A slot counts from when it was taken, and from when its call ended once ``done`` says so:
    a call reaches the platform somewhere in between, late when the event loop is busy."""

    def __init__(self, limit: int, period: float = 1.0) -> None:
        self.limit, self.period = max(1, int(limit)), period
        self.calls: collections.deque[list[float]] = collections.deque()

    async def acquire(self) -> list[float]:
        """A slot (give it to ``done`` when the call has ended)."""
        while True:
            now = time.monotonic()
            while self.calls and self.calls[0][0] <= now - self.period:
                self.calls.popleft()
            if len(self.calls) < self.limit:
                slot = [now]
                self.calls.append(slot)
                return slot
            await asyncio.sleep(self.calls[0][0] + self.period - now + 0.001)

    @staticmethod
    def done(slot: list[float]) -> None:
        slot[0] = time.monotonic()


class ChatPacer:
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

