"""check_document on what issue 13 added: split steps, flow goals, pauses on an event or a
condition — every mistake reported with its JSON pointer, and the schema file knows them."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from bot.builder import check_document
from bot.builder.schema import DEFAULT_PATH

from .helpers import STOP, errors, flow, message, warnings

PATHS = [{"id": "a", "weight": 50, "next": "end"}, {"id": "b", "weight": 50, "next": "end"}]
GOALS = {"purchased": {"on": "order.paid", "next": "thanks"}}


def _doc(split: dict[str, Any] | None = None, goals: dict[str, Any] | None = None,
         **steps: Any) -> dict[str, Any]:
    doc = flow({"offer": {"type": "split", "goal": "purchased", "paths": PATHS, **(split or {})},
                "end": STOP, "thanks": message("thanks"), **steps})
    doc["goals"] = GOALS if goals is None else goals
    return doc


def test_a_valid_split_with_goals_and_a_winner_rule_has_no_problem() -> None:
    doc = _doc({"winner": {"after_entries": 200, "or_after": "7d"}})
    problems, compiled = check_document(doc)
    assert problems == [] and compiled is not None
    assert compiled.goals["order.paid"][0].next == "thanks"
    jsonschema.validate(doc, json.loads(DEFAULT_PATH.read_text()))


BAD_SPLITS = {
    "one path": ({"paths": PATHS[:1]}, "/steps/offer/paths", "at least 2"),
    "same path ids": ({"paths": [PATHS[0], PATHS[0]]}, "/steps/offer/paths/1/id", 'path id "a" is used twice'),
    "zero weight": ({"paths": [{**PATHS[0], "weight": 0}, PATHS[1]]}, "/steps/offer/paths/0/weight",
                    "greater than or equal to 1"),
    "bad path id": ({"paths": [{**PATHS[0], "id": "a b"}, PATHS[1]]}, "/steps/offer/paths/0/id", "pattern"),
    "winner without a rule": ({"winner": {}}, "/steps/offer/winner", "after_entries, or_after or both"),
    "winner without a goal": ({"winner": {"after_entries": 5}, "goal": None}, "/steps/offer",
                              "name the split's goal"),
    "bad or_after": ({"winner": {"or_after": "soon"}}, "/steps/offer/winner/or_after", ""),
    "unknown goal": ({"goal": "purchsed"}, "/steps/offer/goal", 'unknown goal "purchsed" (did you mean "purchased"?)'),
    "unknown path target": ({"paths": [{**PATHS[0], "next": "nowhere"}, PATHS[1]]}, "/steps/offer/paths/0/next",
                            'unknown step "nowhere"'),
}


@pytest.mark.parametrize(("split", "pointer", "words"), BAD_SPLITS.values(), ids=BAD_SPLITS.keys())
def test_a_bad_split_is_reported_at_its_pointer(split: dict[str, Any], pointer: str, words: str) -> None:
    doc = _doc({k: v for k, v in split.items() if v is not None})
    if split.get("goal", "") is None:
        del doc["steps"]["offer"]["goal"]
    found = errors(doc)
    assert any(p == pointer and words in m for p, m in found), found


BAD_GOALS = {
    "unknown next": ({"purchased": {"on": "order.paid", "next": "nope"}}, "/goals/purchased/next",
                     'unknown step "nope"'),
    "bad event type": ({"purchased": {"on": "Order Paid"}}, "/goals/purchased/on", "pattern"),
    "unknown key": ({"purchased": {"on": "order.paid", "then": "thanks"}}, "/goals/purchased/then", "unknown key"),
    "bad name": ({"a b": {"on": "order.paid"}}, "/goals/a b", ""),
}


@pytest.mark.parametrize(("goals", "pointer", "words"), BAD_GOALS.values(), ids=BAD_GOALS.keys())
def test_a_bad_goal_is_reported_at_its_pointer(goals: dict[str, Any], pointer: str, words: str) -> None:
    doc = _doc(goals={**goals, "purchased": goals.get("purchased", GOALS["purchased"])})
    found = errors(doc)
    assert any(p.startswith(pointer) and words in m for p, m in found), found


BAD_PAUSES = {
    "event without its type": ({"on": "event", "next": "end"}, '"event" (the event type'),
    "type on another kind": ({"on": "message", "event": "order.paid"}, '"event" (the event type'),
    "match on another kind": ({"on": "message", "match": {"a": 1}}, '"event" (the event type'),
    "condition without if": ({"on": "condition", "next": "end"}, '"if" (the condition to wait for)'),
    "if on another kind": ({"on": "event", "event": "order.paid",
                            "if": {"field": "lead.price", "op": "gt", "value": 1}}, '"if" (the condition'),
}


@pytest.mark.parametrize(("event", "words"), BAD_PAUSES.values(), ids=BAD_PAUSES.keys())
def test_a_bad_pause_event_is_reported_at_its_pointer(event: dict[str, Any], words: str) -> None:
    doc = flow({"wait": {"type": "pause", "until": [event]}, "end": STOP})
    found = errors(doc)
    assert any(p == "/steps/wait/until/0" and words in m for p, m in found), found


def test_a_goals_step_counts_as_reachable() -> None:
    doc = _doc()
    assert not [w for w in warnings(doc) if w[0] == "/steps/thanks"]
    doc["goals"] = {"purchased": {"on": "order.paid"}}
    assert ("/steps/thanks", "step cannot be reached from the start") in warnings(doc)


def test_a_loop_through_a_condition_pause_can_run_without_waiting() -> None:
    doc = flow({"wait": {"type": "pause", "until": [
        {"on": "condition", "if": {"field": "lead.price", "op": "gt", "value": 1}, "next": "again"}]},
        "again": {"type": "goto", "step": "wait"}})
    assert any("can run without ever waiting" in m for _, m in errors(doc))
    doc["steps"]["wait"]["until"].append({"on": "timer", "after": "1h", "next": "again"})
    assert any("can run without ever waiting" in m for _, m in errors(doc))  # the condition may hold at once
