"""The conversation loop: events in, the interpreter run under the conversation's lock, effects out.

``ConversationService.deliver`` is what channels, timers and the API call. The store's push
either makes this process the conversation's processor (it then runs every waiting event in
order and saves) or leaves the event to the process that already is. See ``store.py``.
"""

from __future__ import annotations

import collections
import functools
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from crm_bridge import ChannelIdentity, CrmBackend, CrmRef, PrefetchIdentity, PrefetchSnapshot

from ..engine import events as ev
from ..engine.analytics import Counts, Visit, count_turn
from ..engine.flows import FlowSource
from ..engine.state import ConversationState
from ..engine.transcript import inbound_entry, internal_entry, outbound_entry, system_entry
from ..errors import CrmError, CrmTemporary
from ..store import buckets, codec, statefields, statemeta
from ..store import indexes as convindex
from ..store.analytics import AnalyticsCounts
from ..store.conversations import Batch, ConversationStore, SaveRequest
from ..store.memoryguard import MemoryGuard
from ..store.pushscript import NO_TIMERS, WAKE_FIELD
from ..store.splits import count_field, split_key
from ..store.timers import is_wake, wake_member
from . import marks
from .driver import Driver
from .metrics import Metrics
from .queueloop import IdentityPending, QueueProcessor
from .relay import Recipients, queue_relayed

if TYPE_CHECKING:
    from ..engine import effects as fx

log = logging.getLogger("salesbot.runtime")
_TRACE_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
#: lead id -> the conversation working on it (written when the conversation's lead is found): a
#: field of a bucket hash of 128 lead ids (of 1,024 by CRC-32 for Kommo's sparse ids;
#: ``lead_conversation_key``), about 40 B a lead where a field of the one big hash it was before
#: issue 14's fifth wave cost 98 (moved at start).
LEAD_CONVERSATIONS_KEY = "sb:lead_conversations"


def lead_conversation_key(lead_id: str) -> str:
    """The hash whose field ``lead_id`` names the lead's conversation (``bot/store/buckets.py``)."""
    return buckets.bucket(LEAD_CONVERSATIONS_KEY, lead_id)


#: Conversations whose CRM lead a process remembers, to prefetch its snapshot with the push.
SNAPSHOT_REFS_MAX = 10_000
#: Decoded states a process keeps beside the blob it saved: the next batch of the conversation
#: reuses the object when Redis returns the same blob (no other process wrote in between).
#: Not kept after a batch of wakes that left no timer (a worker's fire, mostly): no timer will
#: bring it back to this process, and a worker kept every state it fired for the collector to
#: walk (its collections over 10,000 fires of ``bench/timers_inprocess.py``: 39–53 ms, 15–17 ms
#: without; issue 14 aim 5).
STATE_CACHE_MAX = 4_096

K = TypeVar("K")
V = TypeVar("V")


def _remember(cache: collections.OrderedDict[K, V], key: K, value: V, limit: int) -> None:
    """Put ``key`` in a bounded LRU mapping (the least recently used entry goes past ``limit``)."""
    cache[key] = value
    cache.move_to_end(key)
    if len(cache) > limit:
        cache.popitem(last=False)


class FlowLoader(FlowSource, Protocol):
    """A flow source that can load what a conversation is about to need."""

    async def ensure_for(self, state: ConversationState | None, greeting: str | None = None) -> None: ...


class OutboundRouter(Protocol):
    """Tells the loop how a channel delivers: through the transcript (live chat) or an outbox."""

    def delivers_via_transcript(self, channel: str) -> bool: ...


class ChatSink(Protocol):
    """Customer messages as lead events (``bot.runtime.chatevents.ChatEvents``): commands sent with
    the conversation's save, and a call once it is written."""

    async def commands(self, cid: str, lead_id: str, contact_id: str | None, message: ev.InboundMessage, *,
                       first: bool, channel: str, account: str, snapshot: Mapping[str, Any],
                       at: float) -> list[tuple[Any, ...]]: ...

    def written(self, lead_id: str) -> None: ...


class ReplyHandoff(Protocol):
    """Sends a save's channel messages at once (``bot.store.outbox.Outbox``, "Replies at once")."""

    def lease_for(self, account: str | None) -> float | None: ...

    def committed(self, account: str, cid: str, meta: Mapping[str, str], pending: list[bytes],
                  claim: float) -> None: ...


@dataclass(slots=True)
class Prefetched:
    """What the push read along: the snapshot of ``ref``'s records, or the identity lookup of a
    conversation this process knew no lead of (``identity``: the replies to ``identity_reads``)."""

    ref: CrmRef | None = None
    snapshot: list[Any] | None = None
    identity: list[Any] | None = None
    #: ``(payload, event, extra)`` of the event this process just pushed: when the batch holds
    #: that payload, the event itself is used, not decoded again (``_reads_back``).
    own: tuple[bytes, ev.Event, dict[str, Any]] | None = None


@dataclass(slots=True)
class DeliverResult:
    duplicate: bool = False
    processed_here: bool = False
    #: A wake the push settled: nothing queued; arm the wake at ``wake_at`` (None: no timer left).
    early: bool = False
    wake_at: float | None = None


Clock = Callable[[], float]


class ConversationService(QueueProcessor[Prefetched]):
    #: Set by the services when Redis has a maxmemory: refuses new conversations near it.
    memory_guard: MemoryGuard | None = None
    #: Set by the services: a message step's ``recipients`` beyond this chat (``bot.runtime.relay``).
    recipients: Recipients | None = None
    #: Set by the services: customer messages as lead events for the automations (``chatevents.py``).
    chat: ChatSink | None = None
    #: Set by the services: the outbox, which sends what a save claimed right after it.
    replies: ReplyHandoff | None = None
    #: Set by the services: the funnel counts of bot runs, written with the save (docs/analytics.md).
    analytics: AnalyticsCounts | None = None

    def __init__(
        self,
        *,
        store: ConversationStore,
        flows: FlowLoader,
        driver: Driver,
        crm: CrmBackend,
        router: OutboundRouter,
        metrics: Metrics,
        clock: Clock = time.time,
        park_after: int = 5,
    ) -> None:
        super().__init__(store, park_after=park_after, clock=clock)
        self.flows = flows
        self.driver = driver
        self.crm = crm
        self.router = router
        self.metrics = metrics
        #: A backend whose snapshot reads can travel with the push (one round trip less).
        self._prefetch = crm if isinstance(crm, PrefetchSnapshot) else None
        #: (backend, itself if its identity lookup can travel with the push): see _identity_prefetch.
        self._identity_checked: tuple[object, PrefetchIdentity | None] = (None, None)
        #: cid -> the lead of its last turn that read the CRM: what to prefetch (bounded, LRU).
        self._snapshot_refs: collections.OrderedDict[str, CrmRef] = collections.OrderedDict()
        #: cid -> (the state blob this process saved, that state decoded); see STATE_CACHE_MAX.
        self._states: collections.OrderedDict[str, tuple[bytes, ConversationState]] = collections.OrderedDict()

    async def deliver(self, cid: str, event: ev.Event, *, dedupe_id: str | None = None,
                      meta: Mapping[str, str] | None = None,
                      entry_extra: Mapping[str, Any] | None = None) -> DeliverResult:
        """Queue an event for a conversation; process it here if no other process is."""
        if self.memory_guard is not None and self.memory_guard.high:
            await self.memory_guard.admit(cid)  # StoreFull for a new conversation
        payload = codec.encode_event(event)
        if entry_extra:  # the envelope every version reads (a new field would stop older processes)
            payload = codec.pack({"event": payload, "extra": dict(entry_extra)})
        # A wake's push reads the snapshot along too, though a settled (early) wake throws it away:
        # without it the wake that fires a timer of a flow that reads the CRM would read it in a
        # round trip of its own (the timers bench cannot show it: its flow reads no CRM).
        ref = self._snapshot_refs.get(cid) if self._prefetch is not None else None
        reads: list[tuple[Any, ...]] = []
        if ref is not None and self._prefetch is not None:
            reads = self._prefetch.snapshot_reads(ref)
        # A conversation this process has neither read the CRM for nor saved: likely a new session.
        by_identity = self._identity_prefetch() if ref is None and cid not in self._states else None
        identity = _identity(meta) if by_identity is not None else None
        if identity is not None and by_identity is not None:
            reads = by_identity.identity_reads(identity)
        wake = None  # a wake: settled by the push when the metadata proves no timer due by then
        if type(event) is ev.TimerFired and is_wake(event.timer_id):
            wake = max(self.clock(), float((entry_extra or {}).get("due") or 0))  # as ``_early_wakes``
        result = await self.store.push(cid, payload, dedupe_id=dedupe_id, meta=dict(meta or {}), reads=reads,
                                       wake=wake)
        if result.early:
            log.debug("timer.wake_early", extra={"cid": cid})
            return DeliverResult(early=True, wake_at=result.wake_at)
        if result.duplicate:
            self.metrics.duplicates.inc()
            log.info("event.duplicate", extra={"cid": cid, "dedupe_id": dedupe_id})
            return DeliverResult(duplicate=True)
        if result.batch is None:
            return DeliverResult()
        own = (payload, event, dict(entry_extra or {})) if _reads_back(event) else None
        if result.prefetched is None:
            prefetched = Prefetched(own=own)
        elif ref is not None:
            prefetched = Prefetched(ref=ref, snapshot=result.prefetched, own=own)
        else:
            prefetched = Prefetched(identity=result.prefetched, own=own)
        try:
            done = await self.process(result.batch, prefetched)
        except IdentityPending:
            return DeliverResult()  # queued: processed once the CRM answers again
        return DeliverResult(processed_here=done)

    def _identity_prefetch(self) -> PrefetchIdentity | None:
        """``crm`` when its identity lookup can travel with the push (a first message's round trip)."""
        crm = self.crm
        if self._identity_checked[0] is not crm:
            self._identity_checked = (crm, crm if isinstance(crm, PrefetchIdentity) else None)
        return self._identity_checked[1]

    def _forget(self, cid: str) -> None:
        self._states.pop(cid, None)

    async def _process_batch(self, batch: Batch, prefetched: Prefetched | None = None) -> int:
        cid = batch.cid
        meta = batch.meta
        cached = self._states.pop(cid, None)  # taken out: back in only once this batch is saved
        if batch.state and cached is not None and cached[0] == batch.state:
            # The blob this process wrote last: no need to decode it. Not cloned either: taken out
            # of the cache above, this batch holds the only reference (the interpreter clones what
            # it changes, the shell only replaces attributes; issue 14 aim 1).
            state = cached[1]
        elif batch.state:
            state = codec.decode_state(batch.state)
        else:
            state = ConversationState(id=cid, channel=meta.get("channel", "livechat"),
                                      account=meta.get("account", "default"))
        stored = meta
        if batch.state:  # what the state holds is not stored beside it (bot/store/statemeta.py)
            meta = {**meta, **statemeta.fields(state)}
        own = prefetched.own if prefetched is not None else None  # the event just pushed, if this batch has it
        events = [(own[1], own[2]) if own is not None and raw == own[0] else codec.decode_event_extra(raw)
                  for raw in batch.events]  # decoded once for the whole batch
        pending = dict(state.timers)  # this batch's copy (see ``_due_timers``)
        armed = min(pending.values(), default=None)  # the timer entry is due no later (``_rearm``)
        early = _early_wakes(events, pending, self.clock())
        if early and not batch.state:  # wakes of a conversation with no state (gone): no ghost saved
            log.debug("timer.wake_gone", extra={"cid": cid})
            req = SaveRequest(state=None, processed=len(batch.events), refresh_ttl=False)
            return (await self.store.save(cid, batch.token, req)).status  # the inbox and the lock dropped
        new_meta: dict[str, str] = {}
        ref, created = await self._crm_ref(meta, new_meta, cid,
                                           prefetched.identity if prefetched is not None else None)
        if created is not None and ref is not None:  # new records, as written: the snapshot needs no read
            prefetched = Prefetched(ref=ref, snapshot=created)
        if ref is not None:
            state.crm = {"contact_id": ref.contact_id, "lead_id": ref.lead_id, "company_id": ref.company_id or ""}
        snapshot: Mapping[str, Any] = {}
        if early:  # nothing runs: no snapshot read (the CRM ref is kept for the next push)
            log.debug("timer.wake_early", extra={"cid": cid})
        elif ref is not None and await self._needs_snapshot(state, [e for e, _ in events]):
            try:
                snapshot = await self._snapshot(cid, ref, prefetched)
            except CrmError as exc:
                log.warning("crm.snapshot_failed", extra={"cid": cid, "error": str(exc)})
        else:
            self._snapshot_refs.pop(cid, None)
        req = SaveRequest(state=None, processed=len(batch.events), refresh_ttl=batch.refresh_ttl)
        bot_before = state.run.bot if state.run else None
        counts: Counts | None = {} if self.analytics is not None else None
        visit = _visit(state, meta) if counts is not None else None
        first = not meta.get("last_at")  # no customer message before: the next is the first
        chat_queued = False
        first_unanswered: float | None = None
        woke = early
        todo = collections.deque(() if early else events)
        while todo:
            event, extra = todo.popleft()
            now = self.clock()
            if type(event) is ev.TimerFired:
                if is_wake(event.timer_id):  # the timers due now, each as its own event, in due order
                    woke = True
                    todo.extendleft(reversed(self._due_timers(pending, max(now, float(extra.get("due") or 0)))))
                    continue
                pending.pop(event.timer_id, None)  # fired directly (a test, an older version's entry)
            if isinstance(event, ev.InboundMessage):
                if self.chat is not None and ref is not None:
                    commands = await self.chat.commands(cid, ref.lead_id, ref.contact_id, event, first=first,
                                                        channel=state.channel, account=state.account,
                                                        snapshot=snapshot, at=now)
                    req.extra_commands += commands
                    chat_queued = chat_queued or bool(commands)
                first = False
                self.metrics.message_in(state.channel)
                req.add_log(inbound_entry(event, now, client_msg_id=extra.get("client_msg_id")))
                req.activity = now
                new_meta["last_at"] = f"{now:.3f}"
            elif isinstance(event, ev.TimerFired) and extra.get("due"):
                self.metrics.timer_late(max(0.0, now - float(extra["due"])))
            if isinstance(event, ev.HumanMessage):
                send_message = _effect_kinds()[0]
                msg = send_message(ref=f"h:{state.next_id('m')}", step="", text=event.text)
                entry = outbound_entry(msg, now, bot=None, role="human")
                entry["user"] = event.user
                req.add_log(entry)
                if not self.router.delivers_via_transcript(state.channel):
                    req.out.append(codec.pack({"ref": msg.ref, "message": entry, "attempts": 0, "human": True}))
                    req.outbox_account = state.account
                self.metrics.message_out(state.channel)
            if isinstance(event, ev.Relayed):
                queue_relayed(event, state, req, inline=self.router.delivers_via_transcript(state.channel))
                self.metrics.message_out(state.channel)
            if isinstance(event, ev.Takeover):
                req.add_log(system_entry(f"{event.user} took over the conversation", now, event="takeover",
                                         user=event.user))
            elif isinstance(event, ev.Release):
                req.add_log(marks.release_entry(event, state, now))
            elif isinstance(event, ev.InboundMessage) and state.chat_status != "unanswered":
                first_unanswered = now  # the customer's first message nobody has answered yet
            before = marks.run_mark(state.run)
            try:
                await self.flows.ensure_for(state, getattr(event, "greeting", None) or getattr(event, "bot", None))
                result = await self.driver.turn(state, event, datetime.fromtimestamp(now, UTC), snapshot)
            except Exception:  # a bug must not wedge the conversation: log it, skip the event
                self.metrics.step_errors.inc()
                log.exception("turn.crashed", extra={"cid": cid, "event": type(event).__name__})
                req.add_log(system_entry("internal error while handling an event", now, event="error"))
                continue
            if counts is not None:
                run = state.run
                visit = count_turn(counts, visit, (run.bot, run.version) if run else None, result.steps,
                                   result.state.run.status if result.state.run else None, now)
            state, snapshot = result.state, result.snapshot
            ended = marks.run_boundaries(before, state, req, now)
            self._collect(state, result.effects, req, now, pending)
            if ended is not None:
                req.add_log(ended)
        state.timers = pending
        self._rearm(cid, pending, armed, woke, req)
        for job in req.before_save:  # e.g. a message's other recipients (bot.runtime.relay)
            await job()
        blob = codec.encode_state(state)
        changed = blob != batch.state
        # An unchanged state kept in the hash is not written again (an early wake's save: no
        # ``HSET``); one in its own key is, as its ``SET`` refreshes that key's TTL.
        req.state = blob if changed or len(blob) > statefields.INLINE_MAX else None
        run = state.run
        held = statemeta.fields(state)
        new_meta.update(held)
        if pending or meta.get(WAKE_FIELD):  # the earliest timer, for the push of a wake (pushscript.py)
            new_meta[WAKE_FIELD] = repr(min(pending.values())) if pending else NO_TIMERS
        since = marks.waiting_since(state, meta, new_meta, first_unanswered)
        if since or meta.get("waiting_since"):  # a chat that never waited keeps no empty field (issue 14: bytes)
            new_meta["waiting_since"] = since
        if counts and self.analytics is not None:  # with the save, in its round trip
            self.analytics.add(req, counts, cluster=self.store.cluster)
            new_meta["step_at"] = f"{visit.at:.3f}" if visit is not None else ""
        if meta.get("failures"):  # a batch went through: the failures in a row start again
            new_meta["failures"] = "0"
        if req.activity is None and (bot_before != (run.bot if run else None) or req.log):
            req.activity = self.clock()
        if req.activity is not None:
            new_meta["activity"] = f"{req.activity:.3f}"  # ms, as last_at: 14 characters, not 18
        req.partition, req.left = convindex.plan_save(cid, meta, new_meta, activity=req.activity, logged=bool(req.log),
                                                      commands=req.extra_commands, state_changed=changed)
        if req.left and req.activity is None:  # moved without activity: to its new partition as it was
            req.activity = float(meta["activity"])
        # what changed; an absent field reads as "": an empty value is never stored anew (issue 14: bytes)
        req.meta = {name: value for name, value in new_meta.items() if meta.get(name, "") != value}
        statefields.tie(meta, new_meta, req.meta)
        req.drop = statemeta.unstored(cid, len(blob) <= statefields.INLINE_MAX, held, stored, req.meta)
        if batch.unsynced and req.meta and req.state is None:  # an older version's count: marked in the
            req.meta[statefields.COUNT] = batch.unsynced  # HSET sent anyway, never in one of its own
        if req.out and self.replies is not None:
            req.outbox_lease = self.replies.lease_for(req.outbox_account)
        result_ = await self.store.save(cid, batch.token, req)
        if result_.outbox is not None and self.replies is not None and req.outbox_account:
            self.replies.committed(req.outbox_account, cid, {**meta, **new_meta}, result_.outbox, result_.outbox_claim)
        if chat_queued and self.chat is not None and ref is not None:
            self.chat.written(ref.lead_id)
        if result_.status == -1:
            log.error("store.lock_lost", extra={"cid": cid})
        elif pending or not woke:
            _remember(self._states, cid, (blob, state), STATE_CACHE_MAX)
        return result_.status

    def _due_timers(self, pending: dict[str, float], until: float) -> list[tuple[ev.Event, dict[str, Any]]]:
        """The timers of ``pending`` due by ``until``, taken out of it (a timer fires once: its
        removal is saved with the turn it runs), as ``TimerFired`` events with their due times."""
        due = sorted((at, timer_id) for timer_id, at in pending.items() if at <= until)
        for _, timer_id in due:
            del pending[timer_id]
        self.metrics.timer_fired(len(due))
        return [(ev.TimerFired(timer_id), {"due": at}) for at, timer_id in due]

    @staticmethod
    def _rearm(cid: str, pending: dict[str, float], armed: float | None, woke: bool, req: SaveRequest) -> None:
        """The conversation's one timer entry, due no later than its earliest timer (``armed``:
        the earliest as the batch found it, so the entry is due then or before).

        Armed (``ZADD LT``: a write only ever moves it earlier) when the earliest due time is now
        earlier, when there was no timer, and after a wake (the claim took the entry out of the
        shard: armed again whatever the time, the worker's clock may run ahead of this one).
        Later or the same (a message moved a no-answer timer): nothing is written; an entry left
        early fires, its push (the metadata's ``w``, ``pushscript.py``) or else its turn finds
        nothing due, and it is armed at the earliest timer. Removed
        (``ZREM``) when no timer is left: one command now costs less than the early wake it
        would otherwise cause (a push and a save)."""
        due = min(pending.values(), default=None)
        if due is None:
            if armed is not None and not woke:
                req.timers_cancel.append(wake_member(cid))
        elif woke or armed is None or due < armed:
            req.wake = (wake_member(cid), due)

    async def _snapshot(self, cid: str, ref: CrmRef, prefetched: Prefetched | None) -> Mapping[str, Any]:
        """The CRM snapshot, from the reads sent with the push when they were of this lead."""
        prefetch = self._prefetch
        if prefetch is not None:
            _remember(self._snapshot_refs, cid, ref, SNAPSHOT_REFS_MAX)  # the next push reads it along
            if prefetched is not None and prefetched.ref == ref and prefetched.snapshot is not None:
                return await prefetch.snapshot_from(ref, prefetched.snapshot)
        return await self.crm.snapshot(ref)

    async def _needs_snapshot(self, state: ConversationState, events: list[ev.Event]) -> bool:
        """Whether any flow these events may run reads the CRM (one read per batch, or none)."""
        bots: set[tuple[str, int | None]] = set()
        run = state.run
        if run is not None:
            bots.add((run.bot, run.version))
            bots.update((f.bot, f.version) for f in run.callers)
        for event in events:
            for name in (getattr(event, "greeting", None), getattr(event, "bot", None)):
                if name:
                    bots.add((name, None))
        seen: set[str] = set()
        todo = list(bots)
        while todo:
            bot, version = todo.pop()
            if bot in seen and version is None:
                continue
            seen.add(bot)
            if version is None:
                await self.flows.ensure_for(None, bot)
            flow = self.flows.get(bot, version)
            if flow is None or flow.uses_crm:
                return True  # unknown: read to be safe
            todo.extend((callee, None) for callee in flow.called_bots if callee not in seen)
        return False

    async def _crm_ref(self, meta: Mapping[str, str], new_meta: dict[str, str], cid: str = "",
                       identity_replies: list[Any] | None = None) -> tuple[CrmRef | None, list[Any] | None]:
        """The conversation's CRM records, and the replies to their snapshot reads when they were
        created here just now (``PrefetchIdentity.identify_from``)."""
        if meta.get("lead_id") and meta.get("contact_id"):
            if identity_replies is not None and (prefetch := self._identity_prefetch()) is not None:
                prefetch.unused(identity_replies)  # e.g. the ids they took for new records
            return CrmRef(meta["contact_id"], meta["lead_id"], meta.get("company_id") or None), None
        identity = _identity(meta)
        if identity is None:
            return None, None
        created: list[Any] | None = None
        linked: list[CrmRef] = []

        def link(new: CrmRef) -> list[tuple[Any, ...]]:  # written with the new lead: its events find cid
            linked.append(new)
            return [("HSET", lead_conversation_key(new.lead_id), new.lead_id, cid)] if cid else []

        try:
            prefetch = self._identity_prefetch()
            if identity_replies is not None and prefetch is not None:
                ref, created = await prefetch.identify_from(identity, identity_replies, link=link)
            else:
                ref = await self.crm.identify(identity)
        except CrmTemporary as exc:
            # Without its lead this turn's CRM commands would be lost: leave the events queued
            # (the lock expires and recovery tries again) rather than run them now.
            log.warning("crm.identify_unavailable", extra={"cid": cid, "error": str(exc)})
            raise IdentityPending(str(exc)) from exc
        except CrmError as exc:
            log.warning("crm.identify_failed", extra={"error": str(exc)})
            return None, None
        new_meta.update({"contact_id": ref.contact_id, "lead_id": ref.lead_id, "company_id": ref.company_id or ""})
        if cid and ref not in linked:  # CRM webhooks and /api/events find the conversation of a lead here
            await self.store.redis.hset(lead_conversation_key(ref.lead_id), ref.lead_id, cid)
        return ref, created

    def _collect(self, state: ConversationState, effects: list[fx.Effect], req: SaveRequest, now: float,
                 pending: dict[str, float]) -> None:
        SendMessage, SetTimer, CancelTimer, InternalMessage, SplitCount, Trace = _effect_kinds()
        bot = state.run.bot if state.run else None
        inline = self.router.delivers_via_transcript(state.channel)
        for e in effects:
            if isinstance(e, SendMessage):
                if e.channels is not None and state.channel not in e.channels:
                    continue
                self.metrics.message_out(state.channel)
                entry = outbound_entry(e, now, bot=bot)
                req.add_log(entry)
                if not inline:
                    req.out.append(codec.pack({"ref": e.ref, "message": entry, "attempts": 0}))
                    req.outbox_account = state.account
                if e.recipients != "chat" and self.recipients is not None:  # the lead's other contacts
                    req.before_save.append(self.recipients.relay(state, e.recipients, entry, req, req.log[-1],
                                                                 None if inline else req.out[-1]))
            elif isinstance(e, SetTimer):
                pending[e.timer_id] = e.at  # armed by ``_rearm`` once the batch is done
            elif isinstance(e, CancelTimer):
                if pending.pop(e.timer_id, None) is None:  # an older version's timer: an entry of its own
                    req.timers_cancel.append(e.timer_id)
            elif isinstance(e, InternalMessage):
                req.add_log(internal_entry(e, now))
            elif isinstance(e, SplitCount):  # counted by the save script, with the state that records it
                req.counters.append((split_key(e.bot, e.step), count_field(e.kind, e.generation, e.path), 1))
            elif isinstance(e, Trace):
                level = _TRACE_LEVELS.get(e.level, logging.ERROR)
                if log.isEnabledFor(level):  # (a run's end, at INFO: its fields built only to be logged)
                    log.log(level, e.event, extra={"cid": state.id, **{f"d_{k}": v for k, v in e.data.items()}})
                if e.level == "error":
                    self.metrics.step_errors.inc()
                    req.add_log(system_entry(f"{e.event}: {e.data.get('error', '')}", now, event=e.event))


def _visit(state: ConversationState, meta: Mapping[str, str]) -> Visit | None:
    """The step the run is at and since when (``step_at``, written with the save that entered it)."""
    run = state.run
    at = meta.get("step_at")
    if run is None or run.step is None or not at or not (run.status == "running" or run.status == "waiting"):
        return None
    try:
        return Visit(run.bot, run.version, run.step, float(at))
    except ValueError:  # not written by a save: the visit's end is not counted
        return None


def _early_wakes(events: list[tuple[ev.Event, dict[str, Any]]], pending: Mapping[str, float], now: float) -> bool:
    """Whether the batch is only wakes that find no timer due (by the later of ``now`` and their
    due time, as ``_due_timers`` looks): an entry left early (``_rearm``) that its push did not
    settle (no ``w`` in the metadata yet, ``pushscript.py``). Such a batch runs nothing and writes
    no transcript, count or activity: it only arms the entry again (and writes ``w``)."""
    until = now
    for event, extra in events:
        if type(event) is not ev.TimerFired or not is_wake(event.timer_id):
            return False
        until = max(until, float(extra.get("due") or 0))
    return not any(at <= until for at in pending.values())


def _reads_back(event: ev.Event) -> bool:
    """Whether ``event`` reads back from its payload as it is (strings, a tuple of attachments):
    then the batch that holds the payload just pushed uses the event itself (``Prefetched.own``)."""
    if type(event) is ev.InboundMessage:
        return type(event.attachments) is tuple
    return type(event) is ev.TimerFired


def _identity(meta: Mapping[str, str] | None) -> ChannelIdentity | None:
    """The channel identity a conversation's metadata names (None: none, e.g. a test's event)."""
    if not meta or not meta.get("external_id"):
        return None
    return ChannelIdentity(meta.get("channel", ""), meta.get("account", ""), meta["external_id"],
                           meta.get("name") or None, meta.get("phone") or None, meta.get("email") or None)


@functools.cache
def _effect_kinds() -> tuple[type[fx.SendMessage], type[fx.SetTimer], type[fx.CancelTimer],
                             type[fx.InternalMessage], type[fx.SplitCount], type[fx.Trace]]:
    """The effects ``_collect`` sorts, imported with their first turn: the interpreter, which makes
    them, is not loaded at start (issue 14). Cached: an import per turn would cost ~6 k instructions."""
    from ..engine import effects as fx

    return fx.SendMessage, fx.SetTimer, fx.CancelTimer, fx.InternalMessage, fx.SplitCount, fx.Trace
