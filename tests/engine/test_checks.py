"""The checks of validation steps (``bot.engine.checks``), with rules compiled from real steps."""

from __future__ import annotations

import time
from typing import Any

import pytest

from bot.builder.compiled import CRule
from bot.engine import predicates
from bot.engine.checks import check, find_email, find_phone, region_for_timezone

from .helpers import make_flow


def rule(**r: Any) -> CRule:
    flow = make_flow(
        {"v": {"type": "validation", "rules": [r], "pass": "s"}, "s": {"type": "stop"}}
    )
    return flow.steps["v"].rules[0]  # type: ignore[attr-defined, no-any-return]


def run_check(
    text: str, region: str | None = "TR", context: dict[str, Any] | None = None, **r: Any
) -> tuple[bool, Any]:
    return check(rule(**r), text, context or {"vars": {"code": "Promo24"}}, region)


@pytest.mark.parametrize(
    ("tz", "region"),
    [
        ("Europe/Istanbul", "TR"),
        ("Europe/London", "GB"),
        ("America/New_York", "US"),
        ("UTC", None),
        ("Nowhere/X", None),
    ],
)
def test_region_for_timezone(tz: str, region: str | None) -> None:
    assert region_for_timezone(tz) == region


@pytest.mark.parametrize(
    ("text", "region", "phone"),
    [
        ("my number is 0555 111 22 33", "TR", "+905551112233"),
        ("0555 111 22 33", None, None),  # without a region only international numbers are found
        ("call +44 20 7946 0958 please", "TR", "+442079460958"),
        ("+44 7911 123456", None, "+447911123456"),
        ("+90 (555) 111-22-33", "GB", "+905551112233"),
        ("order 12345", "TR", None),
        ("0123 456 78 90", "TR", None),  # the right length, but no Turkish number starts with 1
        ("+1 555 010 0000", "TR", None),
        ("", "TR", None),
    ],
)
def test_find_phone(text: str, region: str | None, phone: str | None) -> None:
    assert find_phone(text, region) == phone


@pytest.mark.parametrize(
    ("text", "email"),
    [
        ("mail me at John.Doe@Example.COM.", "John.Doe@example.com"),
        ("<ann@example.org>", "ann@example.org"),
        ("first bad@ then ok@example.net", "ok@example.net"),
        ("a@b", None),
        ("no mail here", None),
    ],
)
def test_find_email(text: str, email: str | None) -> None:
    assert find_email(text) == email


@pytest.mark.parametrize(
    ("r", "text", "result"),
    [
        ({"kind": "number"}, "I am 25 years old", (True, 25)),
        ({"kind": "number"}, "1,5 kg", (True, 1.5)),
        ({"kind": "number"}, "-3 degrees", (True, -3)),
        ({"kind": "number"}, "none", (False, None)),
        ({"kind": "letters"}, "123 abc 456", (True, "abc")),
        ({"kind": "letters"}, "Çağrı", (True, "Çağrı")),
        ({"kind": "letters"}, "123 456", (False, None)),
        ({"kind": "phone"}, "my number is 0555 111 22 33", (True, "+905551112233")),
        ({"kind": "phone"}, "+44 7911 123456", (True, "+447911123456")),
        ({"kind": "phone"}, "123", (False, None)),
        ({"kind": "email"}, "it's ANN@Example.com!", (True, "ANN@example.com")),
        ({"kind": "email"}, "ann at example", (False, None)),
        ({"kind": "range", "min": 1, "max": 5}, "I have 3 kids", (True, 3)),
        ({"kind": "range", "min": 1, "max": 5}, "7 or 4", (True, 4)),
        ({"kind": "range", "min": 1, "max": 5}, "10", (False, None)),
        ({"kind": "range", "min": 18}, "18", (True, 18)),
        ({"kind": "range", "max": 2.5}, "2,5", (True, 2.5)),
        ({"kind": "text", "value": "promo"}, "my PROMO code", (True, "promo")),
        ({"kind": "text", "value": "{{ vars.code }}"}, "code promo24 please", (True, "Promo24")),
        ({"kind": "text", "value": "promo"}, "nothing", (False, None)),
    ],
)
def test_contains(r: dict[str, Any], text: str, result: tuple[bool, Any]) -> None:
    ok, found = run_check(text, check="contains", **r)
    assert (ok, found) == result
    assert type(found) is type(result[1])


@pytest.mark.parametrize(
    ("r", "text", "ok"),
    [
        ({"kind": "number"}, "no digits", True),
        ({"kind": "number"}, "1 digit", False),
        ({"kind": "email"}, "a@example.com", False),
        ({"kind": "text", "value": "stop"}, "please STOP", False),
        ({"kind": "text", "value": "stop"}, "go on", True),
    ],
)
def test_not_contains_passes_with_the_whole_text(r: dict[str, Any], text: str, ok: bool) -> None:
    assert run_check(text, check="not_contains", **r) == (ok, text)


@pytest.mark.parametrize(
    ("c", "value", "text", "ok"),
    [
        ("equals", "yes", " YES ", True),
        ("equals", 10, "10.0", True),
        ("equals", "10", "1,0e1", False),
        ("equals", "{{ vars.code }}", "promo24", True),
        ("not_equals", "yes", "no", True),
        ("not_equals", "yes", "Yes", False),
    ],
)
def test_equals_and_not_equals(c: str, value: Any, text: str, ok: bool) -> None:
    assert run_check(text, check=c, value=value) == (ok, text)


@pytest.mark.parametrize(
    ("r", "text", "ok"),
    [
        ({"min": 3}, "abc", True),
        ({"min": 3}, " ab ", False),
        ({"max": 3}, "abcd", False),
        ({"min": 1, "max": 3}, "ab", True),
    ],
)
def test_length(r: dict[str, Any], text: str, ok: bool) -> None:
    assert run_check(text, check="length", **r) == (ok, text)


def test_regex_returns_the_matched_part_case_insensitively() -> None:
    assert run_check("order AB-123 please", check="regex", pattern=r"[a-z]{2}-\d+") == (
        True,
        "AB-123",
    )
    assert run_check("nothing", check="regex", pattern=r"\d") == (False, None)


def test_regex_that_runs_too_long_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(predicates, "REGEX_TIMEOUT", 0.01)
    text = "a" * 36 + "!"
    assert run_check(text, check="regex", pattern="(a+)+$") == (False, None)
    assert run_check(text, check="regex", pattern="(a|aa)+$") == (False, None)  # really times out


def test_find_email_is_linear_on_long_text_without_an_address() -> None:
    # A search for "[^…]+@[^…]+" from every position was quadratic: ~70 ms per 4,000 characters.
    started = time.process_time()
    for text in ["x" * 4000, "@" + "x" * 4000, "x" * 4000 + "@"] * 10:
        assert find_email(text) is None
    assert time.process_time() - started < 0.2
