"""Processes (SALESmanago automation processes): a flow started for a contact, not a chat.

A process runs in the contact's **process conversation**: the conversation id
``process:<process id>:<contact id>`` (``process_cid``), channel ``process``, no chat of its
own. It is an ordinary conversation of the store (same queue, lock, save, timers and recovery),
opened with the contact and its lead in its metadata, so its turns read that lead's CRM snapshot
and its CRM actions change that lead. It reaches the contact only through actions:
``send_email``, ``send_sms`` and ``send_message`` (the message goes out in the contact's own
conversation on the account named, as a ``Relayed`` event: that chat's outbox, rate limits and
transcript). A message step inside a process reaches nobody: it is only written to the process
conversation's transcript.

Who is in which process: ``sb:processes:{contact:<id>}``, a hash process id -> when it was last
started (the lead card in ``/live`` lists them with the state of each run; a person stops one).
Lead events reach the processes of the event's contact whose run is active, as they reach the
lead's conversation (a ``CrmEvent``, deduplicated by the event id), except the CRM's own changes,
the chats' messages and the automations' (``PROCESS_UNFORWARDED``): a process's own CRM actions
would come back to it as events, and a chat message would cost every process of the contact a turn.

Starting a process that is already running (or waiting) for the contact does nothing
(``already_running``): a contact is in a process once at a time, in as many processes as it likes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from ..engine import events as ev
from ..engine.process import PROCESS_CHANNEL
from ..errors import SalesbotError
from ..store import keys as k
from ..store import replies, statefields
from ..store.conversations import ConversationStore
from ..store.keys import contact_processes_key
from .leads import PROCESS_UNFORWARDED
from .outbound import Contact, Deliverer, OutboundService

__all__ = ["ACTIVE", "PROCESS_CHANNEL", "PROCESS_UNFORWARDED", "ProcessStarted", "Processes", "process_cid"]

log = logging.getLogger("salesbot.processes")

#: Run states in which a process is "in" a contact.
ACTIVE = frozenset({"running", "waiting"})
#: A contact's processes listed at most (the newest first).
LISTED = 100


class ProcessError(SalesbotError):
    pass


class UnknownProcess(ProcessError):
    pass


def process_cid(process: str, contact_id: str) -> str:
    return k.conversation_id(PROCESS_CHANNEL, process, contact_id)


class BotSource(Protocol):
    async def ensure(self, bot: str) -> object | None: ...


@dataclass(frozen=True, slots=True)
class ProcessStarted:
    process: str
    contact: str
    lead: str
    conversation: str
    status: str  # started | already_running | duplicate


class Processes:
    """Starts, stops, lists processes of contacts and hands them their lead events."""

    def __init__(self, *, redis: Redis, store: ConversationStore, conversations: Deliverer, bots: BotSource,
                 outbound: OutboundService | None, clock: Callable[[], float] = time.time) -> None:
        self.redis = redis
        self.store = store
        self.conversations = conversations
        self.bots = bots
        self.outbound = outbound
        self.clock = clock

    async def contact(self, *, contact_id: str | None = None, phone: str | None = None, email: str | None = None,
                      lead_id: str | None = None) -> Contact:
        """The contact (by id, phone or e-mail) and its lead (``OutboundService.find_contact``)."""
        if self.outbound is None:  # pragma: no cover - every server builds it
            raise ProcessError("processes need the outbound service")
        return await self.outbound.find_contact(contact_id=contact_id, phone=phone, email=email, lead_id=lead_id)

    async def start(self, process: str, contact: Contact, *, variables: Mapping[str, Any] | None = None,
                    key: str | None = None) -> ProcessStarted:
        """Start ``process`` for ``contact`` unless it runs for it already. ``key``: an idempotency
        key (a redone automation batch, a job page, a flow's request): a start seen under it in the
        last 7 days is not repeated."""
        if await self.bots.ensure(process) is None:
            raise UnknownProcess(f"no process (bot) {process!r}")
        cid = process_cid(process, contact.id)
        meta = await self.store.meta(cid)
        if meta.get("run_status") in ACTIVE:  # (its bot may differ: a start_bot step replaced the first)
            return ProcessStarted(process, contact.id, contact.lead_id, cid, "already_running")
        new_meta = {"channel": PROCESS_CHANNEL, "account": process, "contact_id": contact.id,
                    "lead_id": contact.lead_id, "company_id": ""}
        if contact.name:
            new_meta["name"] = contact.name
        result = await self.conversations.deliver(
            cid, ev.StartBot(process, None, dict(variables or {}), if_idle=True),
            dedupe_id=f"process-start:{key}" if key else None,
            meta={name: value for name, value in new_meta.items() if meta.get(name, "") != value})
        duplicate = bool(getattr(result, "duplicate", False))
        if not duplicate:
            await self.redis.hset(contact_processes_key(contact.id), process, f"{self.clock():.3f}")
        log.info("process.started", extra={"bot": process, "contact": contact.id, "lead": contact.lead_id,
                                           "duplicate": duplicate})
        return ProcessStarted(process, contact.id, contact.lead_id, cid, "duplicate" if duplicate else "started")

    async def stop(self, process: str, contact_id: str, *, by: str = "a person") -> bool:
        """Stop the contact's run of ``process``; False when it is not running."""
        cid = process_cid(process, contact_id)
        meta = await self.store.meta(cid)
        if meta.get("run_status") not in ACTIVE:
            return False
        await self.conversations.deliver(cid, ev.StopBot(f"stopped by {by}"))
        log.info("process.stopped", extra={"bot": process, "contact": contact_id})
        return True

    async def of_contact(self, contact_id: str) -> list[dict[str, Any]]:
        """The contact's processes, newest first: each with its run's state and step."""
        started = replies.text_map(await self.redis.hgetall(contact_processes_key(contact_id)))
        newest = sorted(started.items(), key=lambda item: float(item[1] or 0), reverse=True)[:LISTED]
        out = []
        for process, at in newest:
            cid = process_cid(process, contact_id)
            meta = await self.store.meta(cid)
            status = meta.get("run_status") or "queued"
            out.append({"process": process, "conversation": cid, "started": float(at or 0), "status": status,
                        "active": status in ACTIVE or status == "queued", "step": meta.get("step") or None,
                        "version": int(meta["version"]) if meta.get("version", "").isdigit() else None})
        return out

    # ------------------------------------------------------------------ lead events
    async def forward(self, contact_id: str, lead_id: str, event_id: str, type_: str,
                      data: Mapping[str, Any], *, names: Sequence[Any] | None = None,
                      finished_too: bool = False) -> int:
        """A lead event to the contact's active processes (once each: deduplicated by its id);
        returns how many got it. ``names``: the contact's processes when they came along with the
        lead queue's push (else read here); ``finished_too``: also to finished runs (a goal's
        event: a run that ended still counts the goal for the splits it passed). A store failure
        here is logged: the lead's batch goes on."""
        try:
            if names is None:
                names = await self.redis.hkeys(contact_processes_key(contact_id))
            names = [replies.text(n) for n in names]
            if not names:
                return 0
            cids = [process_cid(process, contact_id) for process in names]
            async with self.redis.pipeline(transaction=False) as pipe:  # the runs' states, in one round trip
                for cid in cids:
                    pipe.hgetall(k.ConversationKey(cid).meta)  # ``run_status``: the state's (statemeta.py)
                metas = await pipe.execute()
            sent = 0
            for cid, raw in zip(cids, metas, strict=True):
                status = statefields.split(raw, cid)[0].get("run_status") if raw else None
                if status is None or not (status in ACTIVE or (finished_too and status == "finished")):
                    continue
                await self.conversations.deliver(cid, ev.CrmEvent(type_, dict(data)),
                                                 dedupe_id=f"lead-event:{lead_id}:{event_id}")
                sent += 1
            return sent
        except (RedisError, OSError) as exc:
            log.warning("process.forward_failed", extra={"contact": contact_id, "error": type(exc).__name__})
            return 0
