"""The compiled form of an automation document: what the rule engine matches events against.

Everything that can be decided once is decided here, never per event: rules are indexed by
``(stage, on)``, triggers and scoring by event type, conditions, templates and ``match`` values
are compiled, durations are seconds, working hours are read in the document's timezone and
the pipeline's stage order is a lookup table (for ``allow_backward``). ``compile_automations``
takes a *validated* ``Automations`` model (``bot.automations.validate`` finds the problems a
person can fix); what it still finds (a template that does not compile) it raises as
``AutomationsInvalid`` with every problem's JSON pointer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo

from ..builder import compiled as c
from ..builder.durations import parse_duration
from ..builder.templates import evaluate_value
from ..builder.validate import Compiler, _has_template  # compiled exactly as in flows
from ..builder.working_hours import WorkingHours
from ..engine.state import plain
from ..errors import AutomationsInvalid
from . import models as m

#: Rule kinds a lead event starts at once (the others, ``field_time`` and ``idle``, are timers).
EVENT_KINDS = frozenset({
    "created", "moved_in", "responsible_changed", "tag_added", "field_changed", "chat.first_message",
    "chat.message",
})


@dataclass(frozen=True, slots=True)
class CStartBot:
    bot: str
    channels: tuple[str, ...]
    variables: Mapping[str, Any]  # compiled values


@dataclass(frozen=True, slots=True)
class CStartProcess:
    process: str
    variables: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class CActions:
    actions: tuple[c.CAction, ...]
    #: Per action: the parameters without templates, evaluated once (plain data, read-only), and
    #: those with templates, rendered per act.
    parts: tuple[tuple[Mapping[str, Any], Mapping[str, Any]], ...]


CDo = CStartBot | CStartProcess | CActions


@dataclass(frozen=True, slots=True)
class CRule:
    """One stage rule, ready to act. ``index`` is its place in the document (the order rules act in)."""

    id: str
    index: int
    stage: str
    on: frozenset[str]
    tag: str | None  # casefolded
    field: str | None
    at_field: tuple[str, ...] | None  # field_time: the date field's path in the snapshot
    at_offset: int
    after: int | None  # idle
    condition: c.CPredicate | None
    delay: int | None
    active: str
    apply_to_existing: bool
    leave_unanswered: bool
    do: CDo


@dataclass(frozen=True, slots=True)
class CTrigger:
    id: str
    index: int
    stage: str
    on: str
    match: c.CPredicate | None  # over ``event.data``
    allow_backward: bool


@dataclass(frozen=True, slots=True)
class CScore:
    on: str
    match: c.CPredicate | None
    add: int


@dataclass(frozen=True, slots=True)
class CDecay:
    key: str  # ``decay:<n>``: the n-th decay rule of the document, the name of its timer
    every: int
    subtract: int

    def period(self, at: float) -> str:
        """The key of the period ``at`` falls in (periods of ``every`` seconds counted from the
        epoch): the decay timers of a contact's leads that fall due in one period share it, so
        the shell subtracts once per contact and period (``AddScore.once``)."""
        return f"decay:{self.every}:{int(at // self.every)}"


_EMPTY: tuple[Any, ...] = ()


@dataclass(frozen=True, slots=True)
class CompiledAutomations:
    """One version of one pipeline's automations, ready to match. Immutable; cached by the shell."""

    id: str
    version: int
    pipeline: str
    tz: ZoneInfo
    hours: WorkingHours
    stages: tuple[str, ...]
    stage_index: Mapping[str, int]
    rules: Mapping[str, CRule]
    by_stage_on: Mapping[tuple[str, str], tuple[CRule, ...]]
    triggers: Mapping[str, tuple[CTrigger, ...]]
    scoring: Mapping[str, tuple[CScore, ...]]
    decays: tuple[CDecay, ...]
    #: ``field_time`` rules by the field they read (to reschedule when it changes).
    field_time_by_field: Mapping[str, tuple[CRule, ...]]

    def stage_rules(self, stage: str, on: str) -> tuple[CRule, ...]:
        """The rules of ``stage`` that run ``on`` this, in document order (one dict lookup)."""
        return self.by_stage_on.get((stage, on), _EMPTY)

    def is_backward(self, from_stage: str | None, to_stage: str) -> bool:
        """Whether moving from ``from_stage`` to ``to_stage`` goes to an earlier stage."""
        a = self.stage_index.get(from_stage) if from_stage is not None else None
        b = self.stage_index.get(to_stage)
        return a is not None and b is not None and b < a

    def is_active(self, active: str, when: datetime) -> bool:
        """Whether a rule with this ``active`` may act at ``when``. Without working hours every
        time is a working time, and ``outside_working_hours`` never waits (it could wait forever)."""
        if active == "always" or self.hours.always:
            return True
        return self.hours.is_open(when) == (active == "working_hours")

    def next_active(self, active: str, when: datetime) -> datetime:
        """The next moment at or after ``when`` a rule with this ``active`` may act."""
        if self.is_active(active, when):
            return when
        if active == "working_hours":
            return self.hours.next_opening(when)
        return next_closing(self.hours, when)


def next_closing(hours: WorkingHours, when: datetime) -> datetime:
    """The moment the open period around ``when`` ends (``when`` itself if closed then).

    Ranges that touch (``18:00-24:00`` then ``00:00-02:00`` the next day) are one period.
    """
    local = when.astimezone(hours.tz)
    if not hours.is_open(local):
        return when
    day = local.date()
    minute = local.hour * 60 + local.minute
    for _ in range(8):
        end = None
        for start, stop in hours.week[day.weekday()]:
            if start <= minute < stop:
                end = stop if end is None else max(end, stop)
        # Ranges of the same day that chain on (09:00-12:00, 12:00-18:00).
        while end is not None and any(s <= end < e for s, e in hours.week[day.weekday()]):
            end = max(e for s, e in hours.week[day.weekday()] if s <= end < e)
        if end is None:
            return datetime.combine(day, time(minute // 60, minute % 60), tzinfo=hours.tz)
        if end < 24 * 60:
            return datetime.combine(day, time(end // 60, end % 60), tzinfo=hours.tz)
        day, minute = day + timedelta(days=1), 0
    return when  # open all week: there is no outside time; act now rather than never


def _seconds(value: int | str | None) -> int | None:
    """A duration field of a parsed model (its validator already made seconds of it)."""
    if value is None:
        return None
    return value if isinstance(value, int) else parse_duration(value)


def _match(comp: Compiler, match: Mapping[str, Any], at: list[str | int]) -> c.CPredicate | None:
    """``match`` as a predicate over the context's ``event.data``: every key equal (the flow's
    ``eq``: numbers as numbers, text without regard to case)."""
    if not match:
        return None
    leaves: list[c.CPredicate] = []
    for key, value in match.items():
        compiled = comp.value(value, at + [key])
        path = ("event", "data", key)
        if _has_template(compiled):
            leaves.append(c.CLeaf(path, "eq", compiled))
        else:
            leaves.append(c.CLeaf(path, "eq", evaluate_value(compiled, {}), None, True))
    return leaves[0] if len(leaves) == 1 else c.CAll(tuple(leaves))


def _do(comp: Compiler, do: m.StartBotDo | m.ActionsDo | m.StartProcessDo, at: list[str | int]) -> CDo:
    if isinstance(do, m.StartBotDo):
        channels = (do.channel,) if isinstance(do.channel, str) else tuple(do.channel)
        return CStartBot(do.start_bot, channels, MappingProxyType(comp.value(do.variables, at + ["variables"])))
    if isinstance(do, m.StartProcessDo):
        return CStartProcess(do.start_process,
                             MappingProxyType(comp.value(do.variables, at + ["variables"])))
    actions = comp.actions(do.actions, at + ["actions"])
    parts = tuple(
        (MappingProxyType({k: plain(evaluate_value(v, {})) for k, v in x.params.items() if not _has_template(v)}),
         MappingProxyType({k: v for k, v in x.params.items() if _has_template(v)}))
        for x in actions
    )
    return CActions(actions, parts)


def _rule(comp: Compiler, index: int, r: m.Rule) -> CRule:
    at: list[str | int] = ["rules", index]
    return CRule(
        id=r.id, index=index, stage=r.stage, on=frozenset(r.on),
        tag=r.tag.casefold() if r.tag is not None else None,
        field=r.field,
        at_field=tuple(r.at.field.split(".")) if r.at is not None else None,
        at_offset=r.at.offset_seconds if r.at is not None else 0,
        after=_seconds(r.after),
        condition=comp.predicate(r.if_, at + ["if"]) if r.if_ is not None else None,
        delay=_seconds(r.delay) or None,
        active=r.active, apply_to_existing=r.apply_to_existing, leave_unanswered=r.leave_unanswered,
        do=_do(comp, r.do, at + ["do"]),
    )


def compile_automations(doc: m.Automations, stages: Sequence[str], *, version: int = 0) -> CompiledAutomations:
    """The compiled form of a validated document, given its pipeline's stages in order.

    Raises ``AutomationsInvalid`` (problems with JSON pointers) when a template or condition does not
    compile — the validator reports those first; this is the last line.
    """
    comp = Compiler()
    tz = ZoneInfo(doc.settings.timezone)
    hours = WorkingHours.parse(doc.settings.working_hours, tz)
    rules = [_rule(comp, i, r) for i, r in enumerate(doc.rules)]
    by_stage_on: dict[tuple[str, str], list[CRule]] = {}
    by_field: dict[str, list[CRule]] = {}
    for rule in rules:
        for on in sorted(rule.on):
            by_stage_on.setdefault((rule.stage, on), []).append(rule)
        if rule.at_field is not None:
            by_field.setdefault(".".join(rule.at_field), []).append(rule)
    triggers: dict[str, list[CTrigger]] = {}
    for i, t in enumerate(doc.triggers):
        triggers.setdefault(t.on, []).append(
            CTrigger(t.id, i, t.stage, t.on, _match(comp, t.match, ["triggers", i, "match"]), t.allow_backward))
    scoring: dict[str, list[CScore]] = {}
    decays: list[CDecay] = []
    for i, s in enumerate(doc.scoring):
        if isinstance(s, m.DecayRule):
            decays.append(CDecay(f"decay:{i}", _seconds(s.decay.every) or 3600, s.decay.subtract))
        else:
            scoring.setdefault(s.on, []).append(CScore(s.on, _match(comp, s.match, ["scoring", i, "match"]), s.add))
    if comp.problems:
        raise AutomationsInvalid(comp.problems)
    return CompiledAutomations(
        id=doc.id, version=version, pipeline=doc.pipeline, tz=tz, hours=hours, stages=tuple(stages),
        stage_index=MappingProxyType({name: i for i, name in enumerate(stages)}),
        rules=MappingProxyType({r.id: r for r in rules}),
        by_stage_on=MappingProxyType({k: tuple(v) for k, v in by_stage_on.items()}),
        triggers=MappingProxyType({k: tuple(v) for k, v in triggers.items()}),
        scoring=MappingProxyType({k: tuple(v) for k, v in scoring.items()}),
        decays=tuple(decays),
        field_time_by_field=MappingProxyType({k: tuple(v) for k, v in by_field.items()}),
    )
