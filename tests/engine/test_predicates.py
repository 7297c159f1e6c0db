"""Condition predicates (``bot.engine.predicates``), compiled from real condition steps."""

from __future__ import annotations

import math
from typing import Any

import pytest
import regex
from hypothesis import given
from hypothesis import strategies as st

from bot.builder.compiled import CPredicate
from bot.builder.templates import TemplateFailed
from bot.engine import predicates
from bot.engine.predicates import as_number, compile_predicate, holds, is_empty, lookup, search

from .helpers import make_flow

CONTEXT: dict[str, Any] = {
    "message": {"text": "What's the PRICE of order #123?"},
    "lead": {
        "price": 1500,
        "tags": ["VIP", "new"],
        "stage": "Won",
        "fields": {"budget": "10", "empty": ""},
    },
    "contact": {"name": "Ann", "phone": None, "tags": []},
    "vars": {
        "n": "10",
        "small": "9",
        "word": "banana",
        "list": ["x", "b"],
        "pattern": "^ann$",
        "bad": "(",
        "evil": "(a|aa)+$",
        "long": "a" * 36 + "!",
        "csv": "red, green",
    },
}


def pred(p: dict[str, Any]) -> CPredicate:
    flow = make_flow(
        {"c": {"type": "condition", "branches": [{"if": p, "next": "s"}]}, "s": {"type": "stop"}}
    )
    return flow.steps["c"].branches[0][0]  # type: ignore[attr-defined, no-any-return]


def both(p: CPredicate, context: dict[str, Any]) -> bool:
    """``holds`` and the compiled closure the condition step runs: they must agree."""
    result = holds(p, context)
    assert compile_predicate(p)(context) is result
    return result


def leaf(field: str, op: str, value: Any = None) -> bool:
    p: dict[str, Any] = {"field": field, "op": op}
    if value is not None:
        p["value"] = value
    return both(pred(p), CONTEXT)


@pytest.mark.parametrize(
    ("field", "op", "value", "expected"),
    [
        # eq / ne: text ignores case, numbers compare as numbers
        ("lead.stage", "eq", "won", True),
        ("lead.stage", "eq", "Lost", False),
        ("lead.price", "eq", "1500", True),
        ("lead.price", "eq", "1500.0", True),
        ("lead.fields.budget", "eq", 10, True),
        ("lead.fields.missing", "eq", "", True),
        ("lead.stage", "ne", "WON", False),
        ("lead.stage", "ne", "Lost", True),
        ("lead.tags", "eq", ["vip", "NEW"], True),
        ("lead.tags", "eq", ["vip"], False),
        # contains: text (case-insensitive) and list (an element equals the value)
        ("message.text", "contains", "price", True),
        ("message.text", "contains", "cost", False),
        ("lead.tags", "contains", "vip", True),
        ("lead.tags", "contains", "vi", False),
        ("message.text", "not_contains", "price", False),
        ("lead.tags", "not_contains", "old", True),
        # starts_with
        ("message.text", "starts_with", "what's", True),
        ("message.text", "starts_with", "price", False),
        # matches: a regular expression, case-insensitive
        ("message.text", "matches", r"#\d+", True),
        ("message.text", "matches", "price of", True),
        ("message.text", "matches", r"^\d+$", False),
        ("contact.name", "matches", "{{ vars.pattern }}", True),
        (
            "contact.name",
            "matches",
            "{{ vars.bad }}",
            False,
        ),  # a templated pattern that does not compile
        # in / not_in: a list or comma-separated text; a list field matches if any element is in
        ("lead.stage", "in", ["won", "lost"], True),
        ("lead.stage", "in", "Won, Lost", True),
        ("lead.stage", "in", ["Lost"], False),
        ("vars.list", "in", ["b"], True),
        ("lead.stage", "not_in", ["lost"], True),
        ("lead.stage", "not_in", ["WON"], False),
        ("lead.stage", "in", "{{ vars.csv }}", False),
        # gt/gte/lt/lte: numbers when both read as numbers, text otherwise
        ("vars.n", "gt", "9", True),
        ("vars.n", "gt", "{{ vars.small }}", True),
        ("vars.small", "lt", "10", True),
        ("lead.price", "gte", 1500, True),
        ("lead.price", "gt", 1500, False),
        ("lead.price", "lte", "1500,0", True),
        ("vars.word", "gt", "apple", True),
        ("vars.word", "lt", "Cherry", True),
        ("vars.n", "gt", "9a", False),  # "9a" is not a number: "10" < "9a" as text
        ("lead.fields.missing", "gt", 1, False),
        ("lead.fields.missing", "lt", 1, False),
        # between [lo, hi], inclusive
        ("lead.price", "between", [1000, 2000], True),
        ("lead.price", "between", [1500, "1500"], True),
        ("lead.price", "between", [1501, 2000], False),
        ("vars.word", "between", ["apple", "cherry"], True),
        ("lead.fields.missing", "between", [0, 1], False),
        # has: a list holds the value (text: comma-separated)
        ("lead.tags", "has", "vip", True),
        ("lead.tags", "has", "old", False),
        ("vars.csv", "has", "green", True),
        ("contact.phone", "has", "x", False),
    ],
)
def test_leaf_operators(field: str, op: str, value: Any, expected: bool) -> None:
    assert leaf(field, op, value) is expected


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("contact.phone", True),  # None
        ("lead.fields.empty", True),
        ("contact.tags", True),
        ("lead.fields.missing", True),
        ("nothing.at.all", True),
        ("lead.tags", False),
        ("lead.price", False),
    ],
)
def test_empty_and_not_empty(field: str, expected: bool) -> None:
    assert leaf(field, "empty") is expected
    assert leaf(field, "not_empty") is (not expected)


def test_matches_with_a_catastrophic_templated_pattern_is_false(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(predicates, "REGEX_TIMEOUT", 0.01)
    assert leaf("vars.long", "matches", "{{ vars.evil }}") is False


def test_search_times_out_as_no_match(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(predicates, "REGEX_TIMEOUT", 0.01)
    evil = regex.compile(r"(a|aa)+$")
    text = "a" * 36 + "!"
    with pytest.raises(TimeoutError):
        evil.search(text, timeout=0.01)
    assert search(evil, text) is None
    assert search(regex.compile("a!"), text) is not None


@pytest.mark.parametrize(
    ("p", "expected"),
    [
        (
            {
                "all": [
                    {"field": "lead.tags", "op": "has", "value": "vip"},
                    {"expr": "lead.price > 1000"},
                ]
            },
            True,
        ),
        (
            {
                "all": [
                    {"field": "lead.tags", "op": "has", "value": "vip"},
                    {"expr": "lead.price > 2000"},
                ]
            },
            False,
        ),
        (
            {
                "any": [
                    {"field": "lead.tags", "op": "has", "value": "old"},
                    {"expr": "lead.price > 1000"},
                ]
            },
            True,
        ),
        (
            {
                "any": [
                    {"field": "lead.tags", "op": "has", "value": "old"},
                    {"expr": "lead.price > 2000"},
                ]
            },
            False,
        ),
        ({"not": {"field": "lead.stage", "op": "eq", "value": "won"}}, False),
        ({"not": {"not": {"field": "lead.stage", "op": "eq", "value": "won"}}}, True),
        ({"expr": "'vip' in lead.tags|map('lower')|list"}, True),
        ({"expr": "vars.missing"}, False),
        ({"expr": "message.text|length > 10"}, True),
    ],
)
def test_combinators_and_expressions(p: dict[str, Any], expected: bool) -> None:
    assert both(pred(p), CONTEXT) is expected


def test_an_expression_that_fails_raises_template_failed() -> None:
    p = pred({"expr": "vars.missing + 1 > 0"})
    with pytest.raises(TemplateFailed):
        holds(p, CONTEXT)
    with pytest.raises(TemplateFailed):
        compile_predicate(p)(CONTEXT)


_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(-5, 5), st.just(math.nan),
                     st.sampled_from(["", " 3 ", "3", "2,5", "won", "Won", "x"]))
_VALUES = st.one_of(_SCALARS, st.lists(_SCALARS, max_size=3))


@given(op=st.sampled_from(["eq", "ne", "gt", "gte", "lt", "lte", "contains", "in", "has", "empty", "between"]),
       actual=_VALUES, expected=_VALUES, where=st.sampled_from(["vars.x", "vars.x.y", "vars", "lead.missing"]))
def test_a_compiled_leaf_agrees_with_holds(op: str, actual: Any, expected: Any, where: str) -> None:
    """Every operator, on numbers, text, booleans, lists and missing values, constant or templated."""
    context: dict[str, Any] = {"vars": {"x": actual, "t": expected}, "lead": {}}
    for value in (expected, "{{ vars.t }}"):
        p: dict[str, Any] = {"field": where, "op": op}
        if op != "empty":
            p["value"] = value
        try:
            compiled = pred(p)
        except Exception:  # a value the flow format refuses for this operator
            continue
        both(compiled, context)


@pytest.mark.parametrize(
    ("value", "number"),
    [
        (5, 5.0),
        (1.5, 1.5),
        ("10", 10.0),
        (" 12 ", 12.0),
        ("1,5", 1.5),
        ("-3", -3.0),
        ("+2.", 2.0),
        (".5", 0.5),
        ("1 000", 1000.0),
        (True, None),
        ("1e5", None),
        ("ten", None),
        (None, None),
        ([], None),
    ],
)
def test_as_number(value: Any, number: float | None) -> None:
    assert as_number(value) == number


def test_lookup_walks_dicts_and_list_indexes() -> None:
    assert lookup(CONTEXT, ("lead", "tags", "1")) == "new"
    assert lookup(CONTEXT, ("lead", "tags", "5")) is None
    assert lookup(CONTEXT, ("lead", "price", "x")) is None
    assert lookup(CONTEXT, ("contact", "phone")) is None
    assert leaf("lead.tags.0", "eq", "vip") is True


@pytest.mark.parametrize(
    ("value", "empty"),
    [
        (None, True),
        ("", True),
        ("   ", True),
        ([], True),
        ({}, True),
        ((), True),
        ("x", False),
        (0, False),
        (False, False),
        ([0], False),
    ],
)
def test_is_empty(value: Any, empty: bool) -> None:
    assert is_empty(value) is empty
