"""check_document on the document as a whole: not an object, missing or unknown top-level keys,
the size limit, builder metadata (x-* keys) and the settings (timezone, working hours, budget)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from bot.builder import check_document
from bot.builder.validate import MAX_DOCUMENT_BYTES
from bot.errors import Problem

from .helpers import STOP, errors, flow


@pytest.mark.parametrize("doc", [None, [], "flow", 3, True])
def test_a_document_that_is_not_an_object(doc: Any) -> None:
    assert check_document(doc) == ([Problem("", "a flow is a JSON object")], None)


def test_an_empty_object_lists_every_missing_key() -> None:
    assert errors({}) == [
        ("/format", "required"), ("/id", "required"), ("/start", "required"), ("/steps", "required"),
    ]


def test_wrong_format_and_unknown_top_level_key() -> None:
    doc = flow({"a": STOP}, format="salesbot.flow/2", colour="red")
    assert errors(doc) == [
        ("/colour", 'unknown key "colour"'),
        ("/format", '"salesbot.flow/2" is not one of: salesbot.flow/1 (did you mean "salesbot.flow/1"?)'),
    ]


def test_a_key_known_elsewhere_is_not_suggested_as_itself() -> None:
    assert errors(flow({"a": {"type": "stop", "title": "x"}})) == [("/steps/a/title", 'unknown key "title"')]


def test_empty_steps() -> None:
    assert errors(flow({}, start="a")) == [("/steps", "needs at least 1 item(s)")]


def test_document_too_large() -> None:
    big = "x" * (MAX_DOCUMENT_BYTES + 1)
    problems, compiled = check_document(flow({"a": STOP}, **{"x-blob": big}))
    assert compiled is None
    assert problems[0].pointer == ""
    assert re.fullmatch(rf"the document is \d+ bytes; at most {MAX_DOCUMENT_BYTES} are allowed",
                        problems[0].message)


def test_builder_metadata_keys_are_accepted_everywhere_and_kept_in_the_source() -> None:
    doc = flow({
        "hello": {"type": "message", "text": "Hi", "x-pos": [1, 2],
                  "buttons": [{"title": "Go", "next": "check", "x-color": "red"}], "other_answer": "check"},
        "check": {"type": "condition", "x-note": "…", "branches": [
            {"if": {"field": "message.text", "op": "eq", "value": "a", "x-why": 1}, "next": "act", "x-b": 0}]},
        "act": {"type": "action", "actions": [{"do": "add_note", "text": "n", "x-id": 7}]},
    }, **{"x-canvas": {"zoom": 1.5}})
    doc["settings"] = {"timezone": "UTC", "x-theme": "dark"}
    problems, compiled = check_document(doc)
    assert problems == []
    assert compiled is not None
    assert compiled.source["x-canvas"] == {"zoom": 1.5}
    assert compiled.source["steps"]["hello"]["x-pos"] == [1, 2]


def test_settings_are_checked_even_when_the_rest_of_the_envelope_fails() -> None:
    """Regression: a bad bot id used to hide a bad timezone and bad working hours."""
    doc = flow({"a": STOP}, id="Bad Id", settings={"timezone": "Nowhere/City",
                                                    "working_hours": {"mon": "9-18"}})
    assert errors(doc) == [
        ("/id", '"Bad Id" is not a bot id: lower-case letters, digits, _ and -, up to 64'),
        ("/settings/timezone", 'unknown timezone "Nowhere/City" (use an IANA name such as "Europe/Istanbul")'),
        ("/settings/working_hours", '"9-18" is not a time range like "09:00-18:00"'),
    ]


@pytest.mark.parametrize("tz", ["Europe", "", "../etc/passwd", "x" * 300, "UTC\x00"])
def test_odd_timezones_are_problems_not_exceptions(tz: str) -> None:
    """Regression: "Europe" (a directory of the tz database) raised IsADirectoryError."""
    assert errors(flow({"a": STOP}, settings={"timezone": tz})) == [
        ("/settings/timezone", f'unknown timezone "{tz}" (use an IANA name such as "Europe/Istanbul")')
    ]


@pytest.mark.parametrize(("hours", "message_"), [
    ({"mon": "18:00-09:00"}, '"18:00-09:00" ends before it starts'),
    ({"mon": "25:00-26:00"}, '"25:00" is not a time of day'),
    ({"mon": "09:00-18:00,"}, '"09:00-18:00," is not a time range like "09:00-18:00"'),
    ({"mon": "²:00-18:00"}, '"²:00-18:00" is not a time range like "09:00-18:00"'),
    ({"funday": "09:00-18:00"}, '"funday" is not a day or day range (use mon..sun, e.g. "mon-fri")'),
])
def test_bad_working_hours(hours: dict[str, str], message_: str) -> None:
    assert errors(flow({"a": STOP}, settings={"working_hours": hours})) == [("/settings/working_hours", message_)]


def test_working_hours_value_must_be_a_string() -> None:
    assert errors(flow({"a": STOP}, settings={"working_hours": {"mon": 9}})) == [
        ("/settings/working_hours/mon", "Input should be a valid string")
    ]


def test_step_budget_limits() -> None:
    assert errors(flow({"a": STOP}, settings={"step_budget": 0})) == [
        ("/settings/step_budget", "Input should be greater than or equal to 1")
    ]

