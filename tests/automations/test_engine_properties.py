"""Property test: random sequences of lead events, timers, redeliveries, new versions and
``apply_to_existing`` never make a rule act twice for the same triggering event, keep the
timer bookkeeping exact (every timer set is pending until it fires or is cancelled), never
take the score below zero, never exceed the loop depth, and leave states that round-trip
through msgpack."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import msgpack
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bot.automations import effects as fx
from bot.automations.engine import ShellEvent, react
from bot.automations.events import MAX_DEPTH, LeadEvent
from bot.automations.state import STAGE_KINDS, LeadState
from bot.engine.events import TimerFired

from .helpers import NOW, compile_doc

STAGES = ("Incoming", "Qualified", "Meeting", "Paid")
IF_HOT = {"if": {"all": [{"field": "lead.tags", "op": "has", "value": "hot"}]}}


def _rules(extra: bool) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = [
        {"id": "welcome", "stage": "Incoming", "on": ["created", "moved_in"], "delay": "10m"},
        {"id": "chat", "stage": "Incoming", "on": ["chat.message", "chat.first_message"]},
        {"id": "q_chat", "stage": "Qualified", "on": "chat.message", "active": "working_hours"},
        {"id": "vip", "stage": "Qualified", "on": "tag_added", "tag": "vip", **IF_HOT},
        {"id": "q_in", "stage": "Qualified", "on": "moved_in", "delay": "1h", "active": "working_hours"},
        {"id": "remind", "stage": "Meeting", "on": "field_time",
         "at": {"field": "lead.fields.meeting_at", "offset": "-1h"}},
        {"id": "stale", "stage": "Meeting", "on": "idle", "after": "2d", "active": "outside_working_hours"},
        {"id": "budget", "stage": "Meeting", "on": "field_changed", "field": "lead.fields.budget", "delay": "5m"},
    ]
    if extra:
        rules.append({"id": "later", "stage": "Incoming", "on": "chat.message", "delay": "2h"})
        rules.append({"id": "idle2", "stage": "Incoming", "on": "idle", "after": "1d"})
    return rules


def _doc(version: int) -> Any:
    return compile_doc(
        _rules(extra=version % 2 == 0),
        triggers=[{"id": "paid", "stage": "Paid", "on": "order.paid"},
                  {"id": "back", "stage": "Incoming", "on": "form.submitted"}],
        scoring=[{"on": "email.opened", "add": 3}, {"on": "order.cancelled", "add": -5},
                 {"decay": {"every": "1d", "subtract": 2}}],
        version=version, stages=STAGES, working_hours={"mon-fri": "09:00-18:00"},
    )


DOCS = {1: _doc(1), 2: _doc(2)}

lead_event = st.tuples(st.just("event"), st.sampled_from([
    "lead.created", "lead.stage_changed", "chat.message", "chat.first_message", "lead.tag_added", "lead.field_changed",
    "email.opened", "order.paid", "order.cancelled", "form.submitted",
]), st.integers(0, 6), st.sampled_from(STAGES + ("Elsewhere",)), st.integers(0, MAX_DEPTH + 1))
step = st.one_of(
    lead_event, lead_event, lead_event,
    st.tuples(st.just("fire"), st.integers(0, 20)),
    st.tuples(st.just("fire"), st.integers(0, 20)),
    st.tuples(st.just("redeliver"), st.integers(0, 20)),
    st.tuples(st.just("stale"), st.integers(0, 50)),
    st.tuples(st.just("wait"), st.integers(0, 4 * 86400)),
    st.tuples(st.just("version"), st.sampled_from([1, 2])),
    st.tuples(st.just("apply"), st.sampled_from(["welcome", "vip", "remind", "gone"])),
    st.tuples(st.just("tags"), st.sampled_from([(), ("hot",), ("hot", "vip")])),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(step, max_size=40))
@example([("event", "chat.message", 0, "Incoming", 0), ("redeliver", 0)])
@example([("apply", "welcome"), ("fire", 0), ("apply", "welcome"), ("fire", 0)])
@example([("event", "lead.stage_changed", 0, "Meeting", 0), ("wait", 86400), ("event", "email.opened", 0, "", 0),
          ("fire", 0), ("fire", 0), ("fire", 0)])
def test_random_histories_keep_the_engine_s_promises(steps: list[tuple[Any, ...]]) -> None:
    automations = DOCS[1]
    state = LeadState.for_lead("42")
    now = NOW
    lead: dict[str, Any] = {"id": 42, "pipeline": "Sales", "stage": "Incoming", "tags": [],
                            "fields": {"meeting_at": (NOW + timedelta(days=1)).isoformat()}}
    contact: dict[str, Any] = {"id": 7, "score": 0}
    live: set[str] = set()
    acts: set[tuple[str, str]] = set()
    counter = 0
    sent: list[LeadEvent] = []
    for s in steps:
        kind = s[0]
        event: ShellEvent
        fired: str | None = None
        origin = ""
        if kind == "event":
            _, etype, n, stage, depth = s
            data: dict[str, Any] = {}
            if etype == "lead.stage_changed":
                pipeline = "Other" if stage == "Elsewhere" else "Sales"
                data = {"from": {"pipeline": lead["pipeline"], "stage": lead["stage"]},
                        "to": {"pipeline": pipeline, "stage": stage}}
                lead.update(pipeline=pipeline, stage=stage)
            elif etype == "lead.tag_added":
                data = {"tag": "vip"}
            elif etype == "lead.field_changed":
                field = ("meeting_at", "budget")[n % 2]
                value = (now + timedelta(hours=n * 7 - 10)).isoformat()
                lead["fields"][field] = value
                data = {"field": f"lead.fields.{field}", "to": value}
            counter += 1
            event = LeadEvent(f"e{counter}", etype, now.timestamp(), "42", "7", data, depth)
            sent.append(event)
            origin = event.id
        elif kind == "redeliver":  # the same event again (the queue's dedupe failed or expired)
            if not sent:
                continue
            event = sent[s[1] % len(sent)]
            origin = event.id
        elif kind == "fire":
            ids = sorted(state.pending)
            if not ids:
                continue
            fired = ids[s[1] % len(ids)]
            entry = state.pending[fired]
            now = max(now, NOW.fromtimestamp(entry.at, NOW.tzinfo))
            origin = entry.event_id if entry.kind in ("delay", "window") else fired
            live.discard(fired)  # the wheel hands it over once
            event = TimerFired(fired)
        elif kind == "stale":
            event = TimerFired(f"lead:42:t{1000 + s[1]}")
        elif kind == "wait":
            now += timedelta(seconds=s[1])
            continue
        elif kind == "version":
            automations = DOCS[s[1]]
            event = fx.AutomationsChanged(s[1])
        elif kind == "apply":
            event = fx.ApplyRule(s[1], job="j")
            origin = f"apply:{s[1]}:j"
        else:
            lead["tags"] = list(s[1])
            continue
        before = state.to_dict()
        reaction = react(automations, state, event, {"lead": lead, "contact": contact}, now)
        assert state.to_dict() == before  # the state given is never changed
        state = reaction.state
        for x in reaction.effects:
            if isinstance(x, fx.SetTimer):
                assert x.timer_id not in live, "a timer id is set twice"
                live.add(x.timer_id)
            elif isinstance(x, fx.CancelTimer):
                assert x.timer_id in live or x.timer_id == fired, "cancelled a timer never set"
                live.discard(x.timer_id)
            elif isinstance(x, fx.Record) and x.outcome == "acted" and not x.rule.startswith(("paid", "back")):
                key = (x.rule, origin)
                assert key not in acts, f"{x.rule} acted twice for {origin}"
                acts.add(key)
            elif isinstance(x, fx.AddScore):
                contact["score"] += x.delta
                assert contact["score"] >= 0
            if isinstance(x, (fx.RunActions, fx.StartBot, fx.StartProcess, fx.MoveStage, fx.AddScore)):
                assert 1 <= x.depth <= MAX_DEPTH
        assert set(state.pending) == live, "pending entries and the timers set differ"
        stage_bound = {p.stage for p in state.pending.values() if p.kind in STAGE_KINDS}
        assert stage_bound <= {state.stage} and (not stage_bound or state.pipeline == "Sales")
        once = [(p.rule, p.kind) for p in state.pending.values() if p.kind in ("idle", "field_time", "decay")]
        assert len(once) == len(set(once)), "two timers of one idle, field_time or decay rule"
        assert LeadState.from_dict(msgpack.unpackb(msgpack.packb(state.to_dict()))) == state


json_value = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
odd = st.one_of(json_value, st.sampled_from(STAGES), st.dictionaries(
    st.sampled_from(["pipeline", "stage", "fields", "tags", "score", "meeting_at"]), json_value, max_size=4))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["lead.stage_changed", "lead.created", "lead.field_changed",
                                           "lead.tag_added", "chat.message", "order.paid", "email.opened"]),
                          st.dictionaries(st.sampled_from(["from", "to", "stage", "field", "tag", "url"]), odd,
                                          max_size=3),
                          st.dictionaries(st.sampled_from(["pipeline", "stage", "tags", "fields", "price"]), odd,
                                          max_size=4),
                          odd), max_size=8))
def test_odd_events_and_snapshots_never_raise(steps: list[tuple[str, dict[str, Any], dict[str, Any], Any]]) -> None:
    """What a webhook or a CRM may send is data, not a crash: no shape of event data or snapshot
    makes ``react`` raise."""
    state = LeadState.for_lead("42")
    for i, (etype, data, lead, contact) in enumerate(steps):
        e = LeadEvent(f"e{i}", etype, NOW.timestamp(), "42", None, data)
        snapshot = {"lead": lead, "contact": contact}
        state = react(DOCS[1], state, e, snapshot, NOW).state
        for timer_id in list(state.pending):
            state = react(DOCS[1], state, TimerFired(timer_id), snapshot, NOW + timedelta(days=9)).state
        msgpack.packb(state.to_dict())
