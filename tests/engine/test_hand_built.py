"""Objects the hot path builds field by field (``object.__new__`` and one assignment per field)
instead of through the dataclass ``__init__``: the state's clone, the turn, and the message step's
``SendMessage``, ``ChatStatus`` and ``Wait``. Each must set every field its class has, with the value
``__init__`` would give: a field added to one of these classes and not to its fast path fails here."""

from __future__ import annotations

import dataclasses
from dataclasses import fields
from typing import Any

import pytest

from bot.engine import effects as fx
from bot.engine import events as ev
from bot.engine import interpreter
from bot.engine.interpreter import advance
from bot.engine.state import ConversationState, Frame, Run, Wait
from bot.engine.turn import TurnContext

from .helpers import NOW, SNAPSHOT, library, make_flow


def _every_field_set() -> ConversationState:
    """A state whose every field (the run's and its wait's too) differs from its default."""
    run = Run("r9", "bot", 1, "ask", "waiting", {"n": 1}, {"j": 2}, "lvr",
              Wait("reply", "ask", {"c1:t1": "no_answer"}, ("message",), "tok", "q1", 5.0, ("pause:0",), {"w": 1}),
              3, [Frame("outer", 2, "after", {"x": 1}, {"j": 1}, "lvr")], "oops",
              (("bot", "split", "a", 1, "goal"),), ("goal",))
    state = ConversationState("c1", "telegram", "acc", "referral", "human", "user:7", "answered", run,
                              {"text": "hi"}, 17, 4, {"contact_id": "3"}, {"c1:t1": 9.0})
    for cls, obj in ((ConversationState, state), (Run, run), (Wait, run.wait)):
        for f in fields(cls):  # a new field must get a value here too, or this fails
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            assert getattr(obj, f.name) != default, f"{cls.__name__}.{f.name} is its default here"
    return state


def _assert_same_fields(built: Any, reference: Any) -> None:
    """``built`` (by hand) has every field of its class, each equal to ``reference``'s (by ``__init__``)."""
    assert type(built) is type(reference)
    for f in fields(reference):
        assert hasattr(built, f.name), f"{type(built).__name__}.{f.name} not set"
        assert getattr(built, f.name) == getattr(reference, f.name), f.name


@pytest.mark.parametrize("with_run", [True, False])
def test_the_state_clone_sets_every_field(with_run: bool) -> None:
    state = _every_field_set()
    if not with_run:
        state.run = None
    clone = state.clone()
    _assert_same_fields(clone, state)
    if with_run:
        assert clone.run is not None and state.run is not None
        assert clone.run is not state.run
        _assert_same_fields(clone.run, state.run)
        _assert_same_fields(clone.run, state.run.clone())  # the inline copy is Run.clone
        assert clone.run.vars is not state.run.vars
        assert clone.run.callers is not state.run.callers
        assert clone.run.callers[0].vars is not state.run.callers[0].vars


def test_a_clone_of_a_run_without_callers_gets_its_own_list() -> None:
    state = ConversationState("c1", run=Run("r1", "bot", 1, "a"))
    clone = state.clone()
    assert clone.run is not None and state.run is not None
    clone.run.callers.append(Frame("x", 1, "n", {}))
    assert state.run.callers == []


def test_advance_builds_the_turn_as_its_init_does(monkeypatch: pytest.MonkeyPatch) -> None:
    """``advance`` sets the turn's slots itself: every slot, with what ``_Turn(...)`` would set."""
    flows = library(make_flow({"a": {"type": "message", "text": "hi"}}))
    state = advance(flows, ConversationState("c1"), ev.InboundMessage("x", greeting="bot"), NOW, SNAPSHOT).state
    seen: list[TurnContext] = []
    original = interpreter._EVENT_HANDLERS[ev.InboundMessage]

    def spy(turn: Any, e: Any) -> None:
        slots = [s for cls in type(turn).__mro__ for s in getattr(cls, "__slots__", ())]
        reference = interpreter._Turn(flows, state.clone(), NOW, SNAPSHOT)
        for name in slots:
            assert hasattr(turn, name), f"the turn's {name} is not set"
            if name not in ("state", "new_turn"):
                assert getattr(turn, name) == getattr(reference, name), name
        assert turn.state.to_dict() == reference.state.to_dict()
        assert turn.new_turn is True  # an outside event
        seen.append(turn)
        original(turn, e)

    monkeypatch.setitem(interpreter._EVENT_HANDLERS, ev.InboundMessage, spy)
    advance(flows, state, ev.InboundMessage("again"), NOW, SNAPSHOT)
    assert len(seen) == 1


@pytest.mark.parametrize("leave_unanswered", [False, True])
@pytest.mark.parametrize("waits", [False, True])
def test_the_planned_message_step_builds_what_the_generic_one_builds(
    monkeypatch: pytest.MonkeyPatch, leave_unanswered: bool, waits: bool
) -> None:
    """``SendMessage``, ``ChatStatus`` and the reply ``Wait``: field by field as the generic handler's."""
    step: dict[str, Any] = {"type": "message", "text": "Hi {{ contact.name }}", "recipients": "chat"}
    if waits:
        step["buttons"] = [{"title": "Yes", "next": "b"}]
    steps = {"a": step, "b": {"type": "message", "text": "bye"}}

    def run(generic: bool) -> tuple[list[fx.Effect], Wait | None]:
        flow = make_flow(steps, leave_unanswered=leave_unanswered)
        with monkeypatch.context() as mp:
            if generic:
                mp.setattr(interpreter, "_SPECIALISED", {})
            out = advance(library(flow), ConversationState("c1"), ev.InboundMessage("x", greeting="bot"), NOW,
                          SNAPSHOT)
            handler = flow.plan["a"][0]
            assert (handler is interpreter._STEP_HANDLERS[type(flow.steps["a"])]) == generic
        assert out.state.run is not None
        return out.effects, out.state.run.wait

    planned, planned_wait = run(generic=False)
    generic, generic_wait = run(generic=True)
    assert [type(e) for e in planned] == [type(e) for e in generic]
    assert any(isinstance(e, fx.SendMessage) for e in planned)
    assert any(isinstance(e, fx.ChatStatus) for e in planned) == (not leave_unanswered)
    for built, reference in zip(planned, generic, strict=True):
        _assert_same_fields(built, reference)
    assert (planned_wait is None) == (not waits)
    if planned_wait is not None and generic_wait is not None:
        _assert_same_fields(planned_wait, generic_wait)
        _assert_same_fields(planned_wait, Wait("reply", "a"))
        assert planned_wait.timers is not Wait("reply", "a").timers


def test_the_unanswered_status_of_an_inbound_message_is_a_whole_chat_status() -> None:
    flows = library(make_flow({"a": {"type": "message", "text": "hi", "buttons": [{"title": "Yes", "next": "a"}]}}))
    state = advance(flows, ConversationState("c1"), ev.InboundMessage("x", greeting="bot"), NOW, SNAPSHOT).state
    assert state.chat_status == "answered"
    effects = advance(flows, state, ev.InboundMessage("nothing that matches"), NOW, SNAPSHOT).effects
    statuses = [e for e in effects if isinstance(e, fx.ChatStatus)]
    assert len(statuses) == 1
    _assert_same_fields(statuses[0], fx.ChatStatus("unanswered"))
