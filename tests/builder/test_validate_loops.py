"""check_document's loop check: a loop must wait for the customer somewhere (a reply, a timer, a
widget callback, a called bot); one that can run without waiting is an error at the edge closing it."""

from __future__ import annotations

from typing import Any

import pytest

from bot.builder import check_document

from .helpers import STOP, UNREACHABLE, errors, flow, lst, message, rows

WAITING_LOOPS = {
    "button reply": {
        "ask": message("Again?", buttons=[{"title": "Yes", "next": "again"}], other_answer="again"),
        "again": {"type": "goto", "step": "ask"},
    },
    "no_answer timer": {
        "ask": message("Still there?", buttons=[{"title": "Yes", "next": "done"}],
                       no_answer={"after": "1h", "next": "again"}),
        "again": {"type": "goto", "step": "ask"},
        "done": STOP,
    },
    "list row": {
        "ask": lst([{"title": "A", "rows": rows(2, "again")}], target="again"),
        "again": {"type": "action", "actions": [{"do": "add_note", "text": "picked"}], "next": "ask"},
    },
    "pause for a message": {
        "ask": {"type": "pause", "next": "check"},
        "check": {"type": "condition", "branches": [
            {"if": {"field": "message.text", "op": "eq", "value": "stop"}, "next": "done"}], "else": "ask"},
        "done": STOP,
    },
    "pause with a timer": {
        "ask": {"type": "pause", "until": [{"on": "timer", "after": "1d", "next": "again"}]},
        "again": {"type": "goto", "step": "ask"},
    },
    "widget that waits": {
        "call": {"type": "widget", "widget": "http_request", "params": {"url": "https://x.example"},
                 "wait": {"timeout": "10m", "on_timeout": "call"}, "next": "again"},
        "again": {"type": "goto", "step": "call"},
    },
    "start_bot call": {
        "call": {"type": "start_bot", "bot": "qualify", "next": "again"},
        "again": {"type": "goto", "step": "call"},
    },
}


@pytest.mark.parametrize("steps", WAITING_LOOPS.values(), ids=list(WAITING_LOOPS))
def test_a_loop_through_a_waiting_step_is_accepted(steps: dict[str, Any]) -> None:
    problems, compiled = check_document(flow(steps))
    assert [str(p) for p in problems] == []
    assert compiled is not None


def test_steps_referenced_only_by_a_broken_step_are_not_called_unreachable() -> None:
    """Regression: the references of a step that failed the schema were ignored for reachability."""
    doc = flow({
        "hello": {"type": "message", "text": "Hi", "buttons": [{"title": "A", "next": "a"}],
                  "other_answer": "b", "colour": "red"},
        "a": STOP, "b": STOP, "lost": STOP,
    })
    problems, _ = check_document(doc)
    assert [(p.severity, p.pointer, p.message) for p in problems] == [
        ("error", "/steps/hello/colour", 'unknown key "colour"'),
        ("warning", "/steps/lost", UNREACHABLE),
    ]


def test_a_loop_through_a_plain_message_next_is_not_waiting() -> None:
    doc = flow({"a": message("one", next="b"), "b": message("two", next="a")})
    assert errors(doc) == [("/steps/b/next", "loop a → b → a can run without ever waiting for the customer")]


def test_a_pause_racing_working_hours_against_a_message_does_not_wait_while_open() -> None:
    doc = flow({
        "send": message("Hi", next="wait"),
        "wait": {"type": "pause", "until": [{"on": "message", "next": "send"},
                                            {"on": "working_hours", "next": "send"}]},
    })
    assert errors(doc) == [
        ("/steps/wait/until/1/next", "loop send → wait → send can run without ever waiting for the customer")
    ]


def test_a_step_that_goes_to_itself_is_a_loop() -> None:
    assert errors(flow({"self": {"type": "goto", "step": "self"}})) == [
        ("/steps/self/step", "loop self → self can run without ever waiting for the customer")
    ]


def test_a_loop_through_action_failed_is_a_loop() -> None:
    doc = flow({"act": {"type": "action", "actions": [{"do": "add_note", "text": "x"}],
                        "next": "end", "failed": "act"}, "end": STOP})
    assert errors(doc) == [
        ("/steps/act/failed", "loop act → act can run without ever waiting for the customer")
    ]


def test_round_robin_loop_without_wait_is_a_loop() -> None:
    doc = flow({"rr": {"type": "round_robin", "options": ["x", "y"]},
                "x": {"type": "goto", "step": "rr"}, "y": STOP})
    assert errors(doc) == [("/steps/x/step", "loop rr → x → rr can run without ever waiting for the customer")]

