"""The process actions in the flow format: what the validator accepts and refuses, with pointers."""

from __future__ import annotations

from typing import Any

import pytest

from bot.builder.validate import check_document


def _doc(action: dict[str, Any]) -> dict[str, Any]:
    return {"format": "salesbot.flow/1", "id": "p", "start": "a",
            "steps": {"a": {"type": "action", "actions": [action]}}}


@pytest.mark.parametrize("action", [
    {"do": "start_process", "process": "cart", "variables": {"x": "{{ contact.name }}"}},
    {"do": "end_process"},
    {"do": "score", "add": 5}, {"do": "score", "subtract": 1},
    {"do": "lists", "subscribe": ["news"], "unsubscribe": ["email", "promo"]},
    {"do": "notify", "to": ["a@shop.example", "b@shop.example"], "text": "{{ contact.name }}"},
    {"do": "send_sms", "account": "sms", "text": "Hi"},
    {"do": "send_message", "account": "wa", "text": "Hi", "buttons": [{"title": "Yes"},
                                                                      {"title": "Go", "url": "https://x.example"}]},
    {"do": "send_message", "account": "wa", "template": "cart", "params": {"1": "{{ contact.name }}"}},
])
def test_valid_process_actions(action: dict[str, Any]) -> None:
    problems, compiled = check_document(_doc(action))
    assert compiled is not None, problems


@pytest.mark.parametrize(("action", "message"), [
    ({"do": "start_process", "process": "Not An Id"}, '"Not An Id" is not a valid process'),
    ({"do": "score"}, "exactly one of add or subtract"),
    ({"do": "score", "add": 1, "subtract": 1}, "exactly one of add or subtract"),
    ({"do": "score", "add": 0}, "greater than or equal to 1"),
    ({"do": "lists"}, "subscribe, unsubscribe or both"),
    ({"do": "lists", "subscribe": ["a"], "unsubscribe": ["a"]}, "not both"),
    ({"do": "lists", "subscribe": ["email"]}, "opts in again only by itself"),
    ({"do": "lists", "subscribe": ["Bad Name"]}, '"Bad Name" is not a valid value'),
    ({"do": "notify", "to": [], "text": "x"}, "at least 1"),
    ({"do": "notify", "to": [f"a{i}@x.example" for i in range(6)], "text": "x"}, "at most 5"),
    ({"do": "notify", "to": ["not an address"], "text": "x"}, '"not an address" is not a valid value'),
    ({"do": "send_sms", "text": "x"}, "required"),
    ({"do": "send_sms", "account": "sms", "text": ""}, "at least 1 character"),
    ({"do": "send_message", "account": "wa"}, "needs text, a template or both"),
    ({"do": "send_message", "account": "wa", "text": "x", "buttons": [{"title": "a", "next": "b"}]},
     'unknown key "next"'),  # a reply reaches the contact's chat, not the process: no branch
    ({"do": "end_process", "now": True}, 'unknown key "now"'),
])
def test_invalid_process_actions_are_reported_at_the_action(action: dict[str, Any], message: str) -> None:
    problems, compiled = check_document(_doc(action))
    assert compiled is None
    assert any(p.pointer.startswith("/steps/a/actions/0") and message in p.message for p in problems), problems


def test_a_template_error_in_a_process_action_names_its_field() -> None:
    problems, _ = check_document(_doc({"do": "send_sms", "account": "sms", "text": "{{ broken"}))
    assert [p.pointer for p in problems] == ["/steps/a/actions/0/text"]
