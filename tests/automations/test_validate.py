"""The automation document validator: every check, every problem at once, pointers and hints."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from bot.automations.validate import AutomationContext, check_automations, parse_automations, validate_automations
from bot.errors import AutomationsInvalid, FlowError, Problem
from crm_bridge.memory import DEFAULT_STAGES

ROOT = Path(__file__).resolve().parents[2]
BOTS = {"welcome", "qualify", "demo", "appointment", "ab_offer", "cart_nudge"}
CTX = AutomationContext({"Sales": DEFAULT_STAGES, "Support": ["New", "Solved"]}, bots=BOTS,
                        fields={"lead.fields.budget", "lead.fields.meeting_at", "contact.fields.birthday"})

DOC: dict[str, Any] = {
    "format": "salesbot.automations/1", "id": "sales", "pipeline": "Sales",
    "rules": [
        {"id": "welcome_new", "stage": "Incoming", "on": ["created", "moved_in"], "do": {"start_bot": "welcome"}},
        {"id": "call_vip", "stage": "Qualified", "on": "moved_in",
         "if": {"all": [{"field": "lead.fields.budget", "op": "gte", "value": 100}]},
         "do": {"actions": [{"do": "add_task", "text": "Call {{ contact.name }}"}]}},
        {"id": "remind", "stage": "Proposal", "on": ["field_time"],
         "at": {"field": "lead.fields.meeting_at", "offset": "-1h"}, "do": {"start_process": "demo"}},
    ],
    "triggers": [{"id": "paid", "stage": "Won", "on": "order.paid"}],
    "scoring": [{"on": "email.opened", "add": 2}, {"decay": {"every": "30d", "subtract": 10}}],
}


def doc(**changes: Any) -> dict[str, Any]:
    d = copy.deepcopy(DOC)
    d.update(changes)
    return d


def errors(document: Any, context: AutomationContext = CTX) -> dict[str, str]:
    """pointer -> message of every error (one per pointer in these tests)."""
    found = [p for p in validate_automations(document, context) if p.severity == "error"]
    out = {p.pointer: p.message for p in found}
    assert len(out) == len(found), found
    return out


def warnings(document: Any, context: AutomationContext = CTX) -> dict[str, str]:
    return {p.pointer: p.message for p in validate_automations(document, context) if p.severity == "warning"}


def test_a_valid_document_has_no_problem_and_parses() -> None:
    assert validate_automations(DOC, CTX) == []
    model = parse_automations(DOC, CTX)
    assert model.id == "sales" and [r.id for r in model.rules] == ["welcome_new", "call_vip", "remind"]


def test_the_example_document_validates_with_the_example_flows() -> None:
    flows = [p for p in (ROOT / "flows").glob("*.json") if not p.name.endswith("schema.json")]
    bots = {json.loads(p.read_text())["id"] for p in flows}
    assert bots == BOTS
    example = json.loads((ROOT / "automations" / "sales.json").read_text(encoding="utf-8"))
    assert validate_automations(example, AutomationContext({"Sales": DEFAULT_STAGES}, bots=bots)) == []
    model = parse_automations(example, AutomationContext({"Sales": DEFAULT_STAGES}, bots=bots))
    kinds = {on for r in model.rules for on in r.on}
    assert kinds == {"created", "moved_in", "responsible_changed", "tag_added", "field_changed",
                     "chat.first_message", "chat.message", "field_time", "idle"}  # one rule of each kind
    assert {type(r.do).__name__ for r in model.rules} == {"StartBotDo", "ActionsDo", "StartProcessDo"}
    assert model.triggers and model.scoring


def test_not_an_object() -> None:
    assert errors([1, 2]) == {"": "an automation document is a JSON object"}


def test_envelope_problems_point_at_their_keys() -> None:
    found = errors(doc(format="salesbot.flow/1", id="Sales!", colour="red"))
    assert set(found) == {"/format", "/id", "/colour"}
    assert found["/colour"] == 'unknown key "colour"'


def test_unknown_pipeline_with_a_hint() -> None:
    assert errors(doc(pipeline="Sale")) == {
        "/pipeline": 'unknown pipeline "Sale" (did you mean "Sales"?); known: Sales, Support'}


def test_unknown_stages_of_rules_triggers_and_change_stage_actions() -> None:
    d = doc()
    d["rules"][0]["stage"] = "Incomng"
    d["triggers"][0]["stage"] = "Wonn"
    d["rules"][1]["do"]["actions"].append({"do": "change_stage", "stage": "Proposl"})
    found = errors(d)
    assert found["/rules/0/stage"].startswith('unknown stage "Incomng" of pipeline "Sales" (did you mean "Incoming"?)')
    assert found["/triggers/0/stage"].startswith('unknown stage "Wonn"')
    assert found["/rules/1/do/actions/1/stage"].startswith('unknown stage "Proposl"')
    assert len(found) == 3


def test_stages_of_another_pipeline_or_templates_are_not_checked_in_actions() -> None:
    d = doc()
    d["rules"][1]["do"]["actions"] += [{"do": "change_stage", "pipeline": "Support", "stage": "Solved"},
                                       {"do": "change_stage", "stage": "{{ lead.fields.next }}"}]
    assert errors(d) == {}


def test_without_a_pipeline_catalogue_pipeline_and_stages_are_not_checked() -> None:
    d = doc(pipeline="Elsewhere")
    d["rules"][0]["stage"] = "Anything"
    assert errors(d, AutomationContext({}, bots=BOTS)) == {}


def test_unknown_bots_of_start_bot_and_start_process() -> None:
    d = doc()
    d["rules"][0]["do"]["start_bot"] = "welcom"
    d["rules"][2]["do"]["start_process"] = "nobody"
    found = errors(d)
    assert found["/rules/0/do/start_bot"].startswith('unknown bot "welcom" (did you mean "welcome"?); known:')
    assert found["/rules/2/do/start_process"].startswith('unknown bot "nobody"; known: ab_offer, appointment')
    assert errors(d, AutomationContext(CTX.pipelines, bots=None)) == {}  # not checked
    assert errors(d, AutomationContext(CTX.pipelines, bots=()))["/rules/0/do/start_bot"].endswith("no bot is loaded")


def test_unknown_custom_fields_when_fields_are_known() -> None:
    d = doc()
    d["rules"][1]["if"]["all"][0]["field"] = "lead.fields.budgt"
    d["rules"][2]["at"]["field"] = "lead.fields.meeting"
    d["rules"].append({"id": "watch", "stage": "Won", "on": "field_changed", "field": "contact.fields.birthdy",
                       "do": {"start_bot": "demo"}})
    d["rules"].append({"id": "std", "stage": "Won", "on": "field_changed", "field": "lead.price",
                       "do": {"start_bot": "demo"}})  # a standard field: always known
    found = errors(d)
    assert found == {
        "/rules/1/if/all/0/field": 'unknown field "lead.fields.budgt" (did you mean "lead.fields.budget"?)',
        "/rules/2/at/field": 'unknown field "lead.fields.meeting" (did you mean "lead.fields.meeting_at"?)',
        "/rules/3/field": 'unknown field "contact.fields.birthdy" (did you mean "contact.fields.birthday"?)',
    }
    assert errors(d, AutomationContext(CTX.pipelines, bots=BOTS, fields=None)) == {}


def test_unknown_and_malformed_event_types_of_triggers_and_scoring() -> None:
    d = doc()
    d["triggers"][0]["on"] = "order.payed"
    d["triggers"].append({"id": "mine", "stage": "Won", "on": "custom.signed_up"})
    d["scoring"][0]["on"] = "Email Opened"
    found = errors(d)
    assert found == {
        "/triggers/0/on": 'unknown event type "order.payed" (did you mean "order.paid"?) '
                          '(your own events are "custom.<name>")',
        "/scoring/0/on": '"Email Opened" is not an event type: lower-case words joined by dots, such as '
                         '"order.paid" or "custom.signed_up" (did you mean "email.opened"?)',
    }


@pytest.mark.parametrize(("where", "value", "message"), [
    (("rules", 0, "delay"), "5x", '"5x" is not a duration'),
    (("rules", 2, "at", "offset"), "-1y", '"1y" is not a duration'),
    (("rules", 2, "at", "offset"), "400d", "an offset is at most a year"),
    (("scoring", 1, "decay", "every"), "10m", "decay runs at most once an hour"),
])
def test_bad_durations_and_offsets(where: tuple[Any, ...], value: Any, message: str) -> None:
    _only_problem(where, value, message)


def _only_problem(where: tuple[Any, ...], value: Any, message: str) -> None:
    """The example with ``value`` at ``where`` has that one problem, saying ``message``."""
    d = doc()
    node: Any = d
    for part in where[:-1]:
        node = node[part]
    node[where[-1]] = value
    found = errors(d)
    pointer = "/" + "/".join(map(str, where))
    assert list(found) == [pointer] and message in found[pointer], found


@pytest.mark.parametrize(("where", "value", "message"), [
    (("rules", 0, "apply_to_existing"), "yes", "must be true or false"),
    (("rules", 0, "leave_unanswered"), 1, "must be true or false"),
    (("triggers", 0, "allow_backward"), "on", "must be true or false"),
    (("scoring", 0, "add"), "2", "must be a whole number"),
    (("scoring", 1, "decay", "subtract"), True, "must be a whole number"),
    (("rules", 0, "delay"), True, 'a duration is a string like "15m" or a number of seconds'),
    (("rules", 2, "at", "offset"), True, "an offset is a duration with an optional sign"),
])
def test_values_of_the_wrong_type_are_refused_as_in_flows(where: tuple[Any, ...], value: Any, message: str) -> None:
    """Not converted ("yes" read as true, "2" as 2, true as 1) as pydantic's lax mode did."""
    _only_problem(where, value, message)


def test_duplicate_ids_across_rules_and_triggers() -> None:
    d = doc()
    d["rules"][1]["id"] = "welcome_new"
    d["triggers"][0]["id"] = "remind"
    found = errors(d)
    assert found["/rules/1/id"].startswith('id "welcome_new" is already used by /rules/0')
    assert found["/triggers/0/id"].startswith('id "remind" is already used by /rules/2')


def test_templates_that_do_not_compile() -> None:
    d = doc()
    d["rules"][1]["do"]["actions"][0]["text"] = "Call {{ contact.name"
    d["rules"][1]["if"]["all"][0]["value"] = "{% if %}"
    d["rules"][0]["do"]["variables"] = {"greeting": "{{ lead.name }"}
    d["triggers"][0]["match"] = {"order": "{{ x"}
    d["scoring"][0]["match"] = {"url": "{{"}
    found = errors(d)
    assert set(found) == {"/rules/1/do/actions/0/text", "/rules/1/if/all/0/value", "/rules/0/do/variables/greeting",
                          "/triggers/0/match/order", "/scoring/0/match/url"}
    assert all(m.startswith("template does not compile") for m in found.values())


def test_a_trigger_towards_the_first_stage_can_never_fire_unless_backward_is_allowed() -> None:
    d = doc()
    d["triggers"][0]["stage"] = "Incoming"
    assert errors(d)["/triggers/0/stage"].startswith('can never fire: "Incoming" is the first stage')
    d["triggers"][0]["allow_backward"] = True
    assert errors(d) == {}


def test_a_rule_outside_working_hours_without_working_hours_never_acts() -> None:
    d = doc()
    d["rules"][0]["active"] = "outside_working_hours"
    d["rules"][1]["active"] = "working_hours"
    assert errors(d) == {"/rules/0/active": "never acts: without settings.working_hours every hour is a working hour"}
    assert warnings(d) == {"/rules/1/active": 'the same as "always": settings.working_hours is not set'}
    d["settings"] = {"working_hours": {"mon-fri": "09:00-18:00"}}
    assert errors(d) == {} and warnings(d) == {}


def test_settings_are_checked_like_a_flows() -> None:
    found = errors(doc(settings={"timezone": "Mars/Base", "working_hours": {"someday": "09:00-18:00"}}))
    assert set(found) == {"/settings/timezone", "/settings/working_hours"}


def test_a_second_decay_rule_is_an_error_and_only_decay_is_a_warning() -> None:
    d = doc(scoring=[{"decay": {"every": "1d", "subtract": 1}}, {"decay": {"every": "2d", "subtract": 1}}])
    assert errors(d) == {"/scoring/1": "a second decay rule: a document has one (/scoring/0)"}
    assert warnings(d) == {"/scoring/0": "only a decay rule: scores only ever go down, never up"}


def test_warnings_for_legal_but_suspicious_rules() -> None:
    d = doc()
    d["rules"][1]["do"]["actions"].append({"do": "change_stage", "stage": "Qualified"})
    d["rules"][1]["if"]["all"].append({"field": "message.text", "op": "eq", "value": "hi"})
    d["rules"][0]["apply_to_existing"] = True
    d["rules"][0]["on"] = ["created"]
    d["triggers"].append({"id": "paid_again", "stage": "Lost", "on": "order.paid"})
    assert errors(d) == {}
    found = warnings(d)
    assert found["/rules/1/do/actions/1/stage"] == (
        'moves the lead to "Qualified", the stage it is already in: nothing happens')
    assert found["/rules/1"].startswith("reads message, which a rule does not have")
    assert found["/rules/0/apply_to_existing"].startswith('a rule on "created" only')
    assert found["/triggers/1"] == "fires on the same events as /triggers/0: the lead would be moved twice"
    assert len(found) == 4
    problems, model = check_automations(d, CTX)
    assert model is not None and all(p.severity == "warning" for p in problems)  # warnings do not refuse it


def test_schema_problems_of_rules_point_into_the_document() -> None:
    d = doc()
    d["rules"][0]["on"] = ["created", "movedin"]
    d["rules"][0]["do"] = {"start_bot": "welcome", "chanel": "wa"}
    d["rules"][1]["do"]["actions"][0] = {"do": "add_tsk", "text": "x"}
    d["rules"][2]["do"] = {"foo": 1}
    d["rules"].append("not a rule")
    d["scoring"].append(7)
    d["rules"].append({"id": "lazy", "stage": "Won", "on": "idle", "do": {"start_bot": "demo"}})
    found = errors(d)
    assert found["/rules/0/on/1"].endswith('(did you mean "moved_in"?)')
    assert found["/rules/0/do/chanel"] == 'unknown key "chanel" (did you mean "channel"?)'
    assert found["/rules/1/do/actions/0"].startswith('unknown action "add_tsk" (did you mean "add_task"?)')
    assert found["/rules/2/do"] == 'needs one of "start_bot", "actions" or "start_process"'
    assert found["/rules/3"] == "must be a JSON object"
    assert found["/rules/4"] == 'a rule on "idle" needs after ("after": "3d")'
    assert found["/scoring/2"].startswith("a scoring rule is")


def test_what_a_kind_of_rule_needs_is_said_even_when_the_rule_has_other_problems() -> None:
    d = doc()
    d["rules"][0] = {"id": "lazy", "stage": "Won", "on": ["idle", "field_time"], "do": {"foo": 1}}
    found = [(p.pointer, p.message) for p in validate_automations(d, CTX)]
    assert found == [("/rules/0", ('a rule on "field_time" needs at ("at": {"field": "lead.fields.meeting_at", '
                                  '"offset": "-1h"})')),
                     ("/rules/0", 'a rule on "idle" needs after ("after": "3d")'),
                     ("/rules/0/do", 'needs one of "start_bot", "actions" or "start_process"')]


def test_every_problem_is_reported_at_once() -> None:
    d = doc(pipeline="Sales", extra=1)
    d["rules"][0]["stage"] = "Nowhere"
    d["rules"][0]["do"]["start_bot"] = "ghost"
    d["rules"][1]["do"]["actions"][0]["text"] = "{{"
    d["rules"][2]["delay"] = "soon"
    d["rules"][2]["id"] = "welcome_new"
    d["triggers"][0]["on"] = "order.payed"
    d["triggers"].append({"id": "back", "stage": "Incoming", "on": "order.paid", "allow_backward": False})
    d["scoring"][0]["add"] = 0
    found = errors(d)
    assert set(found) == {"/extra", "/rules/0/stage", "/rules/0/do/start_bot", "/rules/1/do/actions/0/text",
                          "/rules/2/delay", "/rules/2/id", "/triggers/0/on", "/triggers/1/stage", "/scoring/0/add"}
    # rule 2 failed its schema (the delay): its id is still compared with the others
    assert found["/rules/2/id"].startswith('id "welcome_new" is already used by /rules/0')


def test_control_characters_are_refused_where_they_are_but_tabs_and_line_breaks_are_fine() -> None:
    d = doc(name="Sales\x00")
    d["rules"][1]["do"]["actions"][0]["text"] = "Call\tnow\r\nplease \u2028 {{ contact.name }}"
    d["rules"][0]["stage"] = "Inco\x1bming"
    d["x-note\x7f"] = 1
    found = [(p.pointer, p.message) for p in validate_automations(d, CTX)]
    assert [f for f in found if "control" in f[1]] == [
        ("/name", "control character U+0000 is not allowed"),
        ("/rules/0/stage", "control character U+001B is not allowed"),
        ("/x-note\x7f", "a key with a control character is not allowed")]
    assert [f[0] for f in found if "control" not in f[1]] == ["/rules/0/stage"]  # also an unknown stage
    many = doc(rules=[{**DOC["rules"][0], "id": f"r{i}", "stage": "\x01"} for i in range(30)])
    assert sum("control character" in p.message for p in validate_automations(many, CTX)) == 10


def test_the_document_size_is_limited() -> None:
    d = doc(name="x" * 100)
    d["rules"][1]["do"]["actions"] = [{"do": "add_note", "text": "n" * 60_000}] * 10
    assert any(p.pointer == "" and "bytes; at most" in p.message for p in validate_automations(d, CTX))


def test_parse_raises_automations_invalid_with_every_problem() -> None:
    with pytest.raises(AutomationsInvalid) as info:
        parse_automations(doc(pipeline="Nope", id="BAD"), CTX)
    assert isinstance(info.value, FlowError)
    assert {p.pointer for p in info.value.problems} == {"/pipeline", "/id"}
    assert all(isinstance(p, Problem) for p in info.value.problems)
    assert str(info.value).startswith("2 problem(s): ")
