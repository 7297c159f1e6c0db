"""check_document / compile_document: every problem at once, each with its JSON pointer.

The per-kind cases below are also merged into ONE document, which must report the union of
their problems: validation never stops at the first error.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Mapping
from datetime import UTC
from types import MappingProxyType
from typing import Any

import pytest

from bot.builder import CompiledFlow, check_document, compile_document
from bot.builder import compiled as c
from bot.builder.templates import Template
from bot.builder.validate import MAX_DOCUMENT_BYTES, pointer
from bot.errors import FlowInvalid, Problem

STEP_TYPES = (
    "action, comment, condition, custom, goto, internal_message, list, message, pause, "
    "round_robin, start_bot, stop, subscribe, validation, widget"
)
ACTIONS = (
    "add_note, add_task, change_responsible, change_stage, complete_tasks, create_form, "
    "create_lead, meta_conversion, send_email, send_webhook, set_chat_status, set_field, "
    "set_variable, subscribers, tags"
)
#: Jinja's own wording after our prefix (it varies with the Jinja version and compile path).
JINJA = re.compile(r"template does not compile: .+ \(line 1\)")
STOP: dict[str, Any] = {"type": "stop"}
UNREACHABLE = "step cannot be reached from the start"
NO_FALLBACK = (
    "waits for a reply but has neither other_answer nor no_answer: "
    "an unexpected reply leaves the customer without an answer"
)

Expected = list[tuple[str, "str | re.Pattern[str]"]]


def flow(steps: Mapping[str, Any], **top: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "format": "salesbot.flow/1", "id": "test", "start": next(iter(steps), "start"),
        "steps": dict(steps),
    }
    doc.update(top)
    return doc


def errors(doc: Any) -> list[tuple[str, str]]:
    problems, compiled = check_document(doc)
    out = [(p.pointer, p.message) for p in problems if p.severity == "error"]
    if out:
        assert compiled is None, "a compiled flow came back together with errors"
    return out


def warnings(doc: Any) -> list[tuple[str, str]]:
    problems, _ = check_document(doc)
    return [(p.pointer, p.message) for p in problems if p.severity == "warning"]


def assert_problems(actual: list[tuple[str, str]], expected: Expected) -> None:
    """Same problems, one for one; expected messages may be regexes (full match)."""
    left = list(actual)
    missing = []
    for ptr, msg in expected:
        for i, (aptr, amsg) in enumerate(left):
            ok = msg.fullmatch(amsg) if isinstance(msg, re.Pattern) else msg == amsg
            if aptr == ptr and ok:
                del left[i]
                break
        else:
            missing.append((ptr, msg))
    assert not missing and not left, f"missing: {missing}\nunexpected: {left}"


def message(text: str, *, next: str | None = None, **extra: Any) -> dict[str, Any]:
    step: dict[str, Any] = {"type": "message", "text": text, **extra}
    if next is not None:
        step["next"] = next
    return step


def rows(n: int, target: str) -> list[dict[str, Any]]:
    return [{"title": f"Row {i}", "next": target} for i in range(n)]


def lst(sections: list[dict[str, Any]], *, button: str = "Open", target: str) -> dict[str, Any]:
    return {"type": "list", "text": "Pick one", "button": button, "sections": sections,
            "other_answer": target}


def pause_timer(after: Any, target: str) -> dict[str, Any]:
    return {"type": "pause", "until": [{"on": "timer", "after": after, "next": target}]}


@dataclasses.dataclass
class Case:
    name: str
    steps: dict[str, Any]
    expected: Expected
    top: dict[str, Any] = dataclasses.field(default_factory=dict)


CASES = [
    Case("unknown step reference, with a hint", {
        "hello": message("Hi", buttons=[{"title": "Catalog", "next": "catalog"},
                                        {"title": "Cat", "next": "catlog"}], other_answer="catalog"),
        "catalog": STOP,
    }, [("/steps/hello/buttons/1/next", 'unknown step "catlog" (did you mean "catalog"?)')]),
    Case("unknown start", {"welcome": STOP},
         [("/start", 'unknown step "welcom" (did you mean "welcome"?)')], {"start": "welcom"}),
    Case("unknown step type, and the references of that step", {
        "typo_type": {"type": "mesage", "text": "Hi", "next": "typo_typ"},
    }, [("/steps/typo_type", f'unknown step type "mesage" (did you mean "message"?); one of: {STEP_TYPES}'),
        ("/steps/typo_type/next", 'unknown step "typo_typ" (did you mean "typo_type"?)')]),
    Case("unknown action", {
        "typo_action": {"type": "action", "actions": [{"do": "add_nte", "text": "x"}]},
    }, [("/steps/typo_action/actions/0",
         f'unknown action "add_nte" (did you mean "add_note"?); one of: {ACTIONS}')]),
    Case("unknown key (x-* keys are fine)", {
        "typo_key": {"type": "stop", "colse_chat": True, "x-canvas": {"x": 10, "y": 20}},
    }, [("/steps/typo_key/colse_chat", 'unknown key "colse_chat" (did you mean "close_chat"?)')]),
    Case("14 buttons", {
        "buttons14": message("Pick", buttons=[{"title": f"B{i}", "next": "buttons14"} for i in range(14)],
                             other_answer="buttons14"),
    }, [("/steps/buttons14/buttons", "at most 13 buttons, got 14")]),
    Case("11 list rows in all sections", {
        "rows11": lst([{"title": "A", "rows": rows(6, "rows11")},
                       {"title": "B", "rows": rows(5, "rows11")}], target="rows11"),
    }, [("/steps/rows11", "a list has at most 10 rows in all, this one has 11")]),
    Case("list row title over 24", {
        "row_title": lst([{"title": "A", "rows": [{"title": "x" * 25, "next": "row_title"}]}],
                         target="row_title"),
    }, [("/steps/row_title/sections/0/rows/0/title", "at most 24 characters, got 25")]),
    Case("list row description over 72", {
        "row_desc": lst([{"title": "A", "rows": [
            {"title": "Tea", "description": "d" * 73, "next": "row_desc"}]}], target="row_desc"),
    }, [("/steps/row_desc/sections/0/rows/0/description", "at most 72 characters, got 73")]),
    Case("list button over 20", {
        "list_button": lst([{"title": "A", "rows": rows(1, "list_button")}], button="b" * 21,
                           target="list_button"),
    }, [("/steps/list_button/button", "at most 20 characters, got 21")]),
    Case("round robin with 1 option", {
        "rr_one": {"type": "round_robin", "options": ["rr_one_end"]}, "rr_one_end": STOP,
    }, [("/steps/rr_one/options", "needs at least 2 item(s)")]),
    Case("round robin with 101 options", {
        "rr_many": {"type": "round_robin", "options": ["rr_many_end"] * 101}, "rr_many_end": STOP,
    }, [("/steps/rr_many/options", "at most 100 options, got 101")]),
    Case("duration in a bad format", {
        "dur_format": pause_timer("90 minutes", "dur_format"),
    }, [("/steps/dur_format/until/0/after",
         '"90 minutes" is not a duration (examples: "90s", "15m", "1h30m", "3d")')]),
    Case("pause over 8760h 60m 60s", {
        "dur_pause": pause_timer("8760h60m61s", "dur_pause"),
    }, [("/steps/dur_pause/until/0/after", "a timer can wait at most 8760h 60m 60s")]),
    Case("no_answer over 8760h 60m 60s", {
        "dur_na": message("Hi", buttons=[{"title": "Yes", "next": "dur_na"}],
                          no_answer={"after": 8760 * 3600 + 3661, "next": "dur_na"}),
    }, [("/steps/dur_na/no_answer/after", "a timer can wait at most 8760h 60m 60s")]),
    Case("durations of 0", {
        "dur_zero": pause_timer("0s", "dur_zero"),
        "dur_zero_na": message("Hi", buttons=[{"title": "Yes", "next": "dur_zero"}],
                               no_answer={"after": 0, "next": "dur_zero"}),
    }, [("/steps/dur_zero/until/0/after", "a timer must wait at least 1 second"),
        ("/steps/dur_zero_na/no_answer/after", "a timer must wait at least 1 second")]),
    Case("timer event without after", {
        "no_after": {"type": "pause", "until": [{"on": "timer", "next": "no_after"}]},
    }, [("/steps/no_after/until/0", 'a "timer" event needs after (a duration such as "1d")')]),
    Case("template in message text", {
        "tpl_text": message("Hi {{ contact.name }"),
    }, [("/steps/tpl_text/text", JINJA)]),
    Case("templates in action values", {
        "tpl_action": {"type": "action", "actions": [
            {"do": "set_variable", "name": "n", "value": "{{ vars.n + }}"},
            {"do": "add_note", "text": "{% if %}"},
            {"do": "send_webhook", "url": "https://example.com", "body": {"items": ["ok", "{{ x"]}},
        ]},
    }, [("/steps/tpl_action/actions/0/value", JINJA),
        ("/steps/tpl_action/actions/1/text", JINJA),
        ("/steps/tpl_action/actions/2/body/items/1", JINJA)]),
    Case("template in a button title", {
        "tpl_button": message("Hi", buttons=[{"title": "{{ contact.name", "next": "tpl_button"}],
                              other_answer="tpl_button"),
    }, [("/steps/tpl_button/buttons/0/title", JINJA)]),
    Case("regex in a validation rule", {
        "re_rule": {"type": "validation", "rules": [{"check": "regex", "pattern": "([a-z"}],
                    "pass": "re_rule_end", "fail": "re_rule_end"},
        "re_rule_end": STOP,
    }, [("/steps/re_rule/rules/0/pattern",
         "regular expression does not compile: unterminated character set at position 5")]),
    Case("regex in a condition", {
        "re_cond": {"type": "condition", "branches": [
            {"if": {"field": "message.text", "op": "matches", "value": "(*"}, "next": "re_cond_end"}]},
        "re_cond_end": STOP,
    }, [("/steps/re_cond/branches/0/if/value",
         "regular expression does not compile: nothing to repeat at position 1")]),
    Case("expr that does not compile", {
        "bad_expr": {"type": "condition", "branches": [
            {"if": {"all": [{"field": "lead.price", "op": "gt", "value": 1},
                            {"expr": "lead.price >"}]}, "next": "bad_expr_end"}]},
        "bad_expr_end": STOP,
    }, [("/steps/bad_expr/branches/0/if/all/1/expr", re.compile(r"expression does not compile: .+"))]),
    Case("goto <-> goto loop", {
        "loop_a": {"type": "goto", "step": "loop_b"}, "loop_b": {"type": "goto", "step": "loop_a"},
    }, [("/steps/loop_b/step",
         "loop loop_a → loop_b → loop_a can run without ever waiting for the customer")]),
    Case("condition -> action -> goto loop", {
        "chk": {"type": "condition", "branches": [
            {"if": {"field": "vars.n", "op": "lt", "value": 3}, "next": "cnt"}], "else": "chk_end"},
        "cnt": {"type": "action", "actions": [
            {"do": "set_variable", "name": "n", "value": "{{ vars.n + 1 }}"}], "next": "rty"},
        "rty": {"type": "goto", "step": "chk"},
        "chk_end": STOP,
    }, [("/steps/rty/step", "loop chk → cnt → rty → chk can run without ever waiting for the customer")]),
    Case("pause with only working_hours in a loop", {
        "wh_wait": {"type": "pause", "until": [{"on": "working_hours"}], "next": "wh_send"},
        "wh_send": message("We are open", next="wh_wait"),
    }, [("/steps/wh_wait/next",
         "loop wh_send → wh_wait → wh_send can run without ever waiting for the customer")]),
    Case("bad timezone", {"tz_only": STOP},
         [("/settings/timezone", 'unknown timezone "Mars/Olympus" (use an IANA name such as "Europe/Istanbul")')],
         {"settings": {"timezone": "Mars/Olympus"}}),
    Case("bad working hours", {"wh_only": STOP},
         [("/settings/working_hours", '"mon-fry" is not a day range (use mon..sun, e.g. "mon-fri")')],
         {"settings": {"working_hours": {"mon-fry": "09:00-18:00"}}}),
    Case("step ids with bad characters", {"ids_ok": STOP, "bad id!": STOP, "a/b~c": STOP}, [
        ("/steps/bad id!", '"bad id!" is not a step id: letters, digits, _ and -, up to 64'),
        ("/steps/a~1b~0c", '"a/b~c" is not a step id: letters, digits, _ and -, up to 64'),
    ]),
    Case("bot id with upper case", {"id_only": STOP},
         [("/id", '"Welcome" is not a bot id: lower-case letters, digits, _ and -, up to 64')],
         {"id": "Welcome"}),
    Case("set_field with both value and from, and with neither", {
        "sf": {"type": "action", "actions": [
            {"do": "set_field", "entity": "contact", "field": "email", "value": "x", "from": "message"},
            {"do": "set_field", "entity": "contact", "field": "email"},
        ]},
    }, [("/steps/sf/actions/0", 'set_field takes exactly one of value or from ("message" or "manual")'),
        ("/steps/sf/actions/1", 'set_field takes exactly one of value or from ("message" or "manual")')]),
    Case("buttons with both url and next, and with neither", {
        "btn_shape": message("Hi", buttons=[{"title": "Both", "url": "https://x.example", "next": "btn_shape"},
                                            {"title": "Neither"}], other_answer="btn_shape"),
    }, [("/steps/btn_shape/buttons/0", "a button has either url (a link) or next (a branch), not both"),
        ("/steps/btn_shape/buttons/1", "a button needs next (the step it leads to) or url (a link)")]),
    Case("widget wait timeout of 0 points at wait/timeout", {
        "wdg": {"type": "widget", "widget": "http_request", "wait": {"timeout": "0s"}, "next": "wdg"},
    }, [("/steps/wdg/wait/timeout", "a timer must wait at least 1 second")]),
    Case("widget without its widget name", {"wdg_bare": {"type": "widget"}},
         [("/steps/wdg_bare/widget", "required")]),
    Case("leaf predicate without a value", {
        "leaf": {"type": "condition", "branches": [
            {"if": {"not": {"field": "message.text", "op": "eq"}}, "next": "leaf"}]},
    }, [("/steps/leaf/branches/0/if/not", 'the operator "eq" needs a value')]),
]


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_each_kind_of_problem_is_reported_with_its_pointer(case: Case) -> None:
    assert_problems(errors(flow(case.steps, **case.top)), case.expected)


def test_every_problem_is_reported_at_once_in_one_document() -> None:
    steps: dict[str, Any] = {}
    top: dict[str, Any] = {"settings": {}}
    expected: Expected = []
    for case in CASES:
        assert not set(steps) & set(case.steps), "step ids must be unique across cases"
        steps.update(case.steps)
        for key, value in case.top.items():
            if key == "settings":
                top["settings"].update(value)
            else:
                top[key] = value
        expected += case.expected
    doc = flow(steps, **top)
    problems, compiled = check_document(doc)
    assert compiled is None
    assert_problems([(p.pointer, p.message) for p in problems if p.severity == "error"], expected)
    assert len(expected) >= 40


def test_broken_copy_reports_exactly_one_problem_each() -> None:
    doc = flow({
        "menu": message("Pick", buttons=[{"title": f"Option {i}", "next": "catalog"} for i in range(13)]
                        + [{"title": "More", "next": "catlog"}], other_answer="menu"),
        "catalog": {"type": "validation", "rules": [{"check": "regex", "pattern": "[0-9"}],
                    "pass": "again", "fail": "menu"},
        "again": {"type": "goto", "step": "retry"},
        "retry": {"type": "goto", "step": "again"},
    })
    problems, compiled = check_document(doc)
    assert compiled is None
    # No warnings: the steps "menu" leads to are reachable although "menu" itself is broken.
    assert [(p.pointer, p.message) for p in problems] == [
        ("/steps/catalog/rules/0/pattern",
         "regular expression does not compile: unterminated character set at position 4"),
        ("/steps/menu/buttons", "at most 13 buttons, got 14"),
        ("/steps/menu/buttons/13/next", 'unknown step "catlog" (did you mean "catalog"?)'),
        ("/steps/retry/step", "loop again → retry → again can run without ever waiting for the customer"),
    ]


# ------------------------------------------------------------------ loops that wait are fine
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


# ------------------------------------------------------------------ warnings
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


# ------------------------------------------------------------------ other document-level checks
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


def test_list_row_ids_must_be_unique() -> None:
    step = lst([{"title": "A", "rows": [{"id": "tea", "title": "Tea", "next": "l"},
                                         {"id": "tea", "title": "Tea again", "next": "l"}]}], target="l")
    assert errors(flow({"l": step})) == [("/steps/l/sections", 'row id "tea" is used twice')]


def test_matches_with_a_template_is_not_compiled_as_a_regex() -> None:
    doc = flow({"c": {"type": "condition", "branches": [
        {"if": {"field": "message.text", "op": "matches", "value": "{{ vars.pattern }}"}, "next": "e"}]},
        "e": STOP})
    assert errors(doc) == []


def test_matches_needs_a_string() -> None:
    doc = flow({"c": {"type": "condition", "branches": [
        {"if": {"field": "message.text", "op": "matches", "value": [1]}, "next": "e"}]}, "e": STOP})
    assert errors(doc) == [("/steps/c/branches/0/if/value", '"matches" takes a regular expression')]


def test_boundaries_that_are_allowed() -> None:
    doc = flow({
        "m13": message("Pick", buttons=[{"title": f"B{i}", "next": "rr2"} for i in range(13)], other_answer="rr2"),
        "rr2": {"type": "round_robin", "options": ["rr100", "l10"]},
        "rr100": {"type": "round_robin", "options": ["p"] * 100},
        "l10": lst([{"title": "A", "rows": [{"title": "t" * 24, "description": "d" * 72, "next": "p"}]
                     + rows(9, "p")}], button="b" * 20, target="p"),
        "p": pause_timer("8760h60m60s", "end"),
        "end": pause_timer(1, "m13"),
    })
    problems, compiled = check_document(doc)
    assert problems == []
    assert compiled is not None
    pause = compiled.steps["p"]
    assert isinstance(pause, c.CPause) and pause.until[0].after == 8760 * 3600 + 3660


def test_unknown_reference_in_every_kind_of_field() -> None:
    doc = flow({
        "m": message("Hi", buttons=[{"title": "A", "next": "x1"}], other_answer="x2",
                     no_answer={"after": "1h", "next": "x3"}, failed="x4"),
        "c": {"type": "condition", "branches": [{"if": {"expr": "true"}, "next": "x5"}], "else": "x6"},
        "v": {"type": "validation", "rules": [{"check": "length", "min": 1}], "pass": "x7", "fail": "x8"},
        "p": {"type": "pause", "until": [{"on": "message", "next": "x9"}, {"on": "timer", "after": "1h"}],
              "next": "x10"},
        "w": {"type": "widget", "widget": "http_request", "wait": {"timeout": "1m", "on_timeout": "x11"},
              "next": "x12", "failed": "x13"},
        "r": {"type": "round_robin", "options": ["x14", "m"]},
        "g": {"type": "goto", "step": "x15"},
    })
    unknown = dict(errors(doc))
    assert unknown == {
        "/steps/m/buttons/0/next": 'unknown step "x1"',
        "/steps/m/other_answer": 'unknown step "x2"',
        "/steps/m/no_answer/next": 'unknown step "x3"',
        "/steps/m/failed": 'unknown step "x4"',
        "/steps/c/branches/0/next": 'unknown step "x5"',
        "/steps/c/else": 'unknown step "x6"',
        "/steps/v/pass": 'unknown step "x7"',
        "/steps/v/fail": 'unknown step "x8"',
        "/steps/p/until/0/next": 'unknown step "x9"',
        "/steps/p/next": 'unknown step "x10"',
        "/steps/w/wait/on_timeout": 'unknown step "x11"',
        "/steps/w/next": 'unknown step "x12"',
        "/steps/w/failed": 'unknown step "x13"',
        "/steps/r/options/0": 'unknown step "x14"',
        "/steps/g/step": 'unknown step "x15"',
    }


def test_pointer_escapes_tilde_and_slash() -> None:
    assert pointer(["steps", "a/b", "x~y", 0]) == "/steps/a~1b/x~0y/0"
    assert pointer([]) == ""


# ------------------------------------------------------------------ compiled flows
WELCOME = {
    "format": "salesbot.flow/1",
    "id": "welcome",
    "name": "Welcome bot",
    "start": "hello",
    "settings": {"timezone": "Europe/Istanbul", "working_hours": {"mon-fri": "09:00-18:00"},
                 "step_budget": 50},
    "variables": {"discount": 10},
    "steps": {
        "hello": {"type": "message", "text": "Hi {{ contact.name }}!", "next": "menu"},
        "menu": {"type": "message",
                 "text": "How can we help, {{ contact.first_name | default('there') }}?",
                 "buttons": [{"title": "Catalog", "synonyms": ["Katalóg", " catalogue "], "next": "catalog"},
                             {"title": "Talk to a person", "next": "handoff"},
                             {"title": "Our website", "url": "https://example.com"}],
                 "other_answer": "menu", "no_answer": {"after": "2h", "next": "handoff"}},
        "catalog": {"type": "action", "actions": [
            {"do": "set_variable", "name": "attempts", "value": "{{ vars.attempts + 1 }}"},
            {"do": "tags", "entity": "lead", "add": ["catalog"]}], "next": "qualify"},
        "qualify": {"type": "start_bot", "bot": "qualify", "next": "handoff"},
        "handoff": {"type": "stop", "close_chat": False},
    },
}


def test_compile_document_returns_an_immutable_compiled_flow() -> None:
    flow_ = compile_document(copy.deepcopy(WELCOME), version=3)
    assert isinstance(flow_, CompiledFlow)
    assert (flow_.id, flow_.version, flow_.name, flow_.start, flow_.step_budget) == (
        "welcome", 3, "Welcome bot", "hello", 50)
    assert str(flow_.tz) == "Europe/Istanbul"
    assert flow_.called_bots == frozenset({"qualify"})
    assert set(flow_.steps) == {"hello", "menu", "catalog", "qualify", "handoff"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        flow_.start = "menu"  # type: ignore[misc]
    with pytest.raises(TypeError):
        flow_.steps["evil"] = flow_.steps["hello"]  # type: ignore[index]
    with pytest.raises(TypeError):
        flow_.variables["discount"] = 50  # type: ignore[index]
    assert isinstance(flow_.steps, MappingProxyType)
    with pytest.raises(dataclasses.FrozenInstanceError):
        flow_.steps["hello"].next = "handoff"  # type: ignore[misc]
    for step in flow_.steps.values():
        assert dataclasses.is_dataclass(step) and type(step).__dataclass_params__.frozen  # type: ignore[attr-defined]


def test_compiled_templates_are_ready_to_render() -> None:
    flow_ = compile_document(copy.deepcopy(WELCOME))
    hello, menu, catalog = flow_.steps["hello"], flow_.steps["menu"], flow_.steps["catalog"]
    assert isinstance(hello, c.CMessage) and isinstance(hello.text, Template)
    assert hello.text.render({"contact": {"name": "Ayşe"}}) == "Hi Ayşe!"
    assert isinstance(menu, c.CMessage) and menu.text is not None
    assert menu.text.render({"contact": {"first_name": None}}) == "How can we help, there?"
    assert menu.text.render({"contact": {"first_name": "Can"}}) == "How can we help, Can?"
    assert menu.waits is True
    assert menu.no_answer == (7200, "handoff")
    assert menu.buttons[0].keys == frozenset({"catalog", "katalog", "catalogue"})
    assert menu.buttons[2].next is None and menu.buttons[2].url is not None
    assert menu.buttons[0].payload != menu.buttons[1].payload
    assert isinstance(catalog, c.CActionStep)
    value = catalog.actions[0].params["value"]
    assert isinstance(value, Template) and value.value({"vars": {"attempts": 1}}) == 2
    with pytest.raises(TypeError):
        catalog.actions[0].params["value"] = "x"  # type: ignore[index]


def test_compiled_flow_hours_and_digest() -> None:
    from datetime import datetime

    a = compile_document(copy.deepcopy(WELCOME))
    b = compile_document(copy.deepcopy(WELCOME))
    assert a.digest == b.digest and len(a.digest) == 16
    changed = copy.deepcopy(WELCOME)
    changed["steps"]["hello"]["text"] = "Hello!"
    assert compile_document(changed).digest != a.digest
    # Wednesday 2026-11-25 06:30 UTC is 09:30 in Istanbul (UTC+3): open.
    assert a.hours.is_open(datetime(2026, 11, 25, 6, 30, tzinfo=UTC))
    assert not a.hours.is_open(datetime(2026, 11, 25, 5, 30, tzinfo=UTC))


def test_compile_document_raises_flow_invalid_with_every_problem() -> None:
    doc = flow({"a": {"type": "goto", "step": "b"}, "b": {"type": "goto", "step": "a"},
                "c": {"type": "goto", "step": "nowhere"}})
    with pytest.raises(FlowInvalid) as info:
        compile_document(doc)
    assert [str(p) for p in info.value.problems] == [
        "/steps/b/step: loop a → b → a can run without ever waiting for the customer",
        '/steps/c/step: unknown step "nowhere"',
        "/steps/c: step cannot be reached from the start",
    ]
    assert str(info.value).startswith("2 problem(s): /steps/b/step: loop a → b → a")


def test_check_document_does_not_modify_the_document() -> None:
    doc = copy.deepcopy(WELCOME)
    doc["x-canvas"] = {"zoom": 1}
    before = copy.deepcopy(doc)
    check_document(doc)
    assert doc == before
