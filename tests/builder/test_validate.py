"""check_document / compile_document: every problem at once, each with its JSON pointer.

The per-kind cases below are also merged into ONE document, which must report the union of
their problems: validation never stops at the first error. Then the checks of single fields
(row ids, ``matches`` patterns, references, the limits that are allowed) and the pointers.
Loops, warnings, the document as a whole and compiled flows have files of their own.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest

from bot.builder import check_document
from bot.builder import compiled as c
from bot.builder.validate import pointer

from .helpers import STOP, errors, flow, lst, message, pause_timer, rows

STEP_TYPES = (
    "action, comment, condition, custom, goto, internal_message, list, message, pause, "
    "round_robin, split, start_bot, stop, subscribe, validation, widget"
)
ACTIONS = (
    "add_note, add_task, change_responsible, change_stage, complete_tasks, create_form, "
    "create_lead, end_process, lists, meta_conversion, notify, order_link, score, send_email, send_message, send_sms, "
    "send_webhook, set_chat_status, set_field, set_variable, start_process, subscribers, tags"
)
#: Jinja's own wording after our prefix (it varies with the Jinja version and compile path).
JINJA = re.compile(r"template does not compile: .+ \(line 1\)")

Expected = list[tuple[str, "str | re.Pattern[str]"]]


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


def test_list_row_ids_must_be_unique() -> None:
    step = lst([{"title": "A", "rows": [{"id": "tea", "title": "Tea", "next": "l"},
                                         {"id": "tea", "title": "Tea again", "next": "l"}]}], target="l")
    assert errors(flow({"l": step})) == [("/steps/l/sections/0/rows/1/id", 'row id "tea" is used twice')]


def test_a_row_id_used_twice_across_sections_points_at_the_second_row() -> None:
    step = lst([{"title": "A", "rows": [{"id": "tea", "title": "Tea", "next": "l"}]},
                {"title": "B", "rows": [{"id": "cake", "title": "Cake", "next": "l"},
                                        {"id": "tea", "title": "Tea again", "next": "l"}]}], target="l")
    assert errors(flow({"l": step})) == [("/steps/l/sections/1/rows/1/id", 'row id "tea" is used twice')]


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

