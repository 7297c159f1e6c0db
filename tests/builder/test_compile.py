"""compile_document: the compiled flow is immutable, its templates are ready to render, it has
its opening hours and a digest; it raises FlowInvalid with every problem and never changes
the document."""

from __future__ import annotations

import copy
import dataclasses
from datetime import UTC
from types import MappingProxyType

import pytest

from bot.builder import CompiledFlow, check_document, compile_document
from bot.builder import compiled as c
from bot.builder.templates import Template
from bot.errors import FlowInvalid

from .helpers import flow

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

