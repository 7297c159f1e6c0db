"""Compiling and checking what issue 13 added to flows: ``split`` steps, ``goals``, ``pause`` on an
event or a condition. Apart from ``validate.py`` so that module keeps one job (the document as a
whole) and a size one can read."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Protocol

from ..errors import Problem
from . import compiled as c
from . import models as m
from .event_types import is_known_type
from .problems import pointer, suggest, unknown_event_type
from .templates import evaluate_value


class Compiler(Protocol):
    """What this module needs of ``bot.builder.validate.Compiler`` (which imports this module)."""

    def value(self, value: Any, at: list[str | int]) -> Any: ...

    def predicate(self, p: m.Predicate, at: list[str | int]) -> c.CPredicate: ...


def match_predicate(comp: Compiler, match: Mapping[str, Any] | None, at: list[str | int]) -> c.CPredicate | None:
    """``match`` as a predicate over the context's ``event.data``: every key equal (the flow's
    ``eq``: numbers as numbers, text without regard to case), as automation triggers match."""
    if not match:
        return None
    leaves: list[c.CPredicate] = []
    for key, value in match.items():
        compiled = comp.value(value, at + [key])
        path = ("event", "data", *key.split("."))
        constant = not _templated(compiled)
        leaves.append(c.CLeaf(path, "eq", evaluate_value(compiled, {}) if constant else compiled, None, constant))
    return leaves[0] if len(leaves) == 1 else c.CAll(tuple(leaves))


def _templated(value: Any) -> bool:
    from .templates import Template

    if isinstance(value, Template):
        return value.constant is None
    if isinstance(value, list):
        return any(_templated(v) for v in value)
    if isinstance(value, dict):
        return any(_templated(v) for v in value.values())
    return False


def pause_event(comp: Compiler, e: m.PauseEvent, at: list[str | int], default_next: str | None) -> c.CPauseEvent:
    test = None
    if e.on == "event":
        test = match_predicate(comp, e.match, at + ["match"])
    elif e.on == "condition" and e.if_ is not None:
        test = comp.predicate(e.if_, at + ["if"])
    after = e.after if isinstance(e.after, int) else None
    return c.CPauseEvent(e.on, after, e.next if e.next is not None else default_next, e.event, test)


def split(sid: str, s: m.SplitStep) -> c.CSplit:
    winner = s.winner
    or_after = winner.or_after if winner is not None and isinstance(winner.or_after, int) else None
    return c.CSplit(sid, s.type, tuple(c.CSplitPath(p.id, p.weight, p.next) for p in s.paths), s.goal,
                    winner.after_entries if winner is not None else None, or_after)


def goals(comp: Compiler, raw: Mapping[str, m.Goal]) -> Mapping[str, tuple[c.CGoal, ...]]:
    """The goals by event type (one event may reach several goals)."""
    out: dict[str, list[c.CGoal]] = {}
    for name, g in raw.items():
        test = match_predicate(comp, g.match, ["goals", name, "match"])
        out.setdefault(g.on, []).append(c.CGoal(name, g.on, test, g.next))
    return MappingProxyType({k: tuple(v) for k, v in out.items()})


def problems(doc: Mapping[str, Any], steps: Mapping[str, m.Step], goal_models: Mapping[str, m.Goal]) -> list[Problem]:
    """What the schema cannot see: a goal's ``next``, a split's ``goal``, paths with the same
    id, event types that are not ours (a typo would wait for an event that never comes)."""
    out: list[Problem] = []
    raw_steps = doc.get("steps")
    names = list(raw_steps) if isinstance(raw_steps, dict) else []
    raw_goals = doc.get("goals")
    # A goal the schema refuses is still a goal a split may name (its problem is the schema's).
    goal_names = list(dict.fromkeys([*goal_models, *(raw_goals if isinstance(raw_goals, dict) else ())]))
    for name, g in goal_models.items():
        if g.next is not None and names and g.next not in names:
            out.append(Problem(pointer(["goals", name, "next"]), f'unknown step "{g.next}"{suggest(g.next, names)}'))
        if not is_known_type(g.on):
            out.append(Problem(pointer(["goals", name, "on"]), unknown_event_type(g.on)))
    for sid, s in steps.items():
        if isinstance(s, m.SplitStep):
            if s.goal is not None and s.goal not in goal_names:
                out.append(Problem(pointer(["steps", sid, "goal"]),
                                   f'unknown goal "{s.goal}"{suggest(s.goal, goal_names)}: '
                                   'name one of the flow\'s "goals"'))
            out += twice([p.id for p in s.paths], ["steps", sid, "paths"], "path id")
        elif isinstance(s, m.PauseStep):
            out += [Problem(pointer(["steps", sid, "until", i, "event"]), unknown_event_type(e.event))
                    for i, e in enumerate(s.until) if e.event is not None and not is_known_type(e.event)]
    return out


def twice(ids: list[str], at: list[str | int], what: str) -> list[Problem]:
    """Each id of ``ids`` (the items of the list at ``at``) that an earlier item has, pointed at."""
    seen: set[str] = set()
    out = []
    for i, item in enumerate(ids):
        if item in seen:
            out.append(Problem(pointer([*at, i, "id"]), f'{what} "{item}" is used twice'))
        seen.add(item)
    return out
