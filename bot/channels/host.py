"""What channels need from the process that runs them, as Protocols: channels sit below the
server, which hands them its ``Services`` (they have all of this and more)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from redis.asyncio import Redis

from ..engine import events as ev
from ..store.conversations import ConversationStore


class Delivered(Protocol):
    """The outcome of a delivery a channel looks at."""

    @property
    def duplicate(self) -> bool: ...


class Conversations(Protocol):
    """Where inbound events go: the conversation service (``bot.runtime.service``)."""

    async def deliver(self, cid: str, event: ev.Event, *, dedupe_id: str | None = None,
                      meta: Mapping[str, str] | None = None,
                      entry_extra: Mapping[str, Any] | None = None) -> Delivered: ...


class ChannelHost(Protocol):
    """The shared services a channel delivers through (webhook dispatch, pollers, the live chat)."""

    @property
    def redis(self) -> Redis: ...

    @property
    def store(self) -> ConversationStore: ...

    @property
    def conversations(self) -> Conversations: ...

    def greeting_bot(self, account: str) -> str | None:
        """The bot that greets a new conversation of ``account`` (None: no greeting)."""
        ...
