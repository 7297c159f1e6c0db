"""Every problem at once: the checks the schema cannot make (timezone, templates, regexes, ids,
goals, event types) run on the parts of a document that also have a schema error, no problem
is reported twice, and a key written twice in the JSON is a problem at its pointer."""

from __future__ import annotations

from pathlib import Path

from bot.builder import check_document
from bot.builder.loader import load_flow, read_document
from bot.errors import FlowInvalid

from .helpers import STOP, errors, flow, lst

BAD_TEMPLATE = "Hi {{ contact.name "
TEMPLATE = ("/steps/a/text",
            "template does not compile: unexpected end of template, expected 'end of print statement'. (line 1)")


def test_a_schema_error_in_a_step_does_not_hide_its_template() -> None:
    doc = flow({"a": {"type": "message", "text": BAD_TEMPLATE, "nxt": "b"}, "b": STOP})
    assert errors(doc) == [("/steps/a/nxt", 'unknown key "nxt" (did you mean "next"?)'), TEMPLATE]


def test_a_bad_rule_does_not_hide_the_regex_of_another() -> None:
    doc = flow({"b": {"type": "validation", "value": "{{ message.text }}", "pass": "e", "fail": "e", "rules": [
        {"check": "regex", "pattern": "[a-"}, {"check": "length", "min": "x"}]}, "e": STOP})
    found = errors(doc)
    assert ("/steps/b/rules/0/pattern",
            "regular expression does not compile: unterminated character set at position 3") in found
    assert [p for p, _ in found] == ["/steps/b/rules/0/pattern", "/steps/b/rules/1/min"]


def test_a_missing_section_title_does_not_hide_a_row_id_used_twice() -> None:
    step = lst([{"rows": [{"id": "r", "title": "x", "next": "l"}, {"id": "r", "title": "y", "next": "l"}]}],
               target="l")
    assert errors(flow({"l": step})) == [("/steps/l/sections/0/rows/1/id", 'row id "r" is used twice'),
                                         ("/steps/l/sections/0/title", "required")]


def test_a_bad_settings_value_does_not_hide_an_unknown_timezone() -> None:
    doc = flow({"a": STOP}, settings={"timezone": "Europe/Istambul", "step_budget": "many"})
    assert [p for p, _ in errors(doc)] == ["/settings/step_budget", "/settings/timezone"]


def test_a_bad_document_id_does_not_hide_an_unknown_goal_event() -> None:
    doc = flow({"a": STOP}, id="Bad Id", goals={"h": {"on": "order.payed"}})
    assert [p for p, _ in errors(doc)] == ["/goals/h/on", "/id"]


def test_a_split_with_a_bad_winner_still_has_its_paths_and_goal_checked() -> None:
    doc = flow({"d": {"type": "split", "goal": "nogoal", "winner": {"after_entries": 0},
                      "paths": [{"id": "p", "next": "b"}, {"id": "p", "next": "b"}]}, "b": STOP},
               goals={"g": {"on": "order.paid"}})
    assert errors(doc) == [
        ("/steps/d/goal", 'unknown goal "nogoal": name one of the flow\'s "goals"'),
        ("/steps/d/paths/1/id", 'path id "p" is used twice'),
        ("/steps/d/winner/after_entries", "Input should be greater than or equal to 1"),
    ]


def test_what_pruning_made_up_or_dropped_is_never_reported() -> None:
    # Both titles are wrong (a number): the schema says so once each, nothing more.
    step = lst([{"title": 1, "rows": [{"id": "r", "title": "x", "next": "l"}]},
                {"title": 2, "rows": [{"id": "s", "title": "y", "next": "l"}]}], target="l")
    assert [p for p, _ in errors(flow({"l": step}))] == ["/steps/l/sections/0/title", "/steps/l/sections/1/title"]
    # A rule the schema refuses stands in as a copy of the other: the copy's regex is not its own.
    doc = flow({"b": {"type": "validation", "value": "v", "pass": "e", "fail": "e",
                      "rules": [{"check": "regex", "pattern": "[a-"}, {"check": "bogus"}]}, "e": STOP})
    assert [p for p, _ in errors(doc)] == ["/steps/b/rules/0/pattern", "/steps/b/rules/1/check"]
    # A section that is not an object stands in as a copy of the other: its rows' ids are not repeats.
    step = lst(["oops", {"title": "B", "rows": [{"id": "r", "title": "x", "next": "l"}]}], target="l")
    assert [p for p, _ in errors(flow({"l": step}))] == ["/steps/l/sections/0"]
    # Nor are a split path's, and a goal the schema refuses is still a goal a split may name.
    doc = flow({"d": {"type": "split", "goal": "g", "paths": [7, {"id": "p", "next": "b"}, {"id": "q", "next": "b"}]},
                "b": STOP}, goals={"g": {"next": "b"}})
    assert [p for p, _ in errors(doc)] == ["/goals/g/on", "/steps/d/paths/0"]


UNKNOWN = 'unknown event type "{}" (did you mean "{}"?) (your own events are "custom.<name>")'


def test_event_types_of_goals_and_pauses_are_checked_with_a_hint() -> None:
    doc = flow({"p": {"type": "pause", "until": [{"on": "event", "event": "emial.opened", "next": "b"},
                                                 {"on": "event", "event": "custom.signed_up", "next": "b"},
                                                 {"on": "timer", "after": "1d", "next": "b"}]}, "b": STOP},
               goals={"h": {"on": "order.payed"}, "c": {"on": "custom.anything"}})
    assert errors(doc) == [
        ("/goals/h/on", UNKNOWN.format("order.payed", "order.paid")),
        ("/steps/p/until/0/event", UNKNOWN.format("emial.opened", "email.opened")),
    ]


def test_a_pause_on_an_event_without_one_says_it_is_required() -> None:
    doc = flow({"p": {"type": "pause", "until": [{"on": "event", "next": "b"}]}, "b": STOP})
    required = '"event" is required with on: "event" (the event type, such as "email.opened")'
    assert errors(doc) == [("/steps/p/until/0", required)]
    doc = flow({"p": {"type": "pause", "until": [{"on": "message", "event": "email.opened", "next": "b"}]},
                "b": STOP})
    only = '"event" (the event type, such as "email.opened") and match go with on: "event" only'
    assert errors(doc) == [("/steps/p/until/0", only)]


DUPLICATE = """{"format": "salesbot.flow/1", "id": "dup", "start": "a",
 "steps": {"a": {"type": "message", "text": "first a", "next": "b"}, "b": {"type": "stop", "type": "stop"},
           "a": {"type": "message", "text": "second a", "next": "b"}}}"""


def test_a_key_written_twice_is_a_problem_at_its_pointer(tmp_path: Path) -> None:
    path = tmp_path / "dup.json"
    path.write_text(DUPLICATE)
    repeated: list[str] = []
    doc = read_document(path, repeated)
    assert repeated == ["/steps/a", "/steps/b/type"]
    assert errors(doc) == []  # the parsed document alone cannot tell
    problems, compiled = check_document(doc, repeated=repeated)
    assert compiled is None
    assert [(p.pointer, p.message) for p in problems] == [
        ("/steps/a", '"a" is written twice in this object: only the last one would count'),
        ("/steps/b/type", '"type" is written twice in this object: only the last one would count')]
    try:
        load_flow(path)
    except FlowInvalid as exc:
        assert [p.pointer for p in exc.problems] == ["/steps/a", "/steps/b/type"]
    else:
        raise AssertionError("a flow with a step written twice loaded")


def test_the_pointer_of_a_key_written_twice_is_escaped(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text('{"x": [{"a/b~": 1, "a/b~": 2}]}')
    repeated: list[str] = []
    assert read_document(path, repeated) == {"x": [{"a/b~": 2}]}
    assert repeated == ["/x/0/a~1b~0"]


def test_a_whole_document_problem_has_the_root_pointer() -> None:
    problems, _ = check_document([])
    assert [(p.pointer, str(p)) for p in problems] == [("", "(document): a flow is a JSON object")]


