"""Import of each Kommo handler and document shape: what it becomes, what is approximated or kept as
a custom step (with the original and a pointer), and the errors malformed input gets."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bot.builder.validate import check_document
from bot.kommo_import import mapping
from bot.kommo_import.build import unwrap_original
from bot.kommo_import.convert_in import convert
from bot.kommo_import.result import Conversion, KommoImportError

MAP = mapping.from_document({"fields": {"4242": "participation"}, "stages": {"142": "won"},
                             "users": {"9001": "anna"}})


def h(name: str, params: Any = None) -> dict[str, Any]:
    return {"handler": name, "params": {} if params is None else params}


def act(name: str, **params: Any) -> dict[str, Any]:
    return h("action", {"name": name, "params": params})


def show(text: str, buttons: list[str] | None = None) -> dict[str, Any]:
    if buttons is None:
        return h("show", {"type": "text", "value": text})
    return h("show", {"type": "buttons", "value": text, "buttons": buttons})


def goto(step: int, kind: str = "question") -> dict[str, Any]:
    return h("goto", {"type": kind, "step": step})


def imp(doc: Any) -> Conversion:
    result = convert(doc, bot_id="t", kommo_map=MAP)
    problems, _ = check_document(result.flow)
    assert [str(p) for p in problems if p.severity == "error"] == []
    return result


def steps(doc: Any) -> dict[str, Any]:
    found: dict[str, Any] = imp(doc).flow["steps"]
    return found


def error(doc: Any) -> tuple[str, str]:
    with pytest.raises(KommoImportError) as caught:
        convert(doc, bot_id="t", kommo_map=MAP)
    return caught.value.pointer, caught.value.message


# ---------------------------------------------------------------- documents
def test_array_object_and_export_forms_give_the_same_flow() -> None:
    bot = [{"question": [show("Hi")], "answer": [goto(1)]}, {"question": [show("Bye")]}]
    as_object = {"0": bot[0], "1": bot[1], "conversation": False}
    envelope = {"type_functionality": 0, "model": {"text": json.dumps(as_object), "name": "Greeter", "type": 2}}
    flows = [imp(d).flow for d in (bot, as_object, envelope)]
    assert flows[0] == flows[1] == {k: v for k, v in flows[2].items() if k != "name"}
    assert flows[2]["name"] == "Greeter"
    assert flows[0]["steps"] == {
        "q0": {"type": "message", "text": "Hi", "next": "wait_a0"},
        "wait_a0": {"type": "pause", "until": [{"on": "message", "next": "a0"}]},
        "a0": {"type": "goto", "step": "q1"},
        "q1": {"type": "message", "text": "Bye"},
    }


def test_steps_run_in_order_and_finish_ends_the_bot() -> None:
    s = steps([{"question": [show("one")]}, {"question": [show("two")], "finish": [h("stop")]},
               {"question": [show("never after a finish")]}])
    assert s["q0"] == {"type": "message", "text": "one", "next": "q1"}
    assert s["q1"] == {"type": "message", "text": "two", "next": "f1"}
    assert s["f1"] == {"type": "stop"}


def test_goto_reaches_each_section_and_wait_answer_waits_first() -> None:
    s = steps([{"question": [show("menu")], "answer": [goto(1, "answer")]},
               {"question": [h("wait_answer", {"type": "question", "step": 0})], "answer": [goto(0, "finish")],
                "finish": [h("stop", {"action": "talk-close"})]},
               {"question": [show("x")], "finish": []}])
    assert s["a0"] == {"type": "goto", "step": "a1"}
    assert s["a1"] == {"type": "goto", "step": "f0"}
    assert s["f0"] == {"type": "stop"}
    assert s["q1"] == {"type": "pause", "until": [{"on": "message", "next": "q0"}]}


def test_handlers_after_a_goto_are_reported() -> None:
    r = imp([{"question": [goto(1), show("lost")]}, {"question": [show("found")]}])
    assert [str(w) for w in r.warnings] == ["/0/question/1: never runs: it comes after a goto or wait_answer"]


def test_the_root_error_handlers_are_every_message_s_failed_branch() -> None:
    s = steps({"0": {"question": [show("Hi")]}, "error": [act("set_tag", type=2, value="blocked")]})
    assert s["q0"]["failed"] == "on_error"
    assert s["on_error"] == {"type": "action", "actions": [{"do": "tags", "entity": "lead", "add": ["blocked"]}]}


# ---------------------------------------------------------------- sending
def test_buttons_before_the_wait_become_one_waiting_message() -> None:
    s = steps([{"question": [show("Pick", ["A", "B"]), act("set_tag", value="asked")],
                "answer": [h("buttons", [{"value": "A", "params": [show("You took A")]},
                                         {"regex": "/^b$/i", "params": [show("You took B")]}])]}])
    assert s["q0"] == {"type": "action", "actions": [{"do": "tags", "entity": "lead", "add": ["asked"]}],
                       "next": "q0_1"}
    assert s["q0_1"] == {"type": "message", "text": "Pick", "buttons": [{"title": "A", "next": "a0"},
                                                                       {"title": "B", "next": "a0"}],
                         "other_answer": "a0"}
    assert s["a0"]["branches"] == [
        {"if": {"field": "message.text", "op": "eq", "value": "A"}, "next": "a0_1"},
        {"if": {"field": "message.text", "op": "matches", "value": "(?i)^b$"}, "next": "a0_2"}]


def test_buttons_where_the_bot_does_not_wait_are_listed_in_the_text() -> None:
    r = imp([{"question": [show("Pick", ["A", "B"])]}])
    assert r.flow["steps"]["q0"] == {"type": "message", "text": "Pick\n- A\n- B"}
    assert r.approximated == 1 and r.warnings[0].pointer == "/0/question/0"


def test_link_buttons_quick_replies_and_external_messages() -> None:
    r = imp([{"question": [
        h("show", {"type": "buttons_url", "value": "Links", "buttons": [{"text": "Bing", "url": "https://bing.com"},
                                                                        "https://google.com"]}),
        h("show", {"type": "text", "value": "Phone?", "quick_replies": ["user_phone_number"]}),
        h("send_external_message", {"message": {"type": "external", "text": "Choose", "buttons": [
            {"type": "inline", "text": "Option 1"}, {"type": "url", "text": "Site", "url": "https://x.io"}]},
            "recipient": {"type": "all_contacts", "way_of_communication": "last_active"}, "channels": [],
            "on_error": goto(1)})],
        "answer": []}, {"question": [show("failed")]}])
    s = r.flow["steps"]
    assert s["q0"]["buttons"] == [{"title": "Bing", "url": "https://bing.com"},
                                  {"title": "https://google.com", "url": "https://google.com"}]
    assert s["q0_2"] == {"type": "message", "text": "Choose", "recipients": "all_contacts", "channel_mode": "primary",
                         "failed": "q1", "buttons": [{"title": "Option 1", "next": "a0"},
                                                     {"title": "Site", "url": "https://x.io"}], "other_answer": "a0"}
    assert [w.pointer for w in r.warnings] == ["/0/question/1/params/quick_replies"]


def test_builder_messages_internal_messages_and_widgets() -> None:
    r = imp([{"question": [
        h("send_message", {"text": "hola {{contact.first_name}}", "type": "external", "chat_sources": [{"id": 1}]}),
        h("send_internal", {"entity_id": "{{lead.id}}", "entity_type": 2, "message": "Call {{name}}", "user_id": 9001}),
        h("widget_request", {"url": "https://x.io/hook", "data": {"lead": "{{lead.id}}"}})]}])
    s = r.flow["steps"]
    assert s["q0"] == {"type": "message", "text": "hola {{ contact.first_name }}", "next": "q0_1"}
    assert s["q0_1"] == {"type": "internal_message", "text": "Call {{ contact.name }}", "to": ["user:anna"],
                         "next": "q0_2"}
    assert s["q0_2"] == {"type": "widget", "widget": "http_request", "wait": {"timeout": "7d"},
                         "params": {"url": "https://x.io/hook", "data": {"lead": "{{ lead.id }}"}}}
    assert (r.converted, r.approximated, r.custom) == (3, 0, 0)


# ---------------------------------------------------------------- actions
def test_every_crm_action_maps_to_ours() -> None:
    s = steps([{"question": [
        act("set_tag", type=2, value="{{origin}}"), act("unset_tag", type=1, value="cold"),
        act("change_status", value=142), act("set_custom_fields", type=2, value="{{message_text}}",
                                             custom_fields_id=4242),
        act("set_custom_fields", type="lead", value="x", custom_field="{{contact.cf.4242}}"),
        act("set_budget", value="{{lead.cf.1}}*{{lead.cf.2}} + 10"),
        act("add_note", element_type=1, note_type=4, text="Note"), act("change_responsible_user", value=9001, type=2),
        act("subscribe", type="user", value=9001), act("unsubscribe", type="user", value=77),
        act("webhook", url="https://x.io", data={"id": "{{lead.id}}"}),
        act("add_task", text="Call", task_type_id=2, responsible_user_id=9001)]}])
    actions = [s[sid]["actions"][0] for sid in ["q0", *(f"q0_{i}" for i in range(1, 12))]]
    assert actions == [
        {"do": "tags", "entity": "lead", "add": ["{{ chat.channel }}"]},
        {"do": "tags", "entity": "contact", "remove": ["cold"]},
        {"do": "change_stage", "stage": "won"},
        {"do": "set_field", "entity": "lead", "field": "participation", "value": "{{ message.text }}"},
        {"do": "set_field", "entity": "contact", "field": "participation", "value": "x"},
        {"do": "set_field", "entity": "lead", "field": "price",
         "value": "{{ (lead.fields.cf_1 | float)*(lead.fields.cf_2 | float) + 10 }}"},
        {"do": "add_note", "entity": "contact", "text": "Note"},
        {"do": "change_responsible", "user": "anna", "entities": ["lead"]},
        {"do": "subscribers", "add": ["anna"]},
        {"do": "subscribers", "remove": [77]},
        {"do": "send_webhook", "url": "https://x.io", "method": "POST", "body": {"id": "{{ lead.id }}"}},
        {"do": "add_task", "text": "Call", "task_type": "meeting", "responsible": "anna"},
    ]


def test_send_email_by_template_or_text() -> None:
    r = imp([{"question": [act("send_email", template_id=17), act("send_email", subject="Hi {{name}}", text="Offer",
                                                                   to="all_contacts")]}])
    assert r.flow["steps"]["q0"]["actions"] == [{"do": "send_email", "template": "17"}]
    assert r.flow["steps"]["q0_1"]["actions"] == [{"do": "send_email", "to": "all_contacts", "template": {
        "subject": "Hi {{ contact.name }}", "body": "Offer"}}]
    assert r.approximated == 2


def test_unmapped_ids_stay_numbers_with_one_warning_each() -> None:
    r = imp([{"question": [act("change_status", value=7), act("change_status", value=7),
                           act("set_custom_fields", type=2, value="v", custom_fields_id=55)]}])
    assert r.flow["steps"]["q0"]["actions"] == [{"do": "change_stage", "stage": 7}]
    assert [w.pointer for w in r.warnings] == ["/0/question/0/params/params/value",
                                               "/0/question/2/params/params/custom_fields_id"]


def test_meta_and_builder_triggers() -> None:
    r = imp([{"question": [
        h("meta", {"delimiter": "-", "values": ["lead.tags", "lead.custom_fields.4242"]}),
        h("trigger", {"trigger": {"delay": 0, "action": "create_task", "settings": {
            "task_text": "Call back", "task_type": "1", "deadline-days": "", "deadline-hours": "2",
            "deadline-minutes": "30", "responsible_user": "9001"}}, "element_type": "lead"})]}])
    s = r.flow["steps"]
    assert s["q0"]["actions"][1]["field"] == "participation"
    assert s["q0_1"]["actions"] == [{"do": "add_task", "text": "Call back", "task_type": "follow_up",
                                     "responsible": "anna", "due": "2h30m"}]
    assert (r.converted, r.approximated) == (1, 1)


# ---------------------------------------------------------------- branching
def test_conditions_with_every_operation() -> None:
    def pred(**c: Any) -> Any:
        s = steps([{"question": [h("condition", {**c, "result": [show("yes")]}), show("no")]}])
        return s["q0"]["branches"][0]["if"]

    assert pred(term1="chat.origin", term2="telegram", operation="=") == {
        "field": "chat.channel", "op": "eq", "value": "telegram"}
    assert pred(term1="lead.tags", term2="vip", operation="=") == {"field": "lead.tags", "op": "has", "value": "vip"}
    assert pred(term1="lead.tags", term2="vip", operation="!=") == {
        "not": {"field": "lead.tags", "op": "has", "value": "vip"}}
    assert pred(term1="{{lead.cf.4242}}", term2="a, b", operation="in") == {
        "field": "lead.fields.participation", "op": "in", "value": ["a", "b"]}
    assert pred(term1="{{json.n}}", term2=["1"], operation="not_in") == {"field": "json.n", "op": "not_in",
                                                                         "value": ["1"]}
    assert pred(term1="{{lead.price}}", term2={"from": 1, "to": 9}, operation="in_range") == {
        "field": "lead.price", "op": "between", "value": [1, 9]}
    s = steps([{"question": [h("conditions", {"logic": "or", "conditions": [
        {"term1": "{{message_text}}", "term2": "1", "operation": "=", "value_type": "custom_value"},
        {"term1": "{{message_text}}", "term2": "one", "operation": "="}], "result": [goto(1)]})]},
        {"question": [show("one")]}])
    assert s["q0"] == {"type": "condition", "branches": [{"if": {"any": [
        {"field": "message.text", "op": "eq", "value": "1"}, {"field": "message.text", "op": "eq", "value": "one"}]},
        "next": "q1"}], "else": "q1"}


def test_validations_of_every_type() -> None:
    def cond(kind: str, value: Any, op: str = "contains") -> dict[str, Any]:
        return {"client_value": "{{message_text}}", "type": kind, "condition_value": value, "operation": op}

    s = steps([{"question": [h("validations", {"logic": "or", "conditions": [
        cond("regex", "/[0-9]+/"), cond("regex", "/spam/i", "not_contains"), cond("simple", "654", "equal"),
        cond("simple", "5", "length"), cond("simple", "no", "not_contains"), cond("email", ""),
        cond("phone", "", "not_contains"), cond("range_numbers", {"from": 123, "to": 321})],
        "result": [show("ok")]})]}])
    assert s["q0"]["logic"] == "any" and s["q0"]["value"] == "{{ message.text }}"
    assert s["q0"]["rules"] == [
        {"check": "regex", "pattern": "[0-9]+"}, {"check": "regex", "pattern": "^(?s)(?!.*(?:(?i)spam))"},
        {"check": "equals", "value": "654"}, {"check": "length", "min": 5, "max": 5},
        {"check": "not_contains", "kind": "text", "value": "no"}, {"check": "contains", "kind": "email"},
        {"check": "not_contains", "kind": "phone"}, {"check": "contains", "kind": "range", "min": 123, "max": 321}]
    assert s["q0"]["pass"] == "q0_1"


def test_presets_become_validation_steps() -> None:
    r = imp([{"question": [show("Phone and e-mail?")], "answer": [
        h("preset", {"name": "contacts.validate_base_info", "params": {"success": "Thanks", "empty_all": "Both?"}})]},
        {"question": [h("preset", {"name": "contacts.get_base_info"})]}])
    kinds = sorted(s["type"] for s in r.flow["steps"].values())
    assert kinds.count("validation") == 4 and r.approximated == 2
    kept = r.flow["steps"]["a0"]["x-kommo"]  # for export: the original, where it goes on, its steps
    assert kept["handler"]["params"]["name"] == "contacts.validate_base_info" and kept["next"] == "q1"
    assert set(kept["steps"]) == {sid for sid in r.flow["steps"] if sid.startswith("a0_")} | {"wait_a0_again_1"}


# ---------------------------------------------------------------- custom steps
@pytest.mark.parametrize(("handler", "kind"), [
    (h("find", {"type": "catalog_elements", "params": {"value": "Salesbot", "catalog_id": "15123", "actions": [
        show("Found {{founded_id}}")]}}), "find"),
    (h("filter", {"type": 2, "value": "{{lead.cf.111}}", "custom_fields_id": 222, "actions": []}), "filter"),
    (h("exits", {"value": "success"}), "exits"),
    (act("link", **{"from": 2, "to": 11, "to_id": "{{founded_id}}", "to_catalog_id": 123}), "action.link"),
    (act("unsorted", value="accept"), "action.unsorted"),
    (act("subscribe", type="group", value=111), "action.subscribe"),
    (h("preset", {"name": "contacts.other"}), "preset"),
    (h("trigger", {"trigger": {"action": "send_email"}}), "trigger.send_email"),
])
def test_what_has_no_equivalent_is_a_custom_step_with_the_original(handler: dict[str, Any], kind: str) -> None:
    r = imp([{"question": [show("before"), handler, show("after")]}])
    step = r.flow["steps"]["q0_1"]
    assert step["type"] == "custom" and step["handler"] == f"kommo.{kind}" and step["next"] == "q0_2"
    assert unwrap_original(step["params"]["kommo"]) == handler
    assert r.custom == 1 and r.converted == 2
    assert [w.pointer for w in r.warnings] == ["/0/question/1"]
    assert f"kept as a custom step (kommo.{kind})" in r.warnings[0].message


def test_stop_closes_the_chat_or_starts_another_bot() -> None:
    s = steps([{"question": [show("bye")], "finish": [h("stop", {"action": "talk-close"}),
                                                      h("stop", {"action": "salesbot-start", "bot": 1234})]}])
    assert s["f0"] == {"type": "action", "actions": [{"do": "set_chat_status", "status": "closed"}], "next": "f0_1"}
    assert s["f0_1"] == {"type": "start_bot", "bot": "kommo-1234"}


def test_the_summary_counts_handlers() -> None:
    r = imp([{"question": [show("a"), h("find", {"type": "contact_double"}), show("{{lead.status_id}}")]}])
    assert r.summary() == "1 handler(s) converted, 1 approximated, 1 left as custom step(s), 2 warning(s)"


# ---------------------------------------------------------------- malformed input
@pytest.mark.parametrize(("doc", "pointer", "message"), [
    ("text", "", "a Salesbot document is an array of steps or an object keyed by step number"),
    ([], "", "the bot has no steps"),
    ({"zero": {}}, "/zero", '"zero" is not a step number'),
    ([[]], "/0", "a step is an object"),
    ([{"questions": []}], "/0/questions", 'unknown step key "questions"'),
    ([{"question": {}}], "/0/question", "must be a list of handlers"),
    ([{"question": ["show"]}], "/0/question/0", "a handler is an object"),
    ([{"question": [h("ask")]}], "/0/question/0/handler", 'unknown handler "ask"'),
    ([{"question": [goto(3)]}], "/0/question/0/params/step", "there is no step 3"),
    ([{"question": [h("goto", {"type": "later", "step": 0})]}], "/0/question/0/params/type", "type must be"),
    ([{"question": [h("show", {"type": "text", "value": 5})]}], "/0/question/0/params/value", "must be text"),
    ([{"question": [h("show", "hi")]}], "/0/question/0/params", "show: params must be an object"),
    ([{"question": [h("buttons", {})]}], "/0/question/0/params", "buttons: params must be a list"),
    ([{"question": [act("change_status", value="won")]}], "/0/question/0/params/params/value", "must be a Kommo id"),
    ([{"question": [h("condition", {"term1": "x", "term2": 1, "operation": "~"})]}],
     "/0/question/0/params/operation", "unknown operation"),
    ([{"question": [h("validations", {"conditions": [{"type": "zip", "operation": "contains"}]})]}],
     "/0/question/0/params/conditions/0/type", "unknown validation type"),
    ({"model": {"text": "{not json"}}, "/model/text", "model.text is not JSON"),
    ([{"question": [h("validations", {"logic": [], "conditions": [{"type": "email"}]})]}],
     "/0/question/0/params/logic", "logic must be and or or"),
    ({"0": {"question": [goto(1)]}, "1": {"question": [goto(0)]}}, "/1/question",
     "can run without ever waiting for the customer"),
    ([{"question": [goto(0)]}], "/0/question", "loop q0 → q0 can run without ever waiting"),
    ([{"answer": [goto(0, "answer")]}], "/0/answer", "loop a0 → a0 can run without ever waiting"),
    ([{"question": [h("buttons", [{"regex": "/([a-z/", "params": []}])]}], "/0/question/0", "does not compile"),
])
def test_malformed_input_names_its_pointer(doc: Any, pointer: str, message: str) -> None:
    found_pointer, found_message = error(doc)
    assert found_pointer == pointer and message in found_message


def test_a_condition_on_what_has_no_equivalent_is_a_custom_step() -> None:
    r = imp([{"question": [h("condition", {"term1": "{{founded_id}}", "term2": "1", "operation": "=",
                                           "result": [show("found")]})]}])
    assert r.flow["steps"]["q0"]["handler"] == "kommo.condition" and r.custom == 1


def test_handlers_nested_too_deeply_are_an_error_not_a_traceback() -> None:
    """review15: a 64 KB document can nest conditions hundreds deep; the importer recursed past
    Python's limit and the CLI printed a RecursionError traceback."""
    doc: list[Any] = []
    inner = doc
    for _ in range(200):
        nested: list[Any] = []
        inner.append(h("condition", {"term1": "lead.price", "term2": "1", "operation": "=", "result": nested}))
        inner = nested
    assert len(json.dumps([{"question": doc}])) < 64 * 1024
    found_pointer, found_message = error([{"question": doc}])
    assert found_pointer == "" and "nested too deeply" in found_message
