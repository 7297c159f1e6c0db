"""The lead loop: every event about a lead, in order, exactly once, through the rule engine.

A lead's events are a queue of the conversation store with the id ``lead:<lead id>`` (same
push, lock, save and recovery scripts as a conversation; ``queueloop.py`` is the shared loop),
so the store's guarantees carry over: an event ``id`` seen in the last 7 days is dropped, the
events of one lead run one at a time in arrival order whatever process received them, and a
batch is saved (state, history, timers) in one script or redone after a crash.

For each event the service loads the lead's automation state (the queue's state slot, msgpack),
reads the CRM snapshot once per batch, and asks a ``Reactor`` (the rule engine behind an adapter)
for the new state, timers, history and effects. Events from outside (the API, Kommo, hosted
forms) are also forwarded to the lead's conversation, if it has one, as a ``CrmEvent``
deduplicated by the event id; the CRM's own, the chat's and the trackers' are not
(``UNFORWARDED``).

Round trips: what a batch reads before it starts (the rule engine's generation token, the CRM
snapshot of the lead and its contact, the lead's conversation) is sent along with the push or
acquire that hands the batch over (``_Reads``), as conversations prefetch their snapshot; a
batch whose reads did not come along (the next one under the same lock, a failed read, a CRM
that is not the embedded one) reads them itself. The history (events and what the rules did) is the queue's transcript,
bounded like any transcript (``transcript_max``); a new lead's first events, recorded *born*
when nothing listened (``commands``, ``bot/store/leadborn.py``: no queue key), are shown until
its queue's first batch takes them into that transcript (``_born_of``).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from crm_bridge import CrmBackend, CrmRef, PrefetchSnapshot
from crm_bridge.changes import Change

from ..automations.events import ApplyRule, LeadEvent
from ..engine import events as ev
from ..errors import CrmError, CrmTemporary
from ..store import codec, leadborn, replies
from ..store import keys as k
from ..store.conversations import Batch, ConversationStore, SaveRequest
from ..store.keys import contact_processes_key
from .metrics import Metrics
from .queueloop import QueueProcessor
from .service import SNAPSHOT_REFS_MAX, _remember, lead_conversation_key

log = logging.getLogger("salesbot.leads")
#: The queue id of a lead is this prefix and the lead's id.
LEAD_PREFIX = "lead:"
#: Sources whose events are not forwarded to the lead's conversation (see ``_forward``); the
#: trackers' (``site``: page views, ``email``: sent, opened, clicked) come often and a flow can
#: only trace them today: each would cost the conversation a turn.
UNFORWARDED = frozenset({"crm", "chat", "automation", "site", "email"})
#: Sources whose events do not reach the contact's processes (``bot.runtime.processes``).
PROCESS_UNFORWARDED = frozenset({"crm", "chat", "automation"})
#: What the history keeps of an event's ``data`` (longer values are cut).
HISTORY_VALUE_MAX = 500


def lead_cid(lead_id: str) -> str:
    return f"{LEAD_PREFIX}{lead_id}"


def is_lead_queue(cid: str) -> bool:
    return cid.startswith(LEAD_PREFIX)


def encode_lead_event(event: LeadEvent) -> bytes:
    # the fields as they are (``asdict`` deep-copied ``data`` first: a tenth of an event's time)
    return codec.pack({"lead_event": {f.name: getattr(event, f.name) for f in fields(event)}})


def encode_apply_rule(event: ApplyRule) -> bytes:
    """The envelope of an ``apply_to_existing`` job's event on a lead queue (``applyjobs.py``)."""
    return codec.pack({"apply_rule": {"rule_id": event.rule_id, "job": event.job}})


def decode_entry(raw: bytes) -> tuple[LeadEvent | ApplyRule | ev.Event, dict[str, Any]]:
    """A lead queue's inbox entry: a lead event, an ``ApplyRule``, or a shell event (a
    ``TimerFired``) with extras."""
    d = codec.unpack(raw)
    if isinstance(d, dict) and "lead_event" in d:
        return LeadEvent(**d["lead_event"]), {}
    if isinstance(d, dict) and "apply_rule" in d:
        return ApplyRule(str(d["apply_rule"]["rule_id"]), str(d["apply_rule"].get("job", ""))), {}
    return codec.decode_event_extra(raw)


@dataclass(frozen=True, slots=True)
class Prefetched:
    """What came along with a lead queue's push or acquire (``_Reads``): the replies to the
    reactor's ``prepare_reads``, the CRM snapshot of ``ref`` (None: not read), and the lead's
    conversation (``conversation_read``: whether it was read)."""

    reactor: Sequence[Any] = ()
    ref: CrmRef | None = None
    snapshot: Sequence[Any] | None = None
    conversation_read: bool = False
    conversation: bytes | str | None = None
    #: The contact whose processes were read along (None: not read), and their names.
    processes_of: str | None = None
    processes: Sequence[Any] = ()


@dataclass(frozen=True, slots=True)
class _Reads:
    """The reads a batch of a lead will need, to send with the command that hands it over."""

    reactor: Sequence[tuple[Any, ...]]
    ref: CrmRef | None
    snapshot: Sequence[tuple[Any, ...]]
    conversation: tuple[Any, ...] | None
    #: The contact whose processes are read along (``HKEYS``), when the event goes to them.
    processes_of: str | None = None

    @property
    def commands(self) -> list[tuple[Any, ...]]:
        return [*self.reactor, *self.snapshot, *((self.conversation,) if self.conversation else ()),
                *((("HKEYS", contact_processes_key(self.processes_of)),) if self.processes_of else ())]

    def replies(self, found: Sequence[Any] | None) -> Prefetched | None:
        """The replies to ``commands``, sorted back (None: nothing came along)."""
        if found is None or len(found) != len(self.commands):
            return None
        n, m = len(self.reactor), len(self.reactor) + len(self.snapshot)
        conversation = found[m] if self.conversation is not None else None
        processes = found[-1] if self.processes_of else ()
        return Prefetched(reactor=found[:n], ref=self.ref, snapshot=found[n:m] if self.snapshot else None,
                          conversation_read=self.conversation is not None, conversation=conversation,
                          processes_of=self.processes_of, processes=processes or ())


@dataclass(frozen=True, slots=True)
class Reaction:
    """What the rule engine made of one event, in the shell's terms: the new state (plain data),
    timers of the lead's queue to set (``(timer id, epoch seconds)``) or cancel, entries for the
    lead card's history, and the effects left for an ``EffectRunner`` (CRM commands, bots …)."""

    state: Mapping[str, Any]
    timers_set: tuple[tuple[str, float], ...] = ()
    timers_cancel: tuple[str, ...] = ()
    history: tuple[Mapping[str, Any], ...] = ()
    effects: tuple[object, ...] = ()
    #: The rules' counters, ``(hash key, field, by)``: incremented by the batch's save script
    #: itself (``SaveRequest.counters``), so a count is exact across crashes and redone batches.
    counters: tuple[tuple[str, str, int], ...] = ()
    #: More idempotent writes sent beside the save (the ``EXPIRE`` of a new day's counters).
    commands: tuple[tuple[Any, ...], ...] = ()


class Reactor(Protocol):
    """The rule engine as the lead loop calls it: the adapter over
    ``bot.automations.engine.react(automations, state, event, snapshot, now)`` picks the lead's
    ``CompiledAutomations``, converts ``LeadState`` to and from plain data and sorts its effects.
    It may also have ``async prepare(replies) -> bool``, awaited once per batch before any
    ``react`` (``bot.runtime.automations.EngineReactor`` finds the active documents there; False:
    there are none, and the batch reads no snapshot and matches nothing), with
    ``prepare_reads() -> list[command]``, the reads whose replies it takes (sent along with the
    batch's push or acquire when possible; ``replies`` is empty when they were not)."""

    def react(self, lead_id: str, state: Mapping[str, Any] | None, event: LeadEvent | ev.TimerFired | ApplyRule,
              snapshot: Mapping[str, Any], now: datetime) -> Reaction: ...


class EffectRunner(Protocol):
    """Carries out a reaction's effects for a lead; returns entries for the lead's history."""

    async def run(self, lead_id: str, effects: Sequence[object]) -> Sequence[Mapping[str, Any]] | None: ...


class ConversationSink(Protocol):
    """Where lead events are forwarded: ``ConversationService.deliver``."""

    async def deliver(self, cid: str, event: ev.Event, *, dedupe_id: str | None = None) -> object: ...


class ProcessSink(Protocol):
    """Where lead events reach the contact's processes: ``bot.runtime.processes.Processes``."""

    async def forward(self, contact_id: str, lead_id: str, event_id: str, type_: str,
                      data: Mapping[str, Any], *, names: Sequence[Any] | None = None,
                      finished_too: bool = False) -> int: ...


@dataclass(slots=True)
class Accepted:
    lead_id: str
    id: str
    duplicate: bool = False


class LeadService(QueueProcessor[Prefetched]):
    """Queues lead events and processes lead queues (see the module docstring)."""

    def __init__(self, *, store: ConversationStore, crm: CrmBackend, metrics: Metrics,
                 reactor: Reactor | None = None, effects: EffectRunner | None = None,
                 conversations: ConversationSink | None = None, clock: Callable[[], float] = time.time,
                 park_after: int = 5) -> None:
        super().__init__(store, park_after=park_after, clock=clock)
        self.crm = crm
        self.metrics = metrics
        self.reactor = reactor
        self.effects = effects
        self.conversations = conversations
        #: The CRM when its snapshot is plain reads that can travel with the push (``_reads``).
        self._prefetch = crm if isinstance(crm, PrefetchSnapshot) else None
        #: Completes an event before anyone sees it (the Kommo backend: stage names of the status
        #: ids of its webhooks, ``bot/runtime/kommo_events.py``); None: events are complete.
        self.complete: Callable[[LeadEvent], Awaitable[LeadEvent]] | None = None
        #: Set by the services: ``(source, type)`` -> whether a flow listens to such events, which
        #: are then forwarded although their source is kept back (``bot.runtime.interest``).
        self.listens: Callable[[str, str], bool] | None = None
        #: Set by the services: whether a flow counts events of this type as a goal (``FlowInterest.goal``).
        self.goals: Callable[[str], bool] | None = None
        #: Set by the services: whether a flow waits for this type by name (``FlowInterest.hears``):
        #: the contact's chat messages then reach their processes.
        self.hears: Callable[[str], bool] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        #: lead id -> the contact its last batch used: whose snapshot to read along (bounded, LRU).
        self._contacts: collections.OrderedDict[str, str] = collections.OrderedDict()
        #: Lead queues with a batch here whose save is not sent yet: events queued for them now
        #: (an effect's CRM write) are in the inbox before that save runs, which then keeps the
        #: lock and loads them, so ``written`` needs no acquire of its own for them.
        self._unsaved: set[str] = set()
        #: The contacts' processes (``bot.runtime.processes``): they hear the lead's events too.
        self.processes: ProcessSink | None = None
        #: Queue id -> lead id whose born field its batch under way took in (``_born_of``): deleted after the save.
        self._folding: dict[str, str] = {}

    def _is_outage(self, exc: Exception) -> bool:
        # The CRM away (Kommo's API answering 5xx, 429, nothing): the lead's events wait for it in
        # the queue (the lock expires, recovery tries again); it is not the lead's fault, so such
        # failures never count towards parking the lead.
        return isinstance(exc, CrmTemporary) or super()._is_outage(exc)

    async def _process_stored(self, batch: Batch, prefetched: Prefetched | None = None) -> None:
        """Process a batch whose events are stored: with the CRM away they stay queued (recovery
        handles them once it answers), so the caller — a sender, a timer, a job — is not failed."""
        try:
            await self.process(batch, prefetched)
        except CrmTemporary as exc:
            log.warning("lead.crm_unavailable", extra={"cid": batch.cid, "error": str(exc)})

    # ------------------------------------------------------------------ in
    def event(self, type_: str, lead_id: str, *, data: Mapping[str, Any] | None = None, id_: str | None = None,
              at: float | None = None, contact_id: str | None = None, source: str = "api",
              depth: int = 0) -> LeadEvent:
        """A ``LeadEvent`` (a generated id when none is given: such an event is never a duplicate;
        96 random bits, 16 characters: it is kept in the lead's history)."""
        return LeadEvent(id=id_ or f"gen-{secrets.token_urlsafe(12)}", type=type_,
                         at=self.clock() if at is None else at, lead_id=lead_id, contact_id=contact_id,
                         data=dict(data or {}), depth=depth, source=source)

    async def deliver(self, event: LeadEvent, *, dedupe: bool = True, background: bool = False) -> Accepted:
        """Store the event on its lead's queue (accepted means stored) and process the queue here
        if no other process is (``background``: in a task, for a caller that must answer fast).
        ``dedupe``: drop an event whose id the lead saw in 7 days."""
        cid = lead_cid(event.lead_id)
        meta = {"contact_id": event.contact_id} if event.contact_id else None
        reads = self._reads(event.lead_id, event.contact_id, forward=self._forwarded(event),
                            processes=self._to_processes(event))
        pushed = await self.store.push(cid, encode_lead_event(event), dedupe_id=event.id if dedupe else None,
                                       meta=meta, reads=reads.commands)
        if pushed.duplicate:
            self.metrics.duplicates.inc()
            log.info("lead.event_duplicate", extra={"lead": event.lead_id, "event_id": event.id})
            return Accepted(event.lead_id, event.id, duplicate=True)
        if pushed.batch is not None:
            prefetched = reads.replies(pushed.prefetched)
            if background:
                self._spawn(self._process_stored(pushed.batch, prefetched))
            else:
                await self._process_stored(pushed.batch, prefetched)
        return Accepted(event.lead_id, event.id)

    async def deliver_raw(self, lead_id: str, payload: bytes, *, dedupe_id: str) -> bool:
        """An encoded entry (an ``ApplyRule``) onto the lead's queue, handled here unless another
        process holds the queue; False when the lead already had it (``dedupe_id``)."""
        reads = self._reads(lead_id, None)
        pushed = await self.store.push(lead_cid(lead_id), payload, dedupe_id=dedupe_id, reads=reads.commands)
        if pushed.batch is not None:
            await self._process_stored(pushed.batch, reads.replies(pushed.prefetched))
        return not pushed.duplicate

    async def deliver_timer(self, cid: str, event: ev.TimerFired, *, dedupe_id: str,
                            entry_extra: Mapping[str, Any] | None = None) -> bool:
        """A timer of a lead queue fell due (the worker); False when it was a duplicate."""
        payload = codec.encode_event(event)
        if entry_extra:
            payload = codec.pack({"event": payload, "extra": dict(entry_extra)})
        reads = self._reads(cid[len(LEAD_PREFIX):], None)
        pushed = await self.store.push(cid, payload, dedupe_id=dedupe_id, reads=reads.commands)
        if pushed.batch is not None:
            await self._process_stored(pushed.batch, reads.replies(pushed.prefetched))
        return not pushed.duplicate

    async def emit(self, type_: str, lead_id: str, *, id_: str, data: Mapping[str, Any], contact_id: str | None,
                   source: str, depth: int) -> None:
        """An event of the server's own work (``send_email``'s ``email.sent``: the outward actions'
        ``LeadEvents``), stored now and handled in the background."""
        await self.deliver(self.event(type_, lead_id, data=data, id_=id_, contact_id=contact_id, source=source,
                                      depth=depth), background=True)

    # ------------------------------------------------------------------ the CRM's changes (ChangeSink)
    def commands(self, changes: Sequence[Change]) -> list[tuple[Any, ...]]:
        """Commands queueing the events of these changes, for the CRM's own MULTI/EXEC; a new
        lead's, when nothing would act on them, recorded born instead (``bot/store/leadborn.py``)."""
        out: list[tuple[Any, ...]] = []
        by_lead: dict[str, list[Change]] = {}
        for change in changes:
            by_lead.setdefault(change.lead_id, []).append(change)
        quiet = self._quiet()
        for lead_id, some in by_lead.items():
            if quiet is not None and some[0].type == "lead.created" and leadborn.dense(lead_id):
                born = self._born(quiet, lead_id, some)
                if born is not None:
                    out.append(born)
                    continue
            for change in some:
                event = self.event(change.type, lead_id, data=change.data, contact_id=change.contact_id,
                                   source="crm", depth=change.depth)
                out += self.store.enqueue_commands(lead_cid(lead_id), encode_lead_event(event))
        return out

    def _quiet(self) -> tuple[str, bytes] | None:
        """``(generation key, token)`` under which the rule engine found no active document (its
        ``quiet``), when a new lead's events may be recorded born: one Redis, events complete."""
        quiet: tuple[str, bytes] | None = getattr(self.reactor, "quiet", None)
        if quiet is None or self.complete is not None or self.store.cluster:
            return None
        return quiet

    def _born(self, quiet: tuple[str, bytes], lead_id: str, changes: Sequence[Change]) -> tuple[Any, ...] | None:
        """The ``leadborn`` command for a new lead's events (None: something listens to one)."""
        seed, at = secrets.token_bytes(12), self.clock()
        events = [self.event(c.type, lead_id, data=c.data, id_=leadborn.event_id(seed, n), at=at,
                             contact_id=c.contact_id, source="crm", depth=c.depth) for n, c in enumerate(changes)]
        if any(self._forwarded(e) or self._to_processes(e) for e in events):
            return None
        born = leadborn.Born(at, seed, events[0].contact_id, tuple(
            (e.type, _history_entry(e, at)["data"], e.contact_id, e.depth) for e in events))
        cid = lead_cid(lead_id)
        key = k.ConversationKey(cid)
        pending = k.pending_key(k.shard_of(cid, self.store.shards))
        return leadborn.command(quiet[0], quiet[1], lead_id, leadborn.encode(born), key.inbox, pending, self.clock(),
                                k.retry_member(cid), self.store.ttl, [encode_lead_event(e) for e in events])

    def written(self, changes: Sequence[Change]) -> None:
        """The changes are stored: handle their queues now, in the background (a process that dies
        first leaves them to recovery, due at once)."""
        for lead_id in dict.fromkeys(c.lead_id for c in changes):
            if lead_cid(lead_id) not in self._unsaved:  # (else the batch under way sees them: ``_unsaved``)
                self._spawn(self.kick(lead_id))

    def _spawn(self, work: Coroutine[Any, Any, object]) -> None:
        task = asyncio.create_task(self._quietly(work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _quietly(work: Coroutine[Any, Any, object]) -> None:
        try:
            await work
        except Exception:  # the queue stays in the recovery set: a worker takes it over
            log.warning("lead.background_failed", exc_info=True)

    def spawn_kick(self, lead_id: str) -> None:
        """``kick`` in the background (events queued by someone else's write, e.g. a conversation's save)."""
        self._spawn(self.kick(lead_id))

    async def kick(self, lead_id: str) -> None:
        """Process a lead queue unless another process holds it (that one sees the new events)."""
        reads = self._reads(lead_id, None)
        batch = await self.store.acquire(lead_cid(lead_id), reads=reads.commands)
        if isinstance(batch, Batch):
            await self._process_stored(batch, reads.replies(batch.prefetched))

    async def idle(self) -> None:
        """Wait for the background handling started by ``written`` (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # ------------------------------------------------------------------ out
    async def history(self, lead_id: str, limit: int = 200) -> list[dict[str, Any]]:
        """The lead's recent events and what the rules did with them, oldest first."""
        rows = await self.store.tail_log(lead_cid(lead_id), limit)
        born = None if rows else await self.store.redis.hget(leadborn.key(lead_id), lead_id)
        return leadborn.merged(leadborn.decode(replies.raw(born)) if born else None, rows, now=self.clock(),
                               ttl=self.store.ttl, cap=self.store.transcript_max, limit=limit)

    # ------------------------------------------------------------------ a batch
    def _reads(self, lead_id: str, contact_id: str | None, *, forward: bool = False,
               processes: bool = False) -> _Reads:
        """What the lead's next batch will read first (see the module docstring): the reactor's
        reads, the snapshot of the lead with the contact it names (else the one its last batch
        here used) when the CRM's snapshot is plain reads, the lead's conversation when the
        event goes to it, and the contact's processes when it goes to them."""
        prepare_reads = getattr(self.reactor, "prepare_reads", None)
        reactor = prepare_reads() if prepare_reads is not None else []
        ref: CrmRef | None = None
        snapshot: list[tuple[Any, ...]] = []
        if self.reactor is not None and self._prefetch is not None:
            ref = CrmRef(contact_id or self._contacts.get(lead_id, ""), lead_id)
            snapshot = self._prefetch.snapshot_reads(ref)
        conversation = ("HGET", lead_conversation_key(lead_id), lead_id) if forward else None
        contact = (contact_id or self._contacts.get(lead_id)) if processes else None
        return _Reads(reactor, ref, snapshot, conversation, contact or None)

    async def _next(self, batch: Batch) -> tuple[Batch | None, Prefetched | None]:
        """The next batch under the same lock, its first reads sent along."""
        reads = self._reads(batch.cid[len(LEAD_PREFIX):], None)
        found = await self.store.load(batch.cid, batch.token, reads=reads.commands)
        return found, reads.replies(found.prefetched) if found is not None else None

    async def _process_batch(self, batch: Batch, prefetched: Prefetched | None = None) -> int:
        self._unsaved.add(batch.cid)
        try:
            req = await self._handle(batch, prefetched)
        finally:
            self._unsaved.discard(batch.cid)
            folded = self._folding.pop(batch.cid, None)
        result = await self.store.save(batch.cid, batch.token, req)
        if result.status == -1:
            log.error("store.lock_lost", extra={"cid": batch.cid})
        elif folded is not None:  # the born entries are in the queue's transcript now (``_born_of``)
            await self.store.redis.hdel(leadborn.key(folded), folded)
        return result.status

    async def _handle(self, batch: Batch, prefetched: Prefetched | None) -> SaveRequest:
        """A batch's events through the rules and their effects: what its save writes."""
        lead_id = batch.cid[len(LEAD_PREFIX):]
        state: Mapping[str, Any] | None = codec.unpack(batch.state) if batch.state else None
        entries = [decode_entry(raw) for raw in batch.events]
        if self.complete is not None:
            entries = [(await self.complete(e) if isinstance(e, LeadEvent) else e, x) for e, x in entries]
        contact_id = batch.meta.get("contact_id") or next(
            (e.contact_id for e, _ in entries if isinstance(e, LeadEvent) and e.contact_id), None)
        born = await self._born_of(batch, lead_id, entries)
        if not contact_id and born is not None:
            contact_id = born.contact
        reactor = self.reactor
        prepare = getattr(reactor, "prepare", None)  # the engine's: finds the active documents, False if none
        if prepare is not None and not await prepare(prefetched.reactor if prefetched is not None else ()):
            reactor = None  # no automations at all: no snapshot to read, nothing to match
        ref = CrmRef(contact_id or "", lead_id)
        snapshot = await self._snapshot(ref, prefetched) if reactor is not None else {}
        if contact_id:
            _remember(self._contacts, lead_id, contact_id, SNAPSHOT_REFS_MAX)
        conversation = _Conversation(prefetched)
        req = SaveRequest(state=None, processed=len(batch.events))
        if born is not None and leadborn.alive(born, self.clock(), self.store.ttl):
            for row in born.rows():  # first in the new queue's transcript, as if it had handled them
                req.add_log(row)
        for event, extra in entries:
            now = self.clock()
            if isinstance(event, LeadEvent):
                req.add_log(_history_entry(event, now))
                await self._forward(event, conversation)
                if self.processes is not None and contact_id and self._to_processes(event):
                    target = event.contact_id or contact_id
                    names = None  # the contact's processes, if they came along (the batch's first event)
                    if prefetched is not None and prefetched.processes_of == target:
                        names, prefetched = prefetched.processes, replace(prefetched, processes_of=None)
                    await self.processes.forward(target, lead_id, event.id, event.type, event.data, names=names,
                                                 finished_too=self.goals is not None and self.goals(event.type))
            elif isinstance(event, ApplyRule):
                req.add_log({"role": "event", "at": now, "type": "apply_rule", "rule": event.rule_id,
                             "job": event.job, "source": "automation"})
            elif isinstance(event, ev.TimerFired) and extra.get("due"):
                self.metrics.timer_late(max(0.0, now - float(extra["due"])))
            if reactor is None or not isinstance(event, (LeadEvent, ev.TimerFired, ApplyRule)):
                continue
            try:
                reaction = reactor.react(lead_id, state, event, snapshot, datetime.fromtimestamp(now, UTC))
            except Exception:  # a bug must not wedge the lead: log it, skip the event
                self.metrics.step_errors.inc()
                log.exception("lead.react_crashed", extra={"cid": batch.cid, "event": type(event).__name__})
                req.add_log({"role": "system", "event": "error", "text": "internal error in the rules", "at": now})
                continue
            state = reaction.state
            req.timers_set += reaction.timers_set
            req.timers_cancel += reaction.timers_cancel
            req.counters += reaction.counters
            req.extra_commands += reaction.commands
            for entry in reaction.history:
                req.add_log({"role": "automation", "at": now, **entry})
            if reaction.effects and self.effects is not None:
                for entry in await self.effects.run(lead_id, reaction.effects) or ():
                    req.add_log({"role": "automation", "at": now, **entry})
        req.state = codec.pack(dict(state)) if state is not None else None
        if contact_id and batch.meta.get("contact_id") != contact_id:
            req.meta = {"contact_id": contact_id}
        return req

    async def _born_of(self, batch: Batch, lead_id: str,
                       entries: Sequence[tuple[Any, Mapping[str, Any]]]) -> leadborn.Born | None:
        """A new queue's (no transcript yet) lead's events recorded born (``leadborn.py``): its
        first batch takes them into its transcript and deletes the field once saved
        (``_folding``). One read, once per queue: never for a lead the CRM just created."""
        if "n" in batch.meta or self.store.cluster or any(
                isinstance(e, LeadEvent) and e.type == "lead.created" for e, _ in entries):
            return None
        raw = await self.store.redis.hget(leadborn.key(lead_id), lead_id)
        if not raw:
            return None
        self._folding[batch.cid] = lead_id
        return leadborn.decode(replies.raw(raw))

    async def _snapshot(self, ref: CrmRef, prefetched: Prefetched | None) -> Mapping[str, Any]:
        """The lead's CRM snapshot, from the reads that came along with the batch when they were
        of this lead and contact."""
        try:
            if (prefetched is not None and prefetched.snapshot is not None and prefetched.ref == ref
                    and self._prefetch is not None):
                return await self._prefetch.snapshot_from(ref, list(prefetched.snapshot))
            return await self.crm.snapshot(ref)
        except CrmTemporary:
            raise  # the CRM away: the events wait for it (``_is_outage``); rules never see a blank lead
        except CrmError as exc:
            log.warning("crm.snapshot_failed", extra={"cid": lead_cid(ref.lead_id), "error": str(exc)})
            return {}

    def _to_processes(self, event: LeadEvent) -> bool:
        """Whether the event goes to the contact's processes: not one of the sources kept from
        them (``PROCESS_UNFORWARDED``), unless a flow listens to its type (as ``_forwarded``), or
        the customer's messages when a flow waits for them by name (a process waiting for a reply)."""
        if self.processes is None:
            return False
        return event.source not in PROCESS_UNFORWARDED or (
            self.listens is not None and self.listens(event.source, event.type)) or (
            event.source == "chat" and self.hears is not None and self.hears(event.type))

    def _forwarded(self, event: LeadEvent) -> bool:
        """Whether the event goes to the lead's conversation (see ``_forward``): also one of a
        source kept back when a flow listens to its type (``listens``: bot.runtime.interest)."""
        if self.conversations is None:
            return False
        return event.source not in UNFORWARDED or (self.listens is not None and self.listens(event.source, event.type))

    async def _forward(self, event: LeadEvent, conversation: _Conversation) -> None:
        """The event to the lead's conversation, once (a redone batch is deduplicated there).
        Not the embedded CRM's own changes (a conversation's commands make most of them: it
        would hear of its own writes) nor the conversations' or the trackers' events (``UNFORWARDED``)."""
        if self.conversations is None or not self._forwarded(event):
            return
        found = await conversation.of(self.store.redis, event.lead_id)
        if found:
            await self.conversations.deliver(replies.text(found), ev.CrmEvent(event.type, dict(event.data)),
                                             dedupe_id=f"lead-event:{event.lead_id}:{event.id}")


class _Conversation:
    """The lead's conversation for one batch: read along with the batch, else once when needed."""

    def __init__(self, prefetched: Prefetched | None) -> None:
        self._read = prefetched is not None and prefetched.conversation_read
        self._found = prefetched.conversation if prefetched is not None else None

    async def of(self, redis: Any, lead_id: str) -> bytes | str | None:
        if not self._read:
            self._found = await redis.hget(lead_conversation_key(lead_id), lead_id)
            self._read = True
        return self._found


def _cut(value: Any) -> Any:
    if isinstance(value, str) and len(value) > HISTORY_VALUE_MAX:
        return value[:HISTORY_VALUE_MAX] + "…"
    return value


def _history_entry(event: LeadEvent, now: float) -> dict[str, Any]:
    data = {str(k): _cut(v) for k, v in list(event.data.items())[:50]}
    return {"role": "event", "at": now, "id": event.id, "type": event.type, "happened_at": event.at,
            "source": event.source, "depth": event.depth, "data": data}
