"""Export to Kommo: what Kommo can say comes out as Kommo's handlers; anything else is refused,
every use listed with its pointer."""

from __future__ import annotations

from typing import Any

import pytest

from bot.builder.validate import check_document
from bot.kommo_import import mapping
from bot.kommo_import.convert_in import convert
from bot.kommo_import.convert_out import export
from bot.kommo_import.errors import KommoExportRefused
from bot.kommo_import.result import KommoImportError

MAP = mapping.from_document({"fields": {"4242": "participation"}, "stages": {"142": "won", "7002": "Qualified"},
                             "users": {"9001": "anna"}})


def flow(steps: dict[str, Any], start: str | None = None, **extra: Any) -> dict[str, Any]:
    doc = {"format": "salesbot.flow/1", "id": "t", "start": start or next(iter(steps)), "steps": steps, **extra}
    errors = [p for p in check_document(doc)[0] if p.severity == "error"]
    assert errors == []
    return doc


def goto(step: int, kind: str = "question") -> dict[str, Any]:
    return {"handler": "goto", "params": {"type": kind, "step": step}}


def act(name: str, **params: Any) -> dict[str, Any]:
    return {"handler": "action", "params": {"name": name, "params": params}}


def show(text: str, kind: str = "text", **more: Any) -> dict[str, Any]:
    return {"handler": "show", "params": {"type": kind, "value": text, **more}}


def test_a_menu_routes_the_reply_in_answer_and_a_step_reached_once_is_written_inline() -> None:
    doc = flow({
        "menu": {"type": "message", "text": "Hi {{ contact.name }}! Pick one", "buttons": [
            {"title": "Offline", "synonyms": ["1"], "next": "off"}, {"title": "Online", "next": "on"}],
            "other_answer": "menu"},
        "off": {"type": "action", "actions": [
            {"do": "set_field", "field": "participation", "value": "Offline"},
            {"do": "tags", "add": ["offline", "{{ message.text }}"], "remove": ["cold"]},
            {"do": "change_stage", "stage": "Qualified"}], "next": "bye"},
        "on": {"type": "message", "text": "See {{ lead.fields.participation }}", "next": "bye"},
        "bye": {"type": "stop", "close_chat": True},
    })
    assert export(doc, MAP) == [
        {"question": [show("Hi {{contact.name}}! Pick one", "buttons", buttons=["Offline", "Online"])],
         "answer": [{"handler": "buttons", "params": [  # a button with synonyms: a route each, one goto
             {"value": "Offline", "params": [goto(1)]}, {"value": "1", "params": [goto(1)]},
             {"value": "Online", "params": [show("See {{lead.cf.4242}}"), goto(2, "finish")]}]},
             goto(0)]},  # other answer: the menu again
        {"question": [act("set_custom_fields", type=2, value="Offline", custom_fields_id=4242),
                      act("set_tag", type=2, value="offline"), act("set_tag", type=2, value="{{message_text}}"),
                      act("unset_tag", type=2, value="cold"), act("change_status", value=7002), goto(2, "finish")]},
        {"finish": [{"handler": "stop", "params": {"action": "talk-close"}}]},
    ]


def test_a_menu_without_other_answer_keeps_waiting_and_the_end_is_a_stop() -> None:
    doc = flow({"end": {"type": "stop"},
                "ask": {"type": "message", "text": "Yes?", "buttons": [{"title": "Yes", "next": "end"}]}},
               start="ask")
    assert export(doc) == [
        {"question": [show("Yes?", "buttons", buttons=["Yes"])],
         "answer": [{"handler": "buttons", "params": [{"value": "Yes", "params": [{"handler": "stop", "params": {}}]}]},
                    {"handler": "wait_answer", "params": {"type": "answer", "step": 0}}]},
    ]


def test_a_phone_loop_becomes_validations_and_wait_answer() -> None:
    doc = flow({
        "ask": {"type": "message", "text": "Your phone?", "next": "wait"},
        "wait": {"type": "pause", "until": [{"on": "message", "next": "check"}]},
        "check": {"type": "validation", "rules": [{"check": "contains", "kind": "phone"}],
                  "pass": "save", "fail": "ask"},
        "save": {"type": "action", "actions": [
            {"do": "set_field", "entity": "contact", "field": "cf_77", "value": "{{ last_validation_result }}"},
            {"do": "add_note", "text": "phone {{ last_validation_result }}"},
            {"do": "change_responsible", "user": "anna"}, {"do": "subscribers", "add": [5], "remove": ["anna"]}]},
    })
    assert export(doc, MAP) == [
        {"question": [show("Your phone?"), {"handler": "wait_answer", "params": {"type": "question", "step": 1}}]},
        {"question": [
            {"handler": "validations", "params": {"logic": "and", "conditions": [
                {"client_value": "{{message_text}}", "type": "phone", "condition_value": "", "operation": "contains"}],
                "result": [goto(2)]}},
            goto(0)]},
        {"question": [  # the last step: the bot ends after it without being told
            act("set_custom_fields", type=1, value="{{last_validation_result}}", custom_fields_id=77),
            act("add_note", element_type=2, note_type=4, text="phone {{last_validation_result}}"),
            act("change_responsible_user", value=9001, type=2),
            act("subscribe", type="user", value=5), act("unsubscribe", type="user", value=9001)]},
    ]


def test_conditions_internal_messages_widgets_and_other_bots() -> None:
    doc = flow({
        "route": {"type": "condition", "branches": [
            {"if": {"field": "chat.channel", "op": "eq", "value": "telegram"}, "next": "tell"},
            {"if": {"any": [{"field": "json.status", "op": "ne", "value": "ok"},
                            {"field": "lead.price", "op": "between", "value": [1, 500]}]}, "next": "hook"}],
            "else": "other"},
        "tell": {"type": "internal_message", "text": "Lead {{ lead.id }}", "to": ["user:anna", "team:12"],
                 "next": "hook"},
        "hook": {"type": "widget", "widget": "http_request",
                 "params": {"url": "https://example.com/x", "data": {"lead": "{{ lead.id }}"}},
                 "wait": {"timeout": "10m"}, "next": "other"},
        "other": {"type": "start_bot", "bot": "1234"},
    })
    message = {"entity_id": "{{lead.id}}", "entity_type": 2, "message": "Lead {{lead.id}}"}
    assert export(doc, MAP) == [
        {"question": [
            {"handler": "condition", "params": {"term1": "{{origin}}", "term2": "telegram", "operation": "=",
                                                "result": [
                {"handler": "send_internal", "params": {**message, "user_id": 9001}},
                {"handler": "send_internal", "params": {**message, "group_id": 12}}, goto(2)]}},
            {"handler": "conditions", "params": {"logic": "or", "conditions": [
                {"term1": "{{json.status}}", "term2": "ok", "operation": "!="},
                {"term1": "{{lead.price}}", "term2": {"from": 1, "to": 500}, "operation": "in_range"}],
                "result": [goto(2)]}},
            goto(1, "finish")]},
        {"finish": [{"handler": "stop", "params": {"action": "salesbot-start", "bot": 1234}}]},
        {"question": [{"handler": "widget_request", "params": {"url": "https://example.com/x",
                                                               "data": {"lead": "{{lead.id}}"}}},
                      goto(1, "finish")]},
    ]


def test_a_message_to_the_main_contact_with_a_way_on_when_undelivered() -> None:
    doc = flow({"hi": {"type": "message", "text": "Hello", "recipients": "main_contact", "failed": "oops",
                       "channel_mode": "primary", "buttons": [{"title": "Site", "url": "https://example.com"}]},
                "oops": {"type": "stop"}})
    assert export(doc)[0]["question"][0] == {"handler": "send_external_message", "params": {
        "message": {"type": "external", "text": "Hello", "buttons": [
            {"type": "url", "text": "Site", "url": "https://example.com"}]},
        "recipient": {"type": "main_contact", "way_of_communication": "any_first"},
        "channels": [], "on_error": goto(1, "finish")}}


def test_unreachable_steps_are_kept_and_checked() -> None:
    doc = flow({"a": {"type": "stop"}, "lost": {"type": "message", "text": "never", "next": "a"}})
    assert export(doc) == [{"finish": []}, {"question": [show("never"), goto(0, "finish")]}]


def test_everything_kommo_cannot_say_is_listed_at_once_with_its_pointer() -> None:
    doc = flow({
        "a": {"type": "message", "text": "{% if lead.price %}rich{% endif %}",
              "no_answer": {"after": "1h", "next": "b"},
              "buttons": [{"title": "x", "next": "b"}], "other_answer": "b"},
        "b": {"type": "action", "actions": [{"do": "set_field", "field": "budget", "value": "1"},
                                            {"do": "change_stage", "stage": "Nowhere"},
                                            {"do": "send_email", "template": "welcome"}], "next": "c"},
        "c": {"type": "pause", "until": [{"on": "timer", "after": "1d", "next": "d"}]},
        "d": {"type": "round_robin", "options": ["a", "b"]},
        "e": {"type": "condition", "branches": [{"if": {"expr": "lead.price > 3"}, "next": "a"}]},
    }, settings={"working_hours": {"mon-fri": "09:00-18:00"}}, variables={"n": 1})
    with pytest.raises(KommoExportRefused) as caught:
        export(doc, MAP)
    found = {(p.pointer, p.message.split(":")[0].split(" (")[0]) for p in caught.value.problems}
    assert found == {
        ("/settings/working_hours", "Kommo has no working hours in a bot's code"),
        ("/variables", "Kommo has no bot variables"),
        ("/steps/a/no_answer", "Kommo has no timer on waiting for an answer"),
        ("/steps/a/text", "Kommo has no statements or comments"),
        ("/steps/b/actions/0/field", 'Kommo has no field named "budget"'),
        ("/steps/b/actions/1/stage", 'Kommo has no stage named "Nowhere"'),
        ("/steps/b/actions/2/do", 'Kommo has no action like "send_email" in a bot\'s code'),
        ("/steps/c/until/0/on", 'Kommo has no published pause on "timer"'),
        ("/steps/d/type", 'Kommo has no "round_robin" step'),
        ("/steps/e/branches/0/if/expr", 'Kommo has no "expr" condition'),
    }
    assert isinstance(caught.value, KommoImportError) and caught.value.pointer == caught.value.problems[0].pointer


def test_a_name_mapped_to_several_ids_is_ambiguous() -> None:
    two = mapping.from_document({"stages": {"7002": "Qualified", "8002": "Qualified"}})
    doc = flow({"s": {"type": "action", "actions": [{"do": "change_stage", "stage": "Qualified"}]}})
    with pytest.raises(KommoExportRefused, match=r"several stages mapped to \"Qualified\" \(7002, 8002\)"):
        export(doc, two)


def test_an_invalid_flow_is_not_exported() -> None:
    with pytest.raises(KommoImportError, match="not a valid flow"):
        export({"format": "salesbot.flow/1", "steps": {}})


def test_tasks_the_budget_and_computed_stages() -> None:
    doc = flow({"s": {"type": "action", "actions": [
        {"do": "add_task", "text": "Call {{ contact.name }}", "due": "1d2h30m", "task_type": "meeting",
         "responsible": "anna"},
        {"do": "add_task", "text": "Now", "due": "now"},
        {"do": "set_field", "field": "price", "value": "{{ lead.fields.cf_5 }}"},
        {"do": "tags", "entity": "company", "add": ["partner"]},
        {"do": "change_stage", "stage": "{{ lead.fields.cf_6 }}"}]}})
    handlers = export(doc, MAP)[0]["question"]
    settings = handlers[0]["params"]["trigger"]["settings"]
    assert handlers[0]["params"]["trigger"]["action"] == "create_task"
    assert settings == {"task_text": "Call {{contact.name}}", "task_type": "2", "deadline-days": "1",
                        "deadline-hours": "2", "deadline-minutes": "30", "within-deadline": "0",
                        "responsible_user": "9001"}
    assert handlers[1]["params"]["trigger"]["settings"] == {
        "task_text": "Now", "task_type": "1", "deadline-days": "", "deadline-hours": "", "deadline-minutes": "",
        "within-deadline": "0", "responsible_user": ""}
    assert handlers[2:5] == [act("set_budget", value="{{lead.cf.5}}"), act("set_tag", type=3, value="partner"),
                             act("change_status", value="{{lead.cf.6}}")]


def test_task_deadlines_kommo_cannot_say_are_refused() -> None:
    doc = flow({"s": {"type": "action", "actions": [
        {"do": "add_task", "text": "x", "due": "end_of_week", "task_type": "demo"},
        {"do": "add_task", "text": "x", "due": "90s"}]}})
    with pytest.raises(KommoExportRefused) as caught:
        export(doc)
    assert [p.pointer for p in caught.value.problems] == [
        "/steps/s/actions/0/due", "/steps/s/actions/0/task_type", "/steps/s/actions/1/due"]


def test_tag_tests_are_kommos_bare_lead_tags_and_read_back() -> None:
    doc = flow({"t": {"type": "condition", "branches": [
        {"if": {"field": "lead.tags", "op": "has", "value": "vip"}, "next": "a"},
        {"if": {"not": {"field": "contact.tags", "op": "has", "value": "new"}}, "next": "a"}]},
        "a": {"type": "message", "text": "hi"}})
    out = export(doc)
    assert [h["params"] | {"result": None} for h in out[0]["question"][:2]] == [
        {"term1": "lead.tags", "term2": "vip", "operation": "=", "result": None},
        {"term1": "contact.tags", "term2": "new", "operation": "!=", "result": None}]
    steps = convert(out, bot_id="t").flow["steps"]
    assert [s["branches"][0]["if"] for s in steps.values() if s["type"] == "condition"] == [
        {"field": "lead.tags", "op": "has", "value": "vip"},
        {"not": {"field": "contact.tags", "op": "has", "value": "new"}}]


def test_a_channel_choice_for_this_chat_and_a_bot_over_64_kb_are_refused() -> None:
    doc = flow({"a": {"type": "message", "text": "hi", "channel_mode": "primary"}})
    with pytest.raises(KommoExportRefused, match="/steps/a/channel_mode: Kommo chooses the channel only"):
        export(doc)
    big = flow({f"s{i}": {"type": "message", "text": "x" * 2000, **({"next": f"s{i + 1}"} if i < 39 else {})}
                for i in range(40)})
    with pytest.raises(KommoExportRefused, match="Kommo takes at most 64 KB of bot code; this bot is 80 KB"):
        export(big)
