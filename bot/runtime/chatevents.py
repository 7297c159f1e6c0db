"""Conversation events for the automations: ``chat.first_message`` and ``chat.message``.

Every customer message of a conversation whose CRM lead is known may concern a rule, so this
sits on the hot path. It stays cheap in two ways:

- **Only when a rule listens.** ``ChatEvents`` keeps, per process, the pipelines whose active
  automation document has a rule ``on`` a chat event (refreshed every ``ttl`` seconds, and at
  once when this process stores or activates a document). No such pipeline, nothing is done —
  not even a Redis command. With a CRM snapshot at hand, a lead of another pipeline is skipped.
- **No round trip of its own.** The event goes onto the lead's queue as plain commands (``RPUSH``
  to the inbox, ``ZADD`` to the recovery set) sent with the conversation's save in the same
  round trip; the lead queue is then handled in the background (``LeadService.kick``), or by
  recovery if the process dies first. The event id is ``chat:<conversation>:<message id>``
  (the platform's id), so a batch redone after a lost lock queues an event the rule engine
  recognises as seen; a message without a platform id gets a generated id.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from ..engine import events as ev
from .leads import LeadService, encode_lead_event, lead_cid

#: The rule kinds (``on``) that need these events.
CHAT_KINDS = frozenset({"chat.first_message", "chat.message"})
#: What an event's ``data`` keeps of the message text.
TEXT_MAX = 500


def chat_pipelines(documents: list[Any]) -> frozenset[str]:
    """The pipelines of these (active) documents that have a rule on a chat event."""
    out = set()
    for doc in documents:
        if not isinstance(doc, Mapping):
            continue
        for rule in doc.get("rules") or ():
            on = rule.get("on") if isinstance(rule, Mapping) else None
            kinds = {on} if isinstance(on, str) else set(on or ())
            if kinds & CHAT_KINDS:
                out.add(str(doc.get("pipeline")))
                break
    return frozenset(out)


class ChatEvents:
    """Turns a conversation's customer messages into lead events (see the module docstring)."""

    def __init__(self, leads: LeadService, load: Callable[[], Awaitable[frozenset[str]]], *, ttl: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.leads = leads
        self._load = load
        self.ttl = ttl
        self.clock = clock
        self._pipelines: frozenset[str] = frozenset()
        self._loaded_at: float | None = None

    def invalidate(self) -> None:
        """A document changed in this process: read the pipelines again before the next message."""
        self._loaded_at = None

    async def listening(self) -> frozenset[str]:
        """The pipelines with chat rules (read again at most every ``ttl`` seconds)."""
        now = self.clock()
        if self._loaded_at is None or now - self._loaded_at > self.ttl:
            self._pipelines = await self._load()
            self._loaded_at = now
        return self._pipelines

    async def commands(self, cid: str, lead_id: str, contact_id: str | None, message: ev.InboundMessage, *,
                       first: bool, channel: str, account: str, snapshot: Mapping[str, Any],
                       at: float) -> list[tuple[Any, ...]]:
        """The commands queueing this message's events on the lead's queue (none when no rule of the
        lead's pipeline listens), to be sent with the conversation's save."""
        pipelines = await self.listening()
        if not pipelines:
            return []
        pipeline = (snapshot.get("lead") or {}).get("pipeline") if snapshot else None
        if pipeline is not None and str(pipeline) not in pipelines:
            return []
        data = {"text": message.text[:TEXT_MAX], "kind": message.kind, "channel": channel, "account": account,
                "conversation": cid}
        base = f"chat:{cid}:{message.message_id}" if message.message_id else None
        out: list[tuple[Any, ...]] = []
        for type_ in (("chat.first_message", "chat.message") if first else ("chat.message",)):
            event = self.leads.event(type_, lead_id, data=data, id_=f"{base}:{type_}" if base else None, at=at,
                                     contact_id=contact_id, source="chat")
            out += self.leads.store.enqueue_commands(lead_cid(lead_id), encode_lead_event(event))
        return out

    def written(self, lead_id: str) -> None:
        """The save went through: handle the lead's queue in the background."""
        self.leads.spawn_kick(lead_id)
