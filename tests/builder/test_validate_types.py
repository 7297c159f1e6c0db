"""Values of the wrong JSON type are errors, as flows/schema.json has them, never converted.

Pydantic's lax mode read ``"yes"`` and ``"on"`` as true, ``"100"`` as 100 and ``true`` as 1
(second): the document validated and acted on a guess. Each wrong value is reported with its
pointer, all at once; what JSON Schema accepts (``2.0`` for an integer, a duration as a
string or a number) still is. Stored versions are read as before (``lenient_scalars``).
"""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from bot.builder import check_document
from bot.builder.model_base import lenient_scalars
from bot.builder.schema import flow_json_schema

from .helpers import STOP, errors, flow, message

SPLIT: dict[str, Any] = {"type": "split", "paths": [{"id": "a", "next": "end"}, {"id": "b", "next": "end"}]}


def _split(weight: Any) -> dict[str, Any]:
    return {**SPLIT, "paths": [{"id": "a", "weight": weight, "next": "end"}, {"id": "b", "next": "end"}]}


def _schema_accepts(doc: dict[str, Any]) -> bool:
    return jsonschema.Draft202012Validator(flow_json_schema()).is_valid(doc)


BAD: list[tuple[str, dict[str, Any], str, str]] = [
    ("leave_unanswered", flow({"hi": message("hi")}, settings={"leave_unanswered": "yes"}),
     "/settings/leave_unanswered", "must be true or false"),
    ("leave_unanswered 1", flow({"hi": message("hi")}, settings={"leave_unanswered": 1}),
     "/settings/leave_unanswered", "must be true or false"),
    ("close_chat", flow({"end": {"type": "stop", "close_chat": "on"}}),
     "/steps/end/close_chat", "must be true or false"),
    ("step_budget", flow({"hi": message("hi")}, settings={"step_budget": "100"}),
     "/settings/step_budget", "must be a whole number"),
    ("step_budget true", flow({"hi": message("hi")}, settings={"step_budget": True}),
     "/settings/step_budget", "must be a whole number"),
    ("weight", flow({"s": _split("2"), "end": STOP}), "/steps/s/paths/0/weight", "must be a whole number"),
    ("no_answer after", flow({"hi": message("hi", no_answer={"after": True, "next": "end"}), "end": STOP}),
     "/steps/hi/no_answer/after", 'a duration is a string like "15m" or a number of seconds'),
    ("unsubscribe_link", flow({"a": {"type": "action", "actions": [
        {"do": "send_email", "template": "t", "unsubscribe_link": "false"}]}}),
     "/steps/a/actions/0/unsubscribe_link", "must be true or false"),
    ("score", flow({"a": {"type": "action", "actions": [{"do": "score", "add": "5"}]}}),
     "/steps/a/actions/0/add", "must be a whole number"),
    ("stage", flow({"a": {"type": "action", "actions": [{"do": "change_stage", "stage": True}]}}),
     "/steps/a/actions/0/stage", "must be a string or a whole number"),
    ("rule min", flow({"v": {"type": "validation", "rules": [{"check": "length", "min": "3"}]}}),
     "/steps/v/rules/0/min", "must be a number"),
]


@pytest.mark.parametrize(("case", "doc", "at", "says"), BAD, ids=[b[0] for b in BAD])
def test_a_value_of_the_wrong_type_is_an_error(case: str, doc: dict[str, Any], at: str, says: str) -> None:
    assert (at, says) in errors(doc), case
    assert not _schema_accepts(doc), "flows/schema.json refuses it too"


def test_every_wrong_value_is_reported_at_once() -> None:
    doc = flow({"hi": message("bye", next="s", no_answer={"after": True, "next": "end"}),
                "s": _split("2"), "end": {"type": "stop", "close_chat": "on"}},
               settings={"leave_unanswered": "yes", "step_budget": "100"})
    assert errors(doc) == [
        ("/settings/leave_unanswered", "must be true or false"),
        ("/settings/step_budget", "must be a whole number"),
        ("/steps/end/close_chat", "must be true or false"),
        ("/steps/hi/no_answer/after", 'a duration is a string like "15m" or a number of seconds'),
        ("/steps/s/paths/0/weight", "must be a whole number"),
    ]


@pytest.mark.parametrize("doc", [
    flow({"hi": message("hi")}, settings={"leave_unanswered": True, "step_budget": 100.0}),
    flow({"s": _split(2.0), "end": {"type": "stop", "close_chat": False}}),
    flow({"hi": message("hi", no_answer={"after": "90", "next": "end"}), "end": STOP}),
    flow({"hi": message("hi", no_answer={"after": 90.0, "next": "end"}), "end": STOP}),
    flow({"a": {"type": "action", "actions": [{"do": "change_stage", "stage": "Won"},
                                              {"do": "change_responsible", "user": 17.0}]}}),
    flow({"v": {"type": "validation", "rules": [{"check": "length", "min": 3, "max": 9.5}]}}),
], ids=["bool and 100.0", "weight 2.0", "duration string", "duration 90.0", "text or int", "numbers"])
def test_what_the_schema_accepts_is_accepted(doc: dict[str, Any]) -> None:
    assert _schema_accepts(doc)
    assert errors(doc) == []


def test_stored_versions_read_wrong_types_as_before() -> None:
    doc = flow({"hi": message("bye", next="s", no_answer={"after": True, "next": "end"}),
                "s": _split("2"), "end": {"type": "stop", "close_chat": "on"}},
               settings={"leave_unanswered": "yes", "step_budget": "100"})
    with lenient_scalars():
        problems, compiled = check_document(doc)
    assert compiled is not None, problems
    assert compiled.leave_unanswered is True and compiled.step_budget == 100
    assert check_document(doc)[1] is None, "outside lenient_scalars, the same document is refused"
