"""Conversation events for the automations: ``chat.first_message`` and ``chat.message``.

Every customer message of a conversation whose CRM lead is known may concern a rule, so this
sits on the hot path. It stays cheap in two ways:

- **Only when something listens.** ``ChatEvents`` keeps, per process, the pipelines whose active
  automation document needs chat events: a rule ``on`` one, an ``idle`` rule (a customer's
  message is an event: the lead is not idle), a trigger or a scoring entry ``on`` one (refreshed
  every ``ttl`` seconds, and at once when this process stores or activates a document). A loaded
  flow that waits for one or counts one as a goal (a process's pause ``on: "event"``) makes
  every lead's messages events. Nothing listening, nothing is done — not even a Redis command.
  With a CRM snapshot at hand, a lead of another pipeline is skipped.
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
from .interest import CHAT_KINDS
from .leads import LeadService, encode_lead_event, lead_cid

#: Rule kinds that hear every event of the lead: its messages too.
EVERY_EVENT = frozenset({"idle"})
#: What an event's ``data`` keeps of the message text.
TEXT_MAX = 500


def chat_pipelines(documents: list[Any]) -> frozenset[str]:
    """The pipelines of these (active) documents that need chat events: a rule on one or on
    every event (``idle``), a trigger or a scoring entry on one."""
    out = set()
    for doc in documents:
        if isinstance(doc, Mapping) and _needs_chat(doc):
            out.add(str(doc.get("pipeline")))
    return frozenset(out)


def _needs_chat(doc: Mapping[str, Any]) -> bool:
    for rule in doc.get("rules") or ():
        if _kinds(rule) & (CHAT_KINDS | EVERY_EVENT):
            return True
    return any(_kinds(entry) & CHAT_KINDS for key in ("triggers", "scoring") for entry in doc.get(key) or ())


def _kinds(entry: object) -> set[str]:
    """An entry's ``on``: one type or a list of them."""
    on = entry.get("on") if isinstance(entry, Mapping) else None
    if isinstance(on, str):
        return {on}
    return {k for k in on if isinstance(k, str)} if isinstance(on, list) else set()


class ChatEvents:
    """Turns a conversation's customer messages into lead events (see the module docstring)."""

    def __init__(self, leads: LeadService, load: Callable[[], Awaitable[frozenset[str]]], *, ttl: float = 5.0,
                 clock: Callable[[], float] = time.monotonic, heard: Callable[[], bool] | None = None) -> None:
        self.leads = leads
        self._load = load
        #: Whether a loaded flow waits for a chat event by name or counts one (``FlowInterest.chat``).
        self._heard = heard
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
        """The commands queueing this message's events on the lead's queue (none when nothing
        listens: see the module docstring), to be sent with the conversation's save."""
        if not (self._heard is not None and self._heard()):
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
