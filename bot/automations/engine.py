"""The rule engine: a pure function ``(automations, lead state, event, snapshot, now) -> Reaction``.

It does no I/O. The shell (``bot.runtime``) loads the lead's state and CRM snapshot, calls
``react`` once per event of the lead's queue, carries out the effects and saves the new state.

Where the lead is: a ``lead.stage_changed`` event's ``to`` (and ``lead.created``'s ``stage``
when given) — the position the event reports — otherwise the snapshot's ``lead.pipeline`` /
``lead.stage``, otherwise the state's last position. When it differs from the state's, the
lead has left its stage: that stage's pending delays, activity waits, ``idle`` and
``field_time`` timers are cancelled, and the new stage's timers are set.

``idle`` rules share one lazy timer per lead: an event only notes its time, and the timer,
when it fires, acts the rules whose quiet time has passed since the last event and sets
itself again for the next. A busy lead costs no timer work per event.

A rule runs: it *fires* when its event matches; then it waits ``delay`` (a timer; it acts
only if the lead is still in the stage), then its activity time (a timer at the next opening),
then ``if`` is checked over the context of that moment, and it *acts*: one effect for the shell.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date, datetime, time
from typing import Any, NamedTuple

from ..builder.compiled import CAction, CPredicate
from ..builder.templates import Template, TemplateFailed, evaluate_value
from ..engine.events import TimerFired
from ..engine.predicates import as_number, holds, lookup
from ..engine.state import plain
from ..engine.steps.actions import task_due, task_due_window
from . import effects as fx
from .compiled import CActions, CompiledAutomations, CRule, CStartBot, CStartProcess
from .events import MAX_DEPTH, LeadEvent
from .state import STAGE_KINDS, LeadState, Pending, PendingKind

__all__ = ["Reaction", "ShellEvent", "react"]

ShellEvent = LeadEvent | TimerFired | fx.AutomationsChanged | fx.ApplyRule

#: The rule kind each lead event type runs (``moved_in`` only for a real move).
_KIND = {
    "lead.created": "created", "lead.stage_changed": "moved_in", "lead.responsible_changed": "responsible_changed",
    "lead.tag_added": "tag_added", "lead.field_changed": "field_changed",
    "chat.first_message": "chat.first_message", "chat.message": "chat.message",
}
#: The contact's score as a changed field names it (``lead.field_changed``'s ``field``).
SCORE_FIELD = "contact.score"
#: The rule name of the lead's idle timer (one for all ``idle`` rules of its stage).
IDLE = "idle:"
#: Actions that only mean something inside a conversation (the validator refuses them in rules).
_CONVERSATION_ONLY = frozenset({"set_variable", "set_chat_status", "end_process"})


class Reaction(NamedTuple):
    """The lead's new state and what the shell must do, in order."""

    state: LeadState
    effects: tuple[fx.Effect, ...]


class _Origin(NamedTuple):
    """The event a rule acts for (``event`` in its templates); for a timer, the one that set it."""

    id: str
    type: str
    at: float
    data: Mapping[str, Any]
    depth: int


def react(
    automations: CompiledAutomations,
    state: LeadState,
    event: ShellEvent,
    snapshot: Mapping[str, Any] | None,
    now: datetime,
) -> Reaction:
    """Apply one event to one lead. ``state`` is not modified; a new one is returned."""
    handler = _HANDLERS.get(type(event))
    if handler is None:
        raise TypeError(f"not an automation event: {event!r}")
    r = _React(automations, state.clone(), snapshot or {}, now)
    r.adopt()
    handler(r, event)
    return Reaction(r.state, tuple(r.effects))


def _stage_of(value: Any) -> tuple[str | None, str | None]:
    """``{"pipeline", "stage"}`` (or a bare stage name) as a (pipeline, stage) pair."""
    if isinstance(value, Mapping):
        pipeline, stage = value.get("pipeline"), value.get("stage")
        return (None if pipeline is None else str(pipeline)), (None if stage is None else str(stage))
    if isinstance(value, (str, int)) and value != "":
        return None, str(value)
    return None, None


def _field_name(value: Any) -> str:
    """A ``lead.field_changed`` event's ``field`` as rules write it (a bare name is a lead field)."""
    name = str(value or "")
    return name if name.startswith(("lead.", "contact.", "company.")) else f"lead.fields.{name}"


class _React:
    """One ``react`` call: the changed state, the effects so far, and the handlers."""

    __slots__ = ("a", "contexts", "effects", "epoch", "now", "snapshot", "state")

    def __init__(self, a: CompiledAutomations, state: LeadState, snapshot: Mapping[str, Any],
                 now: datetime) -> None:
        self.a = a
        self.state = state
        self.snapshot = snapshot
        self.now = now
        self.epoch = now.timestamp()
        self.effects: list[fx.Effect] = []
        self.contexts: dict[str, dict[str, Any]] = {}

    def adopt(self) -> None:
        """The lead's state follows the document of the pipeline it is in: when the shell passes
        another document (the lead moved to another pipeline), the old one's timers are dropped."""
        st = self.state
        if st.automations != self.a.id:
            if st.automations is not None:
                for timer_id in list(st.pending):
                    self.cancel(timer_id)
            st.automations = self.a.id

    # ------------------------------------------------------------------ where the lead is
    def lead(self) -> Mapping[str, Any]:
        lead = self.snapshot.get("lead")
        return lead if isinstance(lead, Mapping) else {}

    def position(self) -> tuple[str | None, str | None]:
        """The snapshot's pipeline and stage, else the last ones seen."""
        pipeline, stage = _stage_of(self.lead())
        if stage is None:
            return self.state.pipeline, self.state.stage
        return pipeline or self.state.pipeline, stage

    def event_position(self, e: LeadEvent) -> tuple[str | None, str | None]:
        if e.type in ("lead.stage_changed", "lead.created"):
            pipeline, stage = _stage_of(e.data.get("to") if e.type == "lead.stage_changed" else e.data)
            if stage is not None:
                return pipeline or self.position()[0], stage
        return self.position()

    def observe(self, pipeline: str | None, stage: str | None, at: float) -> None:
        """Note where the lead is; leaving a stage cancels its timers, entering one sets them."""
        st = self.state
        if (pipeline, stage) == (st.pipeline, st.stage):
            return
        for timer_id, p in list(st.pending.items()):
            if p.kind in STAGE_KINDS:
                self.cancel(timer_id)
                if p.kind in ("delay", "window"):
                    self.record(p.rule, "cancelled", f"the lead left {p.stage}")
        st.pipeline, st.stage, st.since = pipeline, stage, at
        if pipeline == self.a.pipeline and stage is not None:
            self.set_stage_timers(stage)

    def in_stage(self, stage: str) -> bool:
        return self.state.pipeline == self.a.pipeline and self.state.stage == stage

    # ------------------------------------------------------------------ effects and timers
    def record(self, rule: str, outcome: fx.Outcome, detail: str = "") -> None:
        self.effects.append(fx.Record(rule, outcome, detail))

    def set_pending(self, rule: str, kind: PendingKind, stage: str, at: float, origin: _Origin | None,
                    data: dict[str, Any] | None = None) -> None:
        timer_id = self.state.next_timer_id()
        if origin is None:
            entry = Pending(rule, kind, stage, at, event_data=data or {}, version=self.a.version)
        else:
            entry = Pending(rule, kind, stage, at, origin.id, origin.type, plain(dict(origin.data)), origin.depth,
                            self.a.version)
        self.state.pending[timer_id] = entry
        self.effects.append(fx.SetTimer(timer_id, at))

    def cancel(self, timer_id: str) -> None:
        if self.state.pending.pop(timer_id, None) is not None:
            self.effects.append(fx.CancelTimer(timer_id))

    def find(self, rule: str, kind: str, event_id: str | None = None) -> str | None:
        """The timer id of a pending entry of ``rule`` and ``kind`` (for ``event_id`` if given)."""
        for timer_id, p in self.state.pending.items():
            if p.rule == rule and p.kind == kind and (event_id is None or p.event_id == event_id):
                return timer_id
        return None

    def set_stage_timers(self, stage: str) -> None:
        """The timers a lead in ``stage`` waits for: each ``field_time`` rule's, and the idle timer."""
        for rule in self.a.stage_rules(stage, "field_time"):
            self.schedule_field_time(rule, self.field_time_at(rule))
        base = self.idle_base()
        self.arm_idle(stage, base, base)

    # ------------------------------------------------------------------ idle
    def idle_base(self) -> float:
        """Since when the lead has been quiet in its stage: its last event there, or its arrival."""
        times = [x for x in (self.state.last_event_at, self.state.since) if x is not None]
        return max(times) if times else self.epoch

    def arm_idle(self, stage: str, base: float, done: float, *, replace: bool = False) -> None:
        """Set the idle timer for the first ``idle`` rule due after ``done`` (quiet since ``base``).

        Lazy: a timer that falls due no later than needed is kept (it sets itself again when it
        fires), so events in a busy stage change no timer.
        """
        due = [base + (r.after or 0) for r in self.a.stage_rules(stage, "idle")]
        at = min((t for t in due if t > done), default=None)
        timer_id = self.find(IDLE, "idle")
        if timer_id is not None:
            if not replace and at is not None and self.state.pending[timer_id].at <= at:
                return
            self.cancel(timer_id)
        if at is not None:
            self.set_pending(IDLE, "idle", stage, at, None, {"base": base, "done": done})

    def idle_will_act(self, rule: CRule) -> bool:
        """Whether the pending idle timer will act ``rule`` for the current quiet period."""
        timer_id = self.find(IDLE, "idle")
        if timer_id is None:
            return False
        base = self.idle_base()
        data = self.state.pending[timer_id].event_data
        done = float(data.get("done", base)) if data.get("base") == base else base
        return base + (rule.after or 0) > done

    def idle_fired(self, timer_id: str, entry: Pending) -> None:
        """Act the ``idle`` rules whose quiet time has come, then wait for the next one."""
        stage = entry.stage
        base = self.idle_base()
        done = float(entry.event_data.get("done", base)) if entry.event_data.get("base") == base else base
        origin = _Origin(timer_id, "idle", self.epoch, {}, 0)
        for rule in self.a.stage_rules(stage, "idle"):
            if done < base + (rule.after or 0) <= self.epoch:
                self.record(rule.id, "fired", "idle")
                self.due(rule, origin)
        self.arm_idle(stage, base, max(done, self.epoch), replace=True)

    def field_time_at(self, rule: CRule, value: Any = None, *, given: bool = False) -> float | None:
        """When a ``field_time`` rule acts for the lead: its date field plus the offset."""
        if not given:
            value = lookup(self.snapshot, rule.at_field or ())
        when = self.moment(value)
        return None if when is None else when + rule.at_offset

    def moment(self, value: Any) -> float | None:
        """A date field's value as epoch seconds: a number (seconds, or milliseconds), an ISO date
        or date-time (without an offset: in the document's timezone), or a datetime."""
        if isinstance(value, bool) or value is None or value == "":
            return None
        number = as_number(value)  # None for ISO text ("2026-12-05") and datetimes
        if number is not None:
            return number / 1000 if abs(number) >= 1e11 else number
        if isinstance(value, str):
            try:
                value = datetime.fromisoformat(value.strip())
            except ValueError:
                try:
                    value = date.fromisoformat(value.strip())
                except ValueError:
                    return None
        if isinstance(value, datetime):
            return (value if value.tzinfo is not None else value.replace(tzinfo=self.a.tz)).timestamp()
        if isinstance(value, date):
            return datetime.combine(value, time(), tzinfo=self.a.tz).timestamp()
        return None

    def schedule_field_time(self, rule: CRule, at: float | None) -> None:
        """(Re)set a ``field_time`` rule's timer; none when the field is empty or the time past."""
        timer_id = self.find(rule.id, "field_time")
        if timer_id is not None:
            if at is not None and self.state.pending[timer_id].at == at:
                return
            self.cancel(timer_id)
        if at is not None and at > self.epoch:
            self.set_pending(rule.id, "field_time", rule.stage, at, None)

    # ------------------------------------------------------------------ context
    def context(self, origin: _Origin) -> dict[str, Any]:
        ctx = self.contexts.get(origin.id)
        if ctx is None:
            snap = self.snapshot
            ctx = {
                "lead": snap.get("lead") or {},
                "contact": snap.get("contact") or {},
                "company": snap.get("company") or {},
                "event": {"id": origin.id, "type": origin.type, "at": origin.at, "data": origin.data,
                          "depth": origin.depth},
                "now": self.now.astimezone(self.a.tz),
            }
            self.contexts[origin.id] = ctx
        return ctx

    def holds(self, predicate: CPredicate | None, origin: _Origin) -> tuple[bool, str]:
        if predicate is None:
            return True, ""
        try:
            return holds(predicate, self.context(origin)), ""
        except TemplateFailed as exc:
            return False, f"template error: {exc}"

    # ------------------------------------------------------------------ rules
    def fire(self, rule: CRule, origin: _Origin) -> None:
        """A rule's event happened: act now, or after its delay."""
        self.record(rule.id, "fired", origin.type)
        if rule.delay:
            if self.find(rule.id, "delay", origin.id) or self.find(rule.id, "window", origin.id):
                return  # already waiting for this event
            self.set_pending(rule.id, "delay", rule.stage, origin.at + rule.delay, origin)
            self.record(rule.id, "delayed", f"until {self._iso(origin.at + rule.delay)}")
            return
        self.due(rule, origin)

    def due(self, rule: CRule, origin: _Origin) -> None:
        """The rule's time has come (the lead is in its stage): wait for its activity time, check
        ``if``, act."""
        if not self.a.is_active(rule.active, self.now):
            at = self.a.next_active(rule.active, self.now).timestamp()
            self.set_pending(rule.id, "window", rule.stage, at, origin)
            self.record(rule.id, "waiting_window", f"until {self._iso(at)}")
            return
        ok, why = self.holds(rule.condition, origin)
        if not ok:
            self.record(rule.id, "skipped_if", why)
            return
        self.effects.append(self.act(rule, origin))
        self.record(rule.id, "acted", origin.type)

    def act(self, rule: CRule, origin: _Origin) -> fx.Effect:
        ctx = self.context(origin)
        depth = origin.depth + 1
        do = rule.do
        if isinstance(do, CStartBot):
            return fx.StartBot(rule.id, do.bot, do.channels, plain(self.value(dict(do.variables), ctx)), depth,
                               rule.leave_unanswered)
        if isinstance(do, CStartProcess):
            return fx.StartProcess(rule.id, do.process, plain(self.value(dict(do.variables), ctx)), depth)
        assert isinstance(do, CActions)
        payloads = tuple(self.action(a, fixed, templated, ctx)
                         for a, (fixed, templated) in zip(do.actions, do.parts, strict=True)
                         if a.do not in _CONVERSATION_ONLY)
        return fx.RunActions(rule.id, payloads, depth, rule.leave_unanswered)

    def action(self, act: CAction, fixed: Mapping[str, Any], templated: Mapping[str, Any],
               ctx: Mapping[str, Any]) -> dict[str, Any]:
        """The plain command of one action, as a flow's action request carries it."""
        payload: dict[str, Any] = {"do": act.do, **fixed}
        for key, value in templated.items():
            payload[key] = plain(self.value(value, ctx))
        if act.do == "add_task":
            payload["due_at"] = task_due(payload.get("due"), self.now, self.a).isoformat()
        elif act.do == "complete_tasks":
            lo, hi = task_due_window(payload.get("due"), self.now, self.a)
            payload["due_from"] = lo.isoformat() if lo else None
            payload["due_to"] = hi.isoformat() if hi else None
        payload["timezone"] = self.a.tz.key
        return payload

    def value(self, compiled: Any, ctx: Mapping[str, Any]) -> Any:
        """A compiled value evaluated; only a template that fails becomes ``""``."""
        try:
            return evaluate_value(compiled, ctx)
        except TemplateFailed:
            if isinstance(compiled, list):
                return [self.value(v, ctx) for v in compiled]
            if isinstance(compiled, dict):
                return {k: self.value(v, ctx) for k, v in compiled.items()}
            return "" if isinstance(compiled, Template) else compiled

    def _iso(self, epoch: float) -> str:
        """A timer's time for a record's detail (the epoch itself if it is no date)."""
        try:
            return datetime.fromtimestamp(epoch, self.a.tz).isoformat()
        except (OverflowError, ValueError, OSError):
            return str(epoch)

    # ------------------------------------------------------------------ events
    def on_lead_event(self, e: LeadEvent) -> None:
        st = self.state
        if not st.remember(e.id):
            return  # redelivered: it has been handled
        pipeline, stage = self.event_position(e)
        st.last_event_at = e.at if st.last_event_at is None else max(st.last_event_at, e.at)
        self.observe(pipeline, stage, e.at)
        if pipeline != self.a.pipeline or stage is None:
            return  # a lead of another pipeline: not this document's business
        base = self.idle_base()
        self.arm_idle(stage, base, base)
        if e.type == "lead.field_changed":
            name = _field_name(e.data.get("field"))
            for rule in self.a.field_time_by_field.get(name, ()):
                if rule.stage == stage:
                    given = "to" in e.data
                    self.schedule_field_time(rule, self.field_time_at(rule, e.data.get("to"), given=given))
        origin = _Origin(e.id, e.type, e.at, e.data, e.depth)
        looping = e.depth >= MAX_DEPTH
        for rule in self.matching_rules(e, stage):
            if looping:
                self.record(rule.id, "loop", f"{e.type} at depth {e.depth}")
            else:
                self.fire(rule, origin)
        self.triggers(origin, stage, looping)
        self.scoring(origin, looping)

    def matching_rules(self, e: LeadEvent, stage: str) -> list[CRule]:
        kind = _KIND.get(e.type)
        if kind is None:
            return []
        rules = self.a.stage_rules(stage, kind)
        if not rules:
            return []
        if kind == "moved_in":
            before = _stage_of(e.data.get("from"))
            after = (self.state.pipeline, stage)
            if before[1] is not None and (before[0] or after[0], before[1]) == after:
                return []  # not a move
        elif kind == "tag_added":
            tag = str(e.data.get("tag") or "").casefold()
            return [r for r in rules if r.tag == tag]
        elif kind == "field_changed":
            name = _field_name(e.data.get("field"))
            return [r for r in rules if r.field == name]
        return list(rules)

    def triggers(self, origin: _Origin, stage: str, looping: bool) -> None:
        """The first trigger of the event that may move the lead moves it."""
        for t in self.a.triggers.get(origin.type, ()):
            ok, _why = self.holds(t.match, origin)
            if not ok:
                continue
            if looping:
                self.record(t.id, "loop", f"{origin.type} at depth {origin.depth}")
                return
            self.record(t.id, "fired", origin.type)
            if t.stage == stage:
                self.record(t.id, "skipped_if", f"the lead is already in {stage}")
                continue
            if not t.allow_backward and self.a.is_backward(stage, t.stage):
                self.record(t.id, "skipped_if", f"{t.stage} is before {stage} (allow_backward is false)")
                continue
            self.effects.append(fx.MoveStage(t.id, t.stage, origin.depth + 1, self.a.pipeline))
            self.record(t.id, "acted", f"moved from {stage} to {t.stage}")
            return

    def score(self) -> int:
        contact = self.snapshot.get("contact")
        value = as_number(contact.get("score")) if isinstance(contact, Mapping) else None
        return max(0, int(value)) if value is not None else 0

    def scoring(self, origin: _Origin, looping: bool) -> None:
        score = self.score()
        if origin.type == "lead.field_changed" and _field_name(origin.data.get("field")) == SCORE_FIELD:
            return  # the score's own change never scores (an entry on any field change would feed itself)
        for s in self.a.scoring.get(origin.type, ()):
            if not self.holds(s.match, origin)[0]:
                continue
            if looping:
                self.record(f"score:{origin.type}", "loop", f"{origin.type} at depth {origin.depth}")
                continue
            delta = s.add if s.add > 0 else -min(-s.add, score)
            if delta:
                self.effects.append(fx.AddScore(delta, origin.type, origin.depth + 1))
                score += delta
        self.start_decay(score)

    def start_decay(self, score: int) -> None:
        if score <= 0:
            return
        for decay in self.a.decays:
            if self.find(decay.key, "decay") is None:
                self.set_pending(decay.key, "decay", "", self.epoch + decay.every, None)

    def on_timer(self, e: TimerFired) -> None:
        st = self.state
        if e.timer_id not in st.pending:
            return  # stale: cancelled, or already handled
        pipeline, stage = self.position()
        self.observe(pipeline, stage, self.epoch)
        entry = st.pending.pop(e.timer_id, None)
        if entry is None:
            return  # it belonged to the stage the lead has left (cancelled just now)
        if entry.kind == "decay":
            self.decay(entry)
            return
        if entry.kind == "idle":
            if self.in_stage(entry.stage):
                self.idle_fired(e.timer_id, entry)
            return
        rule = self.a.rules.get(entry.rule)
        if rule is None:
            self.record(entry.rule, "cancelled", "the rule is no longer in the automations")
            return
        if rule.stage != entry.stage or not self.in_stage(rule.stage):
            self.record(rule.id, "not_in_stage", f"the lead is in {st.stage}")
            return
        if entry.kind in ("delay", "window"):
            origin = _Origin(entry.event_id, entry.event_type, entry.at, entry.event_data, entry.depth)
            self.due(rule, origin)
            return
        if entry.kind == "field_time":
            at = self.field_time_at(rule)
            if at is None or abs(at - entry.at) >= 1:
                self.schedule_field_time(rule, at)  # the field changed without an event
                return
        origin = _Origin(e.timer_id, entry.kind, entry.at, {}, 0)
        self.record(rule.id, "fired", entry.kind)
        self.due(rule, origin)

    def decay(self, entry: Pending) -> None:
        spec = next((d for d in self.a.decays if d.key == entry.rule), None)
        if spec is None or self.state.pipeline != self.a.pipeline:
            return
        score = self.score()
        if score > 0:
            delta = -min(spec.subtract, score)
            self.effects.append(fx.AddScore(delta, "decay", 1, spec.period(entry.at), 2 * spec.every))
            self.state.decayed_at = self.epoch
            score += delta
        if score > 0:
            self.set_pending(spec.key, "decay", "", self.epoch + spec.every, None)

    def on_changed(self, e: fx.AutomationsChanged) -> None:
        """A new version: what its rules no longer want is cancelled, what they want is set."""
        st = self.state
        pipeline, stage = self.position()
        self.observe(pipeline, stage, self.epoch)
        decays = {d.key for d in self.a.decays}
        base = self.idle_base()
        done = self.epoch  # without an idle timer, every idle rule of the quiet period has acted
        for timer_id, p in list(st.pending.items()):
            if p.kind == "decay":
                if p.rule not in decays:
                    self.cancel(timer_id)
                continue
            rule = self.a.rules.get(p.rule)
            if p.kind == "idle":
                if p.event_data.get("base") == base:
                    done = float(p.event_data.get("done", base))
                self.cancel(timer_id)  # set again below from the new version's rules
            elif p.kind == "field_time":
                self.cancel(timer_id)
            elif rule is None or rule.stage != p.stage:
                self.cancel(timer_id)
                self.record(p.rule, "cancelled", f"not in version {e.version}")
        if st.pipeline == self.a.pipeline and st.stage is not None:
            for rule in self.a.stage_rules(st.stage, "field_time"):
                self.schedule_field_time(rule, self.field_time_at(rule))
            self.arm_idle(st.stage, base, done)
            self.start_decay(self.score())

    def on_apply(self, e: fx.ApplyRule) -> None:
        """``apply_to_existing``: the rule acts for this lead as if its event happened now."""
        key = f"apply:{e.rule_id}:{e.job or self.a.version}"
        if not self.state.remember(key):
            return
        pipeline, stage = self.position()
        self.observe(pipeline, stage, self.epoch)
        rule = self.a.rules.get(e.rule_id)
        if rule is None:
            return
        if not self.in_stage(rule.stage):
            self.record(rule.id, "not_in_stage", f"the lead is in {self.state.stage}")
            return
        origin = _Origin(key, "apply", self.epoch, {}, 0)
        if rule.on <= {"idle", "field_time"}:
            if "idle" in rule.on and self.idle_base() + (rule.after or 0) <= self.epoch:
                if not self.idle_will_act(rule):
                    self.fire(rule, origin)  # quiet long enough already
            elif "field_time" in rule.on:
                self.schedule_field_time(rule, self.field_time_at(rule))  # it waits for its time
            return
        self.fire(rule, origin)


_HANDLERS: dict[type[object], Callable[[_React, Any], None]] = {
    LeadEvent: _React.on_lead_event,
    TimerFired: _React.on_timer,
    fx.AutomationsChanged: _React.on_changed,
    fx.ApplyRule: _React.on_apply,
}
