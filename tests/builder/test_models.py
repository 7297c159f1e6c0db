"""The pydantic schema of flow format v1 (bot.builder.models)."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest
from pydantic import TypeAdapter, ValidationError

from bot.builder import models as m
from bot.builder.validate import parse_flow_model

STEP = TypeAdapter(m.Step)


def doc(steps: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"format": "salesbot.flow/1", "id": "demo", "start": next(iter(steps)), "steps": steps, **top}


def test_a_full_document_parses_into_typed_models() -> None:
    flow = parse_flow_model(doc({
        "hello": {"type": "message", "text": "Hi", "buttons": [{"title": "Go", "next": "check"}],
                  "no_answer": {"after": "1h30m", "next": "bye"}, "x-pos": [0, 0]},
        "check": {"type": "condition", "branches": [
            {"if": {"not": {"field": "lead.tags", "op": "has", "value": "vip"}}, "next": "act"}],
            "else": "bye"},
        "act": {"type": "action", "actions": [
            {"do": "set_field", "entity": "contact", "field": "phone", "from": "message"},
            {"do": "create_lead", "copy": ["tags", "price"]}], "next": "val"},
        "val": {"type": "validation", "rules": [{"check": "contains", "kind": "phone"}],
                "pass": "bye", "fail": "hello"},
        "bye": {"type": "stop"},
    }, settings={"timezone": "Europe/Istanbul"}, **{"x-canvas": {}}))
    assert isinstance(flow, m.Flow)
    hello = flow.steps["hello"]
    assert isinstance(hello, m.MessageStep)
    assert hello.no_answer is not None and hello.no_answer.after == 5400
    check = flow.steps["check"]
    assert isinstance(check, m.ConditionStep) and check.else_ == "bye"
    assert isinstance(check.branches[0].if_, m.NotPredicate)
    assert isinstance(check.branches[0].if_.not_, m.LeafPredicate)
    act = flow.steps["act"]
    assert isinstance(act, m.ActionStep)
    assert isinstance(act.actions[0], m.SetField) and act.actions[0].from_ == "message"
    assert isinstance(act.actions[1], m.CreateLead) and act.actions[1].copy_ == ["tags", "price"]
    val = flow.steps["val"]
    assert isinstance(val, m.ValidationStep) and val.pass_ == "bye" and val.value == "{{ message.text }}"
    assert flow.settings.timezone == "Europe/Istanbul" and flow.settings.step_budget == 100


def test_models_are_frozen() -> None:
    step = STEP.validate_python({"type": "goto", "step": "a"})
    with pytest.raises(ValidationError):
        step.step = "b"


def test_builder_metadata_is_dropped_from_the_model() -> None:
    step = STEP.validate_python({"type": "stop", "x-note": "hello", "x-pos": {"x": 1}})
    assert step.model_dump() == {"type": "stop", "close_chat": False}


def test_pause_defaults_to_waiting_for_a_message() -> None:
    step = STEP.validate_python({"type": "pause", "next": "a"})
    assert isinstance(step, m.PauseStep)
    assert [(e.on, e.after, e.next) for e in step.until] == [("message", None, None)]


@pytest.mark.parametrize(("after", "seconds"), [("90s", 90), ("15m", 900), ("2h", 7200), ("3d", 259200),
                                                 ("1h30m", 5400), (5400, 5400)])
def test_timer_durations_become_seconds(after: Any, seconds: int) -> None:
    step = STEP.validate_python({"type": "pause", "until": [{"on": "timer", "after": after}]})
    assert step.until[0].after == seconds


def test_only_timer_events_take_after() -> None:
    with pytest.raises(ValidationError, match='only "timer" events take after, not "message"'):
        STEP.validate_python({"type": "pause", "until": [{"on": "message", "after": "1h"}]})


@pytest.mark.parametrize(("due", "expected"), [("in_3_days", "in_3_days"), ("2h", 7200), (60, 60)])
def test_task_due_is_a_name_or_a_duration(due: Any, expected: Any) -> None:
    step = STEP.validate_python({"type": "action", "actions": [{"do": "add_task", "text": "t", "due": due}]})
    assert step.actions[0].due == expected


def test_message_needs_some_content() -> None:
    with pytest.raises(ValidationError, match="a message needs text, a template or attachments"):
        STEP.validate_python({"type": "message", "buttons": [{"title": "a", "next": "b"}]})
    step = STEP.validate_python({"type": "message", "attachments": [{"kind": "document", "url": "https://x/p.pdf"}]})
    assert step.attachments[0].kind == "document"


def test_attachment_kinds() -> None:
    with pytest.raises(ValidationError):
        STEP.validate_python({"type": "message", "attachments": [{"kind": "gif", "url": "u"}]})


@pytest.mark.parametrize(("rule", "error"), [
    ({"check": "contains"}, '"contains" needs a kind: number, letters, phone, email, range or text'),
    ({"check": "contains", "kind": "text"}, 'kind "text" needs a value'),
    ({"check": "not_contains", "kind": "range"}, 'kind "range" needs min, max or both'),
    ({"check": "length"}, '"length" needs min, max or both'),
    ({"check": "regex"}, '"regex" needs a pattern'),
    ({"check": "equals"}, '"equals" needs a value'),
])
def test_validation_rule_parameters(rule: dict[str, Any], error: str) -> None:
    with pytest.raises(ValidationError) as info:
        STEP.validate_python({"type": "validation", "rules": [rule]})
    assert [e["msg"].removeprefix("Value error, ") for e in info.value.errors()] == [error]


@pytest.mark.parametrize(("leaf", "error"), [
    ({"field": "x", "op": "between", "value": [1]}, '"between" takes a value [low, high]'),
    ({"field": "x", "op": "in", "value": 3}, '"in" takes a list of values'),
    ({"field": "x", "op": "gt"}, 'the operator "gt" needs a value'),
])
def test_leaf_predicate_values(leaf: dict[str, Any], error: str) -> None:
    with pytest.raises(ValidationError) as info:
        STEP.validate_python({"type": "condition", "branches": [{"if": leaf, "next": "a"}]})
    assert [e["msg"].removeprefix("Value error, ") for e in info.value.errors()] == [error]


@pytest.mark.parametrize("op", ["empty", "not_empty"])
def test_empty_operators_take_no_value(op: str) -> None:
    step = STEP.validate_python({"type": "condition", "branches": [{"if": {"field": "x", "op": op}, "next": "a"}]})
    assert step.branches[0].if_.op == op


def test_predicate_kind_is_picked_by_its_key() -> None:
    assert m._predicate_kind({"all": []}) == "all"
    assert m._predicate_kind({"any": []}) == "any"
    assert m._predicate_kind({"not": {}}) == "not"
    assert m._predicate_kind({"expr": "1"}) == "expr"
    assert m._predicate_kind({"field": "x", "op": "eq"}) == "leaf"
    assert m._predicate_kind("x") is None


def test_tags_action_needs_add_or_remove() -> None:
    with pytest.raises(ValidationError, match="tags needs add, remove or both"):
        STEP.validate_python({"type": "action", "actions": [{"do": "tags", "entity": "lead"}]})


def test_internal_message_recipients() -> None:
    step = STEP.validate_python({"type": "internal_message", "text": "t", "to": ["user:7", "team:sales"]})
    assert step.to == ["user:7", "team:sales"]
    with pytest.raises(ValidationError):
        STEP.validate_python({"type": "internal_message", "text": "t", "to": ["everyone"]})


def test_start_bot_needs_a_bot_id() -> None:
    with pytest.raises(ValidationError):
        STEP.validate_python({"type": "start_bot", "bot": "Qualify"})
    assert STEP.validate_python({"type": "start_bot", "bot": "qualify"}).next is None


def test_every_step_type_of_the_spec_is_in_the_union() -> None:
    names = {t.model_fields["type"].annotation.__args__[0] for t in m.Step.__args__[0].__args__}
    assert names == {"message", "list", "condition", "validation", "pause", "action", "internal_message",
                     "subscribe", "comment", "goto", "start_bot", "round_robin", "widget", "custom", "stop", "split"}


def test_every_action_of_the_spec_is_in_the_union() -> None:
    names = {t.model_fields["do"].annotation.__args__[0] for t in m.Action.__args__[0].__args__}
    assert names == {"add_note", "add_task", "complete_tasks", "set_chat_status", "change_stage",
                     "change_responsible", "create_lead", "subscribers", "tags", "send_email",
                     "send_webhook", "set_field", "set_variable", "create_form", "meta_conversion",
                     "order_link",  # quick-order links (spec: customers-orders.md)
                     # processes (spec: automations.md, "Processes")
                     "start_process", "end_process", "score", "lists", "notify", "send_sms", "send_message"}


def test_order_link_takes_an_expiry_from_an_hour_to_a_year() -> None:
    action = pydantic.TypeAdapter(m.Action)
    assert action.validate_python({"do": "order_link"}).expires is None
    assert action.validate_python({"do": "order_link", "expires": "7d"}).expires == 7 * 86400
    for bad in ("30m", "366d", "soon", -1, True):
        with pytest.raises(ValidationError):
            action.validate_python({"do": "order_link", "expires": bad})
    with pytest.raises(ValidationError):
        action.validate_python({"do": "order_link", "url": "https://x.test"})
