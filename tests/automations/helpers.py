"""Shared helpers of the rule engine tests: documents built from the models, a lead driven
through ``react`` with a CRM snapshot the test controls, and effect filters.

Documents are built with ``Automations.model_validate`` (the models, not the validator) and
compiled with the pipeline's stages, as the shell does.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from bot.automations import effects as fx
from bot.automations.compiled import CompiledAutomations, compile_automations
from bot.automations.engine import ShellEvent, react
from bot.automations.events import LeadEvent
from bot.automations.models import Automations
from bot.automations.state import LeadState
from bot.engine.events import TimerFired

#: Monday 7 December 2026, 10:00 UTC (13:00 in Istanbul).
NOW = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
STAGES = ("Incoming", "Qualified", "Proposal", "Meeting", "Paid", "Lost")
NOTE = {"actions": [{"do": "add_note", "text": "note for {{ lead.name }}"}]}

E = TypeVar("E")


def compile_doc(
    rules: Iterable[Mapping[str, Any]] = (),
    *,
    triggers: Iterable[Mapping[str, Any]] = (),
    scoring: Iterable[Mapping[str, Any]] = (),
    version: int = 1,
    stages: Iterable[str] = STAGES,
    pipeline: str = "Sales",
    **settings: Any,
) -> CompiledAutomations:
    doc = {
        "format": "salesbot.automations/1", "id": pipeline.lower(), "pipeline": pipeline,
        "settings": {"timezone": "Europe/Istanbul", **settings},
        "rules": [{"do": NOTE, **r} for r in rules], "triggers": list(triggers), "scoring": list(scoring),
    }
    return compile_automations(Automations.model_validate(doc), tuple(stages), version=version)


_IDS = itertools.count(1)


def event(type_: str, *, id: str | None = None, at: datetime = NOW, depth: int = 0, **data: Any) -> LeadEvent:
    """A lead event about lead 42 (a fresh id unless given)."""
    return LeadEvent(id or f"e{next(_IDS)}", type_, at.timestamp(), "42", "7", dict(data), depth)


def moved(to: str, frm: str | None = "Incoming", **kw: Any) -> LeadEvent:
    data: dict[str, Any] = {"to": {"pipeline": "Sales", "stage": to}}
    if frm is not None:
        data["from"] = {"pipeline": "Sales", "stage": frm}
    return event("lead.stage_changed", **data, **kw)


def of(effects: Iterable[object], kind: type[E]) -> list[E]:
    return [x for x in effects if isinstance(x, kind)]


def outcomes(effects: Iterable[object], rule: str | None = None) -> list[str]:
    return [x.outcome for x in of(effects, fx.Record) if rule is None or x.rule == rule]


def acted(effects: Iterable[object]) -> list[str]:
    return [x.rule for x in of(effects, fx.Record) if x.outcome == "acted"]


class Lead:
    """One lead: its state, its CRM snapshot (the test changes it) and the clock."""

    def __init__(self, automations: CompiledAutomations, *, stage: str | None = "Incoming",
                 pipeline: str = "Sales", now: datetime = NOW, **lead: Any) -> None:
        self.automations = automations
        self.state = LeadState.for_lead("42")
        self.now = now
        self.lead: dict[str, Any] = {"id": 42, "name": "Deal", "pipeline": pipeline, "stage": stage, "tags": [],
                                     "fields": {}, **lead}
        self.contact: dict[str, Any] = {"id": 7, "name": "Ann", "score": 0}
        self.history: list[fx.Effect] = []

    @property
    def snapshot(self) -> dict[str, Any]:
        return {"lead": self.lead, "contact": self.contact, "company": {}}

    def send(self, e: ShellEvent, *, now: datetime | None = None) -> tuple[fx.Effect, ...]:
        if now is not None:
            self.now = now
        before = self.state.to_dict()
        reaction = react(self.automations, self.state, e, self.snapshot, self.now)
        assert self.state.to_dict() == before, "react changed the state it was given"
        self.state = reaction.state
        self.history.extend(reaction.effects)
        return reaction.effects

    def move(self, to: str, **kw: Any) -> tuple[fx.Effect, ...]:
        frm = self.lead["stage"]
        self.lead["stage"] = to
        return self.send(moved(to, frm, **kw))

    def timers(self, kind: str | None = None) -> dict[str, float]:
        """Pending timer ids (of ``kind``) and when they fall due."""
        return {k: p.at for k, p in self.state.pending.items() if kind is None or p.kind == kind}

    def fire(self, timer_id: str) -> tuple[fx.Effect, ...]:
        """The timer falls due: the clock moves to its time (if later) and it fires."""
        at = datetime.fromtimestamp(self.state.pending[timer_id].at, UTC) if timer_id in self.state.pending else None
        return self.send(TimerFired(timer_id), now=max(self.now, at) if at is not None else self.now)

    def fire_only(self, kind: str) -> tuple[fx.Effect, ...]:
        (timer_id,) = self.timers(kind)
        return self.fire(timer_id)


def later(**kw: float) -> datetime:
    return NOW + timedelta(**kw)
