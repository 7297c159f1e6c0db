"""The handlers made for one step (``CompiledFlow.plan``: message, set-variable and condition
steps with their constants bound) do what the generic handlers do: random valid flows and events,
each event applied to the same state by both, give the same state, effects and steps."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.builder.validate import compile_document
from bot.engine import effects as fx
from bot.engine import events as ev
from bot.engine import interpreter
from bot.engine.interpreter import advance
from bot.runtime.interest import listened

from .flow_strategies import SUB, event_specs, flow_docs
from .helpers import SNAPSHOT, Chat, library, make_flow, texts
from .test_interpreter_properties import Harness


class Twin(Harness):
    """Each event through the plan's handlers, and through the generic ones on a copy of the flows."""

    def __init__(self, doc: dict[str, Any], rnd: random.Random) -> None:
        super().__init__(compile_document(doc, version=1), rnd)
        self.generic = library(SUB, compile_document(doc, version=1))  # plans of their own

    def step(self, event: ev.Event) -> Any:
        given_ = self.state
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(interpreter, "_SPECIALISED", {})
            generic = advance(self.generic, given_, event, self.now, self.snapshot)
        effects = super().step(event)
        assert msgpack.packb(self.state.to_dict()) == msgpack.packb(generic.state.to_dict())
        assert effects == generic.effects
        return effects


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=flow_docs(), specs=event_specs(), rnd=st.randoms(use_true_random=False))
def test_planned_handlers_do_what_the_generic_ones_do(
    doc: dict[str, Any], specs: list[tuple[Any, ...]], rnd: random.Random
) -> None:
    twin = Twin(doc, rnd)
    twin.feed(ev.InboundMessage("hello", greeting="bot"))
    for spec in specs:
        twin.play(spec)


def test_set_variable_shortcuts_keep_types_and_failures() -> None:
    """One constant, one expression (its failure becomes "" and a trace), several at once."""
    steps = {
        "a": {"type": "action", "actions": [{"do": "set_variable", "name": "tier", "value": "vip"}], "next": "b"},
        "b": {"type": "action", "actions": [{"do": "set_variable", "name": "n", "value": "{{ vars.n + 1 }}"}],
              "next": "c"},
        "c": {"type": "action", "actions": [{"do": "set_variable", "name": "bad", "value": "{{ vars.nope + 1 }}"}],
              "next": "d"},
        "d": {"type": "action", "actions": [
            {"do": "set_variable", "name": "x", "value": "{{ vars.n * 2 }}"},
            {"do": "set_variable", "name": "y", "value": "{{ contact.name }}!"}], "next": "e"},
        "e": {"type": "message", "text": "{{ vars.tier }} {{ vars.n }} {{ vars.x }} {{ vars.y }} [{{ vars.bad }}]"},
    }
    chat = Chat(make_flow(steps, variables={"n": 1}), snapshot=SNAPSHOT)
    effects = chat.start()
    assert chat.vars == {"n": 2, "tier": "vip", "bad": "", "x": 4, "y": "Ann Lee!"}
    assert chat.run.action_index == 0  # the message step, last, starts at 0
    assert texts(effects) == ["vip 2 4 Ann Lee! []"]
    assert [e.data["error"] for e in effects if isinstance(e, fx.Trace) and e.event == "template.error"] == [
        "'{{ vars.nope + 1 }}': arithmetic on a missing value"]


@pytest.mark.parametrize(("values", "vars_"), [
    (["vip"], {"n": 1, "v0": "vip"}),
    (["{{ vars.n + 1 }}"], {"n": 1, "v0": 2}),
    (["{{ vars.n * 2 }}"], {"n": 1, "v0": 2}),
    (["{{ contact.name }}", "{{ vars.v0 }}?"], {"n": 1, "v0": "Ann Lee", "v1": "Ann Lee?"}),
])
def test_a_run_that_ends_on_a_set_variable_step_keeps_its_action_index(values: list[str], vars_: Any) -> None:
    """The generic handler leaves ``action_index`` past the last action; the state saved says so."""
    actions = [{"do": "set_variable", "name": f"v{i}", "value": v} for i, v in enumerate(values)]
    chat = Chat(make_flow({"a": {"type": "action", "actions": actions}}, variables={"n": 1}), snapshot=SNAPSHOT)
    chat.start()
    assert chat.status == "finished"
    assert chat.vars == vars_
    assert chat.run.action_index == len(values)


def test_a_plan_belongs_to_one_flow_object() -> None:
    """Bots with the same step ids, a version made by ``replace`` and a flow compared after it ran:
    each flow object has its own plan, and the plan is not part of the flow's value."""
    caller = make_flow({"s": {"type": "start_bot", "bot": "callee", "next": "t"},
                        "t": {"type": "message", "text": "back in {{ bot.id }}"}}, id="caller")
    callee = make_flow({"s": {"type": "message", "text": "in {{ bot.id }}"}}, id="callee", leave_unanswered=True)
    chat = Chat(caller, callee, greeting="caller")
    assert texts(chat.start()) == ["in callee", "back in caller"]
    assert chat.state.chat_status == "answered"  # by the caller's message, not the callee's
    assert caller.plan["s"][1] is caller.steps["s"] and callee.plan["s"][1] is callee.steps["s"]
    assert caller == dataclasses.replace(caller) and dataclasses.replace(caller).plan == {}
    other = dataclasses.replace(caller, version=2, steps=callee.steps, leave_unanswered=True)
    assert other.plan == {} and other.memo is caller.memo  # memo: shared by replace
    chat = Chat(other, greeting="caller")
    assert texts(chat.start()) == ["in caller"] and chat.state.chat_status == "unanswered"


@pytest.mark.parametrize("generic", [False, True])
@pytest.mark.parametrize("interest_first", [True, False])
def test_a_condition_step_named_like_a_memo_key_keeps_apart_from_it(generic: bool, interest_first: bool) -> None:
    """A step id is any ``[A-Za-z0-9_-]``: a condition called ``listened`` (the key under which
    ``bot.runtime.interest`` keeps a flow's event types in ``CompiledFlow.memo``) neither reads
    those types as its branches nor leaves its branches where the event types are read."""
    branch = {"if": {"field": "vars.n", "op": "eq", "value": 1}, "next": "yes"}
    flow = make_flow({
        "listened": {"type": "condition", "branches": [branch], "else": "wait"},
        "yes": {"type": "message", "text": "yes", "next": "wait"},
        "wait": {"type": "pause", "until": [{"on": "event", "event": "custom.cart", "next": "yes"}]},
    }, variables={"n": 1})
    if interest_first:  # as a server does when it loads the flow
        assert listened(flow) == {"custom.cart"}
    with pytest.MonkeyPatch.context() as mp:
        if generic:
            mp.setattr(interpreter, "_SPECIALISED", {})
        chat = Chat(flow)
        assert texts(chat.start()) == ["yes"]
    assert listened(flow) == {"custom.cart"}
