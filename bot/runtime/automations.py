"""The rule engine in the lead loop: which document a lead follows, and carrying out its effects.

``EngineReactor`` adapts the pure ``bot.automations.engine.react`` to the lead loop's
``Reactor``: it picks the compiled document of the lead's pipeline (the active version in the
versioned store; compiled documents are cached per ``(id, version)`` in the process, and so are
the active versions, tagged with the store's generation token: each batch checks that token,
sent along with the lead queue's push or acquire, and reads the versions again only when it
changed — so a new version is seen by the first batch that starts after it is stored, in every
process, as when the versions were read for each batch), converts ``LeadState`` to and from the
queue's state slot, and sorts the effects: timers go to the queue's save, ``Record`` to the
lead's history and the per-document counters hash (incremented by the save script itself, so
a count is written with its batch or not at all), the work to ``AutomationEffects`` (whose
outcomes are counted in the same script as their done key).

A new active version reaches a lead with its next event or timer: the reactor sees that the
state was last handled by another version and first passes ``AutomationsChanged(version)``,
which cancels the pending work of rules that are gone. A timer of a removed rule that falls due
first is exactly such an event, so nothing stale ever acts.

Effects run before the batch's save and are redone when a crash loses it, so each is done once
per *key* (the event or timer id, the effect's place in the reaction and its rule): a done key
is kept 7 days in ``sb:automations:done:{lead:<id>}`` with what it left in the history. A
reaction's done keys are read at once with the lead's record (its main contact: whose snapshot
the effects get), and an effect's CRM command returns the snapshot the next effect uses.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis

from crm_bridge import CRM_COMMANDS, CrmBackend, CrmRef, records
from crm_bridge.codec import unpack_record
from crm_bridge.directory import CrmDirectory

from ..automations.events import ApplyRule, LeadEvent
from ..automations.state import LeadState
from ..engine import events as ev
from ..engine.analytics import DAY
from ..engine.state import ConversationState
from ..errors import AutomationsInvalid, CrmTemporary, SalesbotError
from ..store import codec, replies
from ..store.analytics import RETENTION_DAYS, day_text, ttl_commands
from ..store.clusterclient import is_cluster
from ..store.resp import RespClient
from ..store.scripts import Lua, send_commands
from ..store.versions import DocumentNotFound, VersionedDocuments
from .leads import Reaction, lead_cid
from .outbound import OutboundError, OutboundService, Unreachable
from .processes import Processes
from .requests import ServerRequests

if TYPE_CHECKING:
    from ..automations import effects as fx
    from ..automations.compiled import CompiledAutomations

# The rule engine, its document models and its compiler load with the first document, not at
# start: a server without automations never needs them (issue 14: startup).

log = logging.getLogger("salesbot.automations")
#: How long a done effect is remembered (as long as an event id dedupes).
DONE_TTL = 7 * 86400


def counts_key(doc_id: str) -> str:
    """Per automation document: ``<rule or trigger id>:<outcome>`` -> how many times."""
    return f"sb:automations:{{{doc_id}}}:counts"


def day_counts_key(doc_id: str, day: int) -> str:
    """The same counters for one UTC day (``day``: days since 1970-01-01), for analytics'
    date ranges (docs/analytics.md); kept ``RETENTION_DAYS``."""
    return f"sb:automations:{{{doc_id}}}:counts:{day_text(day)}"


class _DayTtl:
    """``EXPIRE`` commands for day counter keys, once per process and key (not with every count)."""

    def __init__(self) -> None:
        self._set: set[str] = set()

    def commands(self, keys: Iterable[str]) -> list[tuple[Any, ...]]:
        out: list[tuple[Any, ...]] = []
        for key in keys:
            if key not in self._set:
                if len(self._set) >= 10_000:
                    self._set.clear()
                self._set.add(key)
                out += ttl_commands(key, RETENTION_DAYS * DAY)
        return out


def done_key(lead_id: str) -> str:
    return f"sb:automations:done:{{{lead_cid(lead_id)}}}"


@dataclass(frozen=True, slots=True)
class Keyed:
    """An effect with its idempotency key and the document it came from."""

    key: str
    doc: str
    effect: fx.RunActions | fx.StartBot | fx.StartProcess | fx.MoveStage | fx.AddScore


class EngineReactor:
    """``Reactor`` over the rule engine (see the module docstring)."""

    def __init__(self, documents: VersionedDocuments, pipelines: Mapping[str, Sequence[str]]) -> None:
        self.documents = documents
        self._compiling: dict[tuple[str, int], asyncio.Future[CompiledAutomations | None]] = {}
        self.pipelines = pipelines  # name -> stages in order (what the documents were checked against)
        self._compiled: dict[tuple[str, int], CompiledAutomations] = {}
        self._by_pipeline: dict[str, CompiledAutomations] = {}
        self._by_id: dict[str, CompiledAutomations] = {}
        #: The store's generation token and the active ``(id, version)``s read with it.
        self._generation: bytes | None = None
        self._actives: list[tuple[str, int]] = []
        self._day_ttl = _DayTtl()
        #: ``(generation key, token)`` when the last ``prepare`` found no active document under that
        #: token (None: some, or not known yet): a new lead's events may then be recorded without a
        #: queue, as long as the token is unchanged (``LeadService.commands``, ``bot/store/leadborn.py``).
        self.quiet: tuple[str, bytes] | None = None

    def prepare_reads(self) -> list[tuple[Any, ...]]:
        """What ``prepare`` needs read: sent along with the lead queue's push or acquire."""
        return [("GET", self.documents.generation_key)]

    async def prepare(self, replies: Sequence[Any] | None = None) -> bool:
        """The active documents for a batch, compiling those not cached yet; False when there is
        none. ``replies``: to ``prepare_reads``, when they came along with the batch (else the
        token is read here: one small read)."""
        if replies:
            generation = replies[0]
        else:
            generation = await self.documents.redis.get(self.documents.generation_key)
        if generation is None or generation != self._generation:
            self._generation, self._actives = await self.documents.actives()
            # versions no longer active are dropped (a long-running process sees many PUTs); a
            # batch still using one keeps its own reference, and a rollback compiles it again
            for key in self._compiled.keys() - set(self._actives):
                del self._compiled[key]
        by_pipeline: dict[str, CompiledAutomations] = {}
        for doc_id, version in self._actives:
            compiled = self._compiled.get((doc_id, version))
            if compiled is None:
                compiled = await self._compile(doc_id, version)
                if compiled is None:
                    continue
            by_pipeline[compiled.pipeline] = compiled
        self._by_pipeline = by_pipeline
        self._by_id = {c.id: c for c in by_pipeline.values()}
        self.quiet = None if by_pipeline or self._generation is None else (
            self.documents.generation_key, self._generation)
        return bool(by_pipeline)

    async def _compile(self, doc_id: str, version: int) -> CompiledAutomations | None:
        """Compile a version once however many batches need it at the same moment, off the event
        loop: a document of 1,000 rules takes a second or two, and each batch compiling it in the
        loop stalled every conversation and Redis reply meanwhile (bench/automations.py)."""
        key = (doc_id, version)
        task = self._compiling.get(key)
        if task is None:
            task = asyncio.ensure_future(self._compile_once(doc_id, version))
            self._compiling[key] = task
            task.add_done_callback(lambda _: self._compiling.pop(key, None))
        return await asyncio.shield(task)  # a cancelled batch does not cancel the others' compilation

    async def _compile_once(self, doc_id: str, version: int) -> CompiledAutomations | None:
        try:
            _, doc = await self.documents.document(doc_id, version)
            compiled = await asyncio.to_thread(self._build, doc, version)
        except (DocumentNotFound, AutomationsInvalid) as exc:
            log.error("automations.compile_failed", extra={"automation": doc_id, "version": version,
                                                           "error": str(exc)})
            return None
        if compiled.stages:  # before the task is forgotten: no second compilation (not cached without
            self._compiled[(doc_id, version)] = compiled  # the stage order: a CRM catalogue not loaded yet)
        return compiled

    def _build(self, doc: Any, version: int) -> CompiledAutomations:
        # checked against the CRM's stages when it was stored; a stage renamed in the CRM since
        # (Kommo's are edited at any time) only stops the rules that name it, not the document
        # (and with the scalars it had then: "yes" was read as true before such values were refused)
        from ..automations.compiled import compile_automations
        from ..automations.validate import AutomationContext, parse_automations
        from ..builder.model_base import lenient_scalars

        with lenient_scalars():
            model = parse_automations(doc, AutomationContext({}, bots=None))
        return compile_automations(model, self.pipelines.get(model.pipeline, ()), version=version)

    def document_for(self, pipeline: str | None) -> CompiledAutomations | None:
        return self._by_pipeline.get(pipeline or "")

    def react(self, lead_id: str, state: Mapping[str, Any] | None, event: LeadEvent | ev.TimerFired | ApplyRule,
              snapshot: Mapping[str, Any], now: datetime) -> Reaction:
        lead_state = LeadState.from_dict(dict(state)) if state else LeadState.for_lead(lead_id)
        seen_version = int(state.get("av", 0)) if state else 0
        # A lead that left for a pipeline without a document still goes through the one it
        # followed: that document sees it leave (its stage's delays are cancelled, not kept for a
        # return) and ignores the rest. A lead no document ever had is ignored here.
        compiled = (self.document_for(_pipeline_of(event, snapshot, lead_state))
                    or self._by_id.get(lead_state.automations or ""))
        if compiled is None:
            return Reaction(state=dict(state) if state else lead_state.to_dict())
        from ..automations.engine import react  # loaded with the first document (see _build)

        effects: list[fx.Effect] = []
        if lead_state.automations == compiled.id and seen_version and seen_version != compiled.version:
            from ..automations.effects import AutomationsChanged  # the engine loaded it

            changed = react(compiled, lead_state, AutomationsChanged(compiled.version), snapshot, now)
            lead_state, effects = changed.state, list(changed.effects)
        result = react(compiled, lead_state, event, snapshot, now)
        effects += result.effects
        if isinstance(event, LeadEvent):
            key = event.id
        elif isinstance(event, ApplyRule):
            key = f"apply:{event.job}:{event.rule_id}"
        else:
            key = f"timer:{event.timer_id}"
        day = int(now.timestamp() // DAY)
        reaction = _sorted(compiled, key, {**result.state.to_dict(), "av": compiled.version}, effects, day)
        if reaction.counters:  # the day's counters get their TTL (once per process and day)
            reaction = replace(reaction, commands=tuple(self._day_ttl.commands([day_counts_key(compiled.id, day)])))
        return reaction


def _pipeline_of(event: LeadEvent | ev.TimerFired | ApplyRule, snapshot: Mapping[str, Any],
                 state: LeadState) -> str | None:
    """The pipeline the lead is in: the one a stage change names, else the snapshot's, else the last seen."""
    if isinstance(event, LeadEvent) and event.type == "lead.stage_changed":
        to = event.data.get("to")
        if isinstance(to, Mapping) and to.get("pipeline"):
            return str(to["pipeline"])
    lead = snapshot.get("lead")
    if isinstance(lead, Mapping) and lead.get("pipeline"):
        return str(lead["pipeline"])
    return state.pipeline


def _sorted(compiled: CompiledAutomations, key: str, state: dict[str, Any],
            effects: Sequence[fx.Effect], day: int) -> Reaction:
    k = _kinds()
    timers_set: list[tuple[str, float]] = []
    timers_cancel: list[str] = []
    history: list[Mapping[str, Any]] = []
    counters: list[tuple[str, str, int]] = []
    work: list[object] = []
    for n, e in enumerate(effects):
        if isinstance(e, k.SetTimer):
            timers_set.append((e.timer_id, e.at))
        elif isinstance(e, k.CancelTimer):
            timers_cancel.append(e.timer_id)
        elif isinstance(e, k.Record):
            history.append({"automation": compiled.id, "version": compiled.version, "rule": e.rule,
                            "outcome": e.outcome, "detail": e.detail})
            if e.outcome == "loop":  # a chain of rules stopped at its depth: the operator must see it
                log.warning("automation.loop", extra={"automation": compiled.id, "rule": e.rule, "detail": e.detail})
            counters.append((counts_key(compiled.id), f"{e.rule}:{e.outcome}", 1))
            counters.append((day_counts_key(compiled.id, day), f"{e.rule}:{e.outcome}", 1))
        else:
            work.append(Keyed(f"{key}:{n}:{_rule_of(e, k)}", compiled.id, e))
    return Reaction(state=state, timers_set=tuple(timers_set), timers_cancel=tuple(timers_cancel),
                    history=tuple(history), effects=tuple(work), counters=tuple(counters))


class _Kinds:
    """The effect classes this module handles, imported once: with the engine, which makes them,
    not at start (issue 14); an import in each function would cost ~6 k instructions a call."""

    def __init__(self) -> None:
        from ..automations import effects as fx
        from ..engine.effects import Request

        self.SetTimer, self.CancelTimer, self.Record = fx.SetTimer, fx.CancelTimer, fx.Record
        self.MoveStage, self.AddScore = fx.MoveStage, fx.AddScore
        self.RunActions, self.StartBot = fx.RunActions, fx.StartBot
        self.Request = Request


_kinds = functools.cache(_Kinds)


def _rule_of(e: fx.Effect, k: _Kinds) -> str:
    if isinstance(e, k.MoveStage):
        return e.trigger
    if isinstance(e, k.AddScore):
        return f"score:{e.reason}"
    return getattr(e, "rule", "")


#: An effect done: its done key (with what it left in the history) and its outcomes' counts, at once.
_DONE = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
for i = 4, #ARGV do redis.call('HINCRBY', KEYS[2], ARGV[i], 1); redis.call('HINCRBY', KEYS[3], ARGV[i], 1) end
return 1
"""


class AutomationEffects:
    """``EffectRunner``: the work of a reaction, each effect once per key (module docstring).
    Its own reads and writes go through ``fast``, the lean hot-path connection of the lead
    queues (``bot.store.resp``): redis-py's per-call CPU was a tenth of an event's."""

    def __init__(self, *, redis: Redis, fast: RespClient, crm: CrmBackend, requests: ServerRequests,
                 outbound: OutboundService | None, directory: CrmDirectory | None) -> None:
        self.redis = redis
        self.fast = fast
        self._done = Lua(redis, _DONE)
        self.cluster = is_cluster(redis)
        self.directory = directory
        self.crm = crm
        self.requests = requests
        self.outbound = outbound
        #: Where ``start_process`` starts processes (``bot.runtime.processes``); set by the services.
        self.processes: Processes | None = None
        self._day_ttl = _DayTtl()
        self.clock = time.time  # a seam for tests: which day's counters an outcome goes to

    async def run(self, lead_id: str, effects: Sequence[object]) -> list[Mapping[str, Any]]:
        """Carry out the effects in order; returns what they add to the lead's history."""
        keyed = [item for item in effects if isinstance(item, Keyed)]
        if not keyed:
            return []
        key = done_key(lead_id)
        done, first_ref = await self._done_and_ref(lead_id, key, keyed)
        ref: CrmRef | None = first_ref
        history: list[Mapping[str, Any]] = []
        snapshot: dict[str, Any] | None = None
        for item, was_done in zip(keyed, done, strict=True):
            if was_done is not None:  # a redone batch: the effect happened, its history entry comes back
                history += codec.unpack(replies.raw(was_done)) or []
                continue
            if snapshot is None:  # the first effect, or one after an effect whose result had no snapshot
                ref = ref or (await self._done_and_ref(lead_id, key, ()))[1]  # (it may have added a contact)
                snapshot = await self.crm.snapshot(ref)
            entries, snapshot = await self._run(lead_id, item, snapshot)
            ref = ref if snapshot is not None else None
            counted = [f"{entry['rule']}:{entry['outcome']}" for entry in entries]
            day = day_counts_key(item.doc, int(self.clock() // DAY))
            ttl = self._day_ttl.commands([day]) if counted else []
            if self.cluster:  # the counters' hash is in another slot: counted beside the script
                await send_commands(self.fast, [
                    self._done.command([key], [item.key, codec.pack(entries), DONE_TTL]),
                    *(("HINCRBY", hash_, name, 1) for name in counted for hash_ in (counts_key(item.doc), day)),
                    *ttl], [self._done])
            else:
                await send_commands(self.fast, [self._done.command(
                    [key, counts_key(item.doc), day], [item.key, codec.pack(entries), DONE_TTL, *counted]), *ttl],
                    [self._done])
            history += entries
        return history

    async def _done_and_ref(self, lead_id: str, key: str, keyed: Sequence[Keyed]) -> tuple[list[Any], CrmRef]:
        """Which effects are done already (a redone batch) and the lead with its main contact (the
        lead's first, as the embedded CRM's record says), in one round trip."""
        commands: list[tuple[Any, ...]] = [("HMGET", key, *(item.key for item in keyed))] if keyed else []
        if self.directory is not None:
            commands.append(records.read("lead", lead_id))
        found = await send_commands(self.fast, commands, []) if commands else []
        done = list(found.pop(0)) if keyed else []
        lead = unpack_record(replies.raw(found[0]), lead_id) if found and found[0] else {}
        contacts = lead.get("contacts") or []
        return done, CrmRef(str(contacts[0]) if contacts else "", lead_id)

    async def _run(self, lead_id: str, item: Keyed,
                   snapshot: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """One effect, given the lead's snapshot; returns its history entries and the snapshot the
        next effect may use (the CRM command's own, which has its change; None: read it again)."""
        k = _kinds()
        e = item.effect
        contact_id = str((snapshot.get("contact") or {}).get("id") or "")
        state = ConversationState(lead_cid(lead_id), channel="automation", account="",
                                  crm={"contact_id": contact_id, "lead_id": lead_id})
        if isinstance(e, k.RunActions):
            out = []
            after: dict[str, Any] | None = snapshot
            for i, action in enumerate(e.actions):
                request = k.Request(f"{item.key}:{i}", "action", {**action, "depth": e.depth})
                result = await self.requests(request, state, snapshot)
                if not result.ok:
                    log.warning("automations.action_failed", extra={"lead": lead_id, "rule": e.rule,
                                                                    "do": action.get("do"), "error": result.error})
                    out.append(_entry(e.rule, "failed", f"{action.get('do')}: {result.error}"))
                elif action.get("do") in CRM_COMMANDS:  # changed the CRM: its snapshot, if it gave one
                    after = result.snapshot if after is not None else None
            return out, after
        if isinstance(e, k.MoveStage):
            command = {"do": "change_stage", "stage": e.stage, "depth": e.depth}
            if e.pipeline:
                command["pipeline"] = e.pipeline
            result = await self.requests(k.Request(item.key, "action", command), state, snapshot)
            return ([], result.snapshot) if result.ok else ([_entry(e.trigger, "failed",
                                                                     f"change_stage: {result.error}")], None)
        if isinstance(e, k.AddScore):
            if e.once and contact_id and not await self._first_once(contact_id, f"{lead_id}:{item.key}", e):
                return [], snapshot  # another lead of the contact has decayed the score in this period
            score = _number((snapshot.get("contact") or {}).get("score"))
            new = max(0, score + e.delta)
            if new == score:
                return [], snapshot
            command = {"do": "set_field", "entity": "contact", "field": "score", "value": new, "depth": e.depth}
            result = await self.requests(k.Request(item.key, "action", command), state, snapshot)
            return ([], result.snapshot) if result.ok else ([_entry(f"score:{e.reason}", "failed",
                                                                     str(result.error))], None)
        if isinstance(e, k.StartBot):
            return await self._start_bot(lead_id, contact_id, item.key, e), None
        return await self._start_process(lead_id, contact_id, item.key, e), snapshot

    async def _start_process(self, lead_id: str, contact_id: str, key: str,
                             e: fx.StartProcess) -> list[dict[str, Any]]:
        if self.processes is None or not contact_id:
            return [_entry(e.rule, "process.not_started", "the lead has no contact")]
        try:
            contact = await self.processes.contact(contact_id=contact_id, lead_id=lead_id)
            started = await self.processes.start(e.process, contact, variables=dict(e.variables),
                                                 key=f"auto:{lead_id}:{key}")
        except CrmTemporary:
            raise  # the CRM is away for now: the batch is redone later
        except SalesbotError as exc:
            return [_entry(e.rule, "process.not_started", str(exc))]
        if started.status == "already_running":
            return [_entry(e.rule, "process.already_running", f"{e.process} for contact {contact_id}")]
        return [_entry(e.rule, "process_started", f"{e.process} in {started.conversation}")]

    async def _first_once(self, contact_id: str, mine: str, e: fx.AddScore) -> bool:
        """Whether this effect is the first under its ``once`` key for the contact (an atomic SET NX
        of ``sb:automations:once:{contact:<id>}:<once>``), or is that first one redone after a crash."""
        key = f"sb:automations:once:{{contact:{contact_id}}}:{e.once}"
        if await self.redis.set(key, mine, nx=True, ex=max(e.keep, 3600)):
            return True
        owner = await self.redis.get(key)
        return (owner.decode() if isinstance(owner, bytes) else owner) == mine

    async def _start_bot(self, lead_id: str, contact_id: str, key: str, e: fx.StartBot) -> list[dict[str, Any]]:
        if self.outbound is None or not contact_id:
            return _unreachable(e.rule, lead_id, "no contact the bot can write to")
        try:
            contact = await self.outbound.find_contact(contact_id=contact_id, lead_id=lead_id)
            started = await self.outbound.start(e.bot, e.channels or ("last",), contact,
                                                variables=dict(e.variables), idempotency_key=f"auto:{lead_id}:{key}")
        except CrmTemporary:
            raise  # the CRM is away for now (Kommo): the batch is redone later, not recorded as unreachable
        except (OutboundError, SalesbotError) as exc:
            return _unreachable(e.rule, lead_id, str(exc))
        if isinstance(started, Unreachable):  # (logged by the outbound service, with the channels tried)
            return [_entry(e.rule, "outbound.unreachable", started.reason)]
        return [_entry(e.rule, "bot_started", f"{e.bot} in {started.conversation}")]


def _entry(rule: str, outcome: str, detail: str) -> dict[str, Any]:
    return {"rule": rule, "outcome": outcome, "detail": detail}


def _unreachable(rule: str, lead_id: str, why: str) -> list[dict[str, Any]]:
    """A rule's bot that could not be started: in the lead's history, and logged (spec: "visible
    in jobs and logs")."""
    log.warning("outbound.unreachable", extra={"rule": rule, "lead": lead_id, "reason": why})
    return [_entry(rule, "outbound.unreachable", why)]


def _number(value: Any) -> int:
    try:
        return max(0, int(float(value)))
    except (TypeError, ValueError):
        return 0
