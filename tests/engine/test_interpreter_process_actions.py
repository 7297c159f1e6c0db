"""The process actions on the pure core: ``end_process`` ends the whole run where it stands
(callers too, the rest of the step never runs); the others are requests carrying their rendered
parameters, whose failure takes the step's ``failed`` branch."""

from __future__ import annotations

from bot.engine import effects as fx
from bot.engine import events as ev
from bot.engine.process import score_command

from .helpers import Chat, make_flow, say, texts, trace_events


def test_end_process_ends_the_run_and_its_callers_at_once() -> None:
    inner = make_flow({"end": {"type": "action", "actions": [
        {"do": "set_variable", "name": "x", "value": "1"}, {"do": "end_process"},
        {"do": "add_note", "text": "never"}], "next": "never"},
        "never": say("never")}, id="inner")
    outer = make_flow({"call": {"type": "start_bot", "bot": "inner", "next": "after"},
                       "after": say("back in the caller")}, id="outer")
    chat = Chat(inner, outer, greeting="outer")
    effects = chat.start()
    assert texts(effects) == [] and chat.requests == []  # neither the note nor the caller's message
    assert chat.run.status == "finished" and chat.run.callers == [] and chat.run.bot == "inner"
    assert "run.ended" in trace_events(effects)


def test_process_actions_are_requests_with_their_templates_rendered() -> None:
    flow = make_flow({"go": {"type": "action", "actions": [
        {"do": "send_message", "account": "wa", "text": "Hi {{ contact.name }}", "buttons": [{"title": "Yes"}],
         "template": "cart", "params": ["{{ contact.name }}"]},
        {"do": "send_sms", "account": "sms", "text": "{{ contact.name }}!"},
        {"do": "score", "subtract": 3},
        {"do": "lists", "subscribe": ["news"], "unsubscribe": ["promo"]},
        {"do": "notify", "to": ["a@shop.example"], "text": "{{ contact.name }} came"},
        {"do": "start_process", "process": "cart", "variables": {"who": "{{ contact.name }}"}}]}}, id="p")
    chat = Chat(flow, snapshot={"contact": {"name": "Ann", "score": 1}})
    chat.start()
    payloads = [{k: v for k, v in r.payload.items() if k != "timezone"} for r in chat.requests]
    assert payloads == [
        {"do": "send_message", "account": "wa", "text": "Hi Ann", "buttons": [{"title": "Yes", "url": None}],
         "template": "cart", "params": ["Ann"]},
        {"do": "send_sms", "account": "sms", "text": "Ann!"},
        {"do": "score", "add": None, "subtract": 3},
        {"do": "lists", "subscribe": ["news"], "unsubscribe": ["promo"]},
        {"do": "notify", "to": ["a@shop.example"], "subject": "Salesbot: Ann", "text": "Ann came"},
        {"do": "start_process", "process": "cart", "variables": {"who": "Ann"}},
    ]


def test_a_failed_send_takes_the_failed_branch() -> None:
    flow = make_flow({"go": {"type": "action", "actions": [{"do": "send_message", "account": "wa", "text": "x"}],
                             "next": "ok", "failed": "ko"}, "ok": say("sent"), "ko": say("not sent")}, id="p")

    def refuse(request: fx.Request) -> ev.RequestResult:
        return ev.RequestResult(request.id, ok=False, error="outside_window: closed")
    chat = Chat(flow, answer=refuse)
    assert texts(chat.start()) == ["not sent"]


def test_score_is_the_contacts_score_plus_or_minus_never_below_zero() -> None:
    assert score_command({"do": "score", "add": 5}, {"contact": {"score": 2}})["value"] == 7
    assert score_command({"do": "score", "subtract": 5}, {"contact": {"score": 2}})["value"] == 0
    assert score_command({"do": "score", "add": 1, "depth": 2}, {"contact": {"score": "x"}}) == {
        "do": "set_field", "entity": "contact", "field": "score", "value": 1, "depth": 2}
    assert score_command({"do": "score", "add": 1}, {})["value"] == 1
