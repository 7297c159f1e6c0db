"""check_document's warnings: unreachable steps and questions without a fallback; a document
with only warnings compiles and keeps them; errors are listed first, each problem once."""

from __future__ import annotations

from typing import Any

import pytest

from bot.builder import check_document, compile_document
from bot.builder import compiled as c
from bot.errors import Problem

from .helpers import STOP, UNREACHABLE, flow, lst, message, rows

NO_FALLBACK = (
    "waits for a reply but has neither other_answer nor no_answer: "
    "an unexpected reply leaves the customer without an answer"
)


def test_unreachable_step_is_a_warning_and_the_flow_compiles() -> None:
    doc = flow({"hello": message("Hi"), "orphan": message("nobody comes here")})
    problems, compiled = check_document(doc)
    assert problems == [Problem("/steps/orphan", UNREACHABLE, "warning")]
    assert compiled is not None
    assert compiled.warnings == ("/steps/orphan: step cannot be reached from the start",)


def test_step_reached_only_through_failed_or_no_answer_is_reachable() -> None:
    doc = flow({
        "hello": message("Hi", buttons=[{"title": "Go", "next": "end"}], failed="oops",
                         no_answer={"after": "1h", "next": "nudge"}),
        "oops": {"type": "internal_message", "text": "delivery failed", "to": ["team:sales"]},
        "nudge": message("Still there?"),
        "end": STOP,
    })
    assert check_document(doc)[0] == []


def test_waiting_message_without_fallback_is_a_warning() -> None:
    doc = flow({
        "ask": message("Pick", buttons=[{"title": "A", "next": "end"}, {"title": "Site", "url": "https://x.example"}]),
        "end": STOP,
    })
    problems, compiled = check_document(doc)
    assert problems == [Problem("/steps/ask", NO_FALLBACK, "warning")]
    assert compiled is not None


def test_waiting_list_without_fallback_is_a_warning() -> None:
    step = lst([{"title": "A", "rows": rows(2, "end")}], target="end")
    del step["other_answer"]
    problems, compiled = check_document(flow({"ask": step, "end": STOP}))
    assert problems == [Problem("/steps/ask", NO_FALLBACK, "warning")]
    assert compiled is not None


@pytest.mark.parametrize("fallback", [{"other_answer": "end"}, {"no_answer": {"after": "1h", "next": "end"}}])
def test_either_fallback_silences_the_warning(fallback: dict[str, Any]) -> None:
    doc = flow({"ask": message("Pick", buttons=[{"title": "A", "next": "end"}], **fallback), "end": STOP})
    assert check_document(doc)[0] == []


def test_message_with_only_link_buttons_does_not_wait_and_is_not_warned() -> None:
    doc = flow({"hi": message("See", buttons=[{"title": "Site", "url": "https://x.example"}], next="end"),
                "end": STOP})
    problems, compiled = check_document(doc)
    assert problems == []
    assert compiled is not None
    step = compiled.steps["hi"]
    assert isinstance(step, c.CMessage) and step.waits is False


def test_document_with_only_warnings_compiles_and_keeps_them() -> None:
    doc = flow({
        "ask": message("Pick", buttons=[{"title": "A", "next": "end"}]),
        "end": STOP,
        "lost": STOP,
    })
    compiled = compile_document(doc)
    assert sorted(compiled.warnings) == [
        f"/steps/ask: {NO_FALLBACK}",
        "/steps/lost: step cannot be reached from the start",
    ]


def test_errors_come_before_warnings_sorted_by_pointer_without_duplicates() -> None:
    doc = flow({
        "zz": message("Hi {{ x", buttons=[{"title": "A", "next": "b"}]),
        "b": {"type": "goto", "step": "nowhere"},
        "orphan": STOP,
    })
    problems, _ = check_document(doc)
    assert [(p.severity, p.pointer) for p in problems] == [
        ("error", "/steps/b/step"), ("error", "/steps/zz/text"),
        ("warning", "/steps/orphan"), ("warning", "/steps/zz"),
    ]

