"""Bots that run other bots, on the pure core: start_bot as a call (with next) or a hand-over,
unknown bots and the call depth; the version a run is pinned to."""

from __future__ import annotations

import msgpack
import pytest

from bot.engine import events as ev
from bot.engine.flows import FlowLibrary
from bot.engine.interpreter import advance
from bot.engine.state import ConversationState, Frame
from bot.engine.steps.control import MAX_CALL_DEPTH

from .helpers import NOW, Chat, library, make_flow, say, texts, trace_events

# ---------------------------------------------------------------- start_bot
QUALIFY = make_flow(
    {
        "q_ask": {"type": "pause", "next": "q_score"},
        "q_score": {
            "type": "action",
            "actions": [{"do": "set_variable", "name": "score", "value": "{{ vars.base + 5 }}"}],
            "next": "q_end",
        },
        "q_end": {"type": "stop"},
    },
    id="qualify",
    variables={"base": 10},
)


def test_start_bot_with_next_is_a_call_that_returns_with_the_callee_vars() -> None:
    main = make_flow(
        {
            "set": {
                "type": "action",
                "actions": [{"do": "set_variable", "name": "mine", "value": "kept"}],
                "next": "call",
            },
            "call": {"type": "start_bot", "bot": "qualify", "next": "after"},
            "after": say("score {{ vars.qualify.score }}, mine {{ vars.mine }}"),
        },
        id="main",
    )
    chat = Chat(QUALIFY, main, greeting="main")
    chat.start()
    run = chat.run
    assert (run.bot, run.step, run.vars) == ("qualify", "q_ask", {"base": 10})
    assert run.callers == [Frame("main", 1, "after", {"mine": "kept"})]
    chat.say("answer")
    assert texts(chat.last) == ["score 15, mine kept"]
    assert chat.run.bot == "main" and chat.run.status == "finished"
    assert chat.vars == {"mine": "kept", "qualify": {"base": 10, "score": 15}}
    assert trace_events(chat.last).count("run.returned") == 1


def test_returning_from_a_call_does_not_change_the_state_it_was_given() -> None:
    # Regression: the clone shared the caller frame's vars, and returning wrote into them.
    main = make_flow(
        {"call": {"type": "start_bot", "bot": "qualify", "next": "after"}, "after": say("back")},
        id="main",
    )
    lib = library(QUALIFY, main)
    state = advance(
        lib, ConversationState("c1"), ev.InboundMessage("x", greeting="main"), NOW
    ).state
    snapshot = msgpack.packb(state.to_dict())
    out = advance(lib, state, ev.InboundMessage("answer"), NOW)
    assert texts(out.effects) == ["back"]
    assert msgpack.packb(state.to_dict()) == snapshot


def test_start_bot_without_next_replaces_the_bot() -> None:
    main = make_flow(
        {
            "hi": {"type": "message", "text": "hi", "next": "go"},
            "go": {"type": "start_bot", "bot": "qualify"},
        },
        id="main",
        variables={"mine": 1},
    )
    chat = Chat(QUALIFY, main, greeting="main")
    chat.start()
    assert (chat.run.bot, chat.run.callers, chat.vars) == ("qualify", [], {"base": 10})
    chat.say("answer")
    assert chat.run.bot == "qualify" and chat.status == "finished" and texts(chat.last) == []


def test_start_bot_of_an_unknown_bot_fails_the_run() -> None:
    flow = make_flow(
        {"go": {"type": "start_bot", "bot": "nobody", "next": "after"}, "after": say("after")}
    )
    out = advance(
        library(flow), ConversationState("c1"), ev.InboundMessage("x", greeting="bot"), NOW
    )
    assert texts(out.effects) == []
    assert out.state.run is not None and out.state.run.status == "failed"
    assert out.state.run.error == "start_bot: unknown bot 'nobody'"


def test_start_bot_recursion_stops_at_the_call_depth() -> None:
    flow = make_flow(
        {"go": {"type": "start_bot", "bot": "bot", "next": "after"}, "after": say("after")}
    )
    out = advance(
        library(flow), ConversationState("c1"), ev.InboundMessage("x", greeting="bot"), NOW
    )
    run = out.state.run
    assert run is not None and run.status == "failed" and run.callers == []
    assert run.error == f"start_bot: more than {MAX_CALL_DEPTH} nested bot calls"


# ---------------------------------------------------------------- versions
def test_a_run_stays_on_its_version_and_new_runs_take_the_active_one() -> None:
    def version(n: int) -> object:
        return make_flow(
            {"ask": {"type": "pause", "next": "reply"}, "reply": say(f"v{n}")}, version=n
        )

    lib = FlowLibrary()
    lib.add(version(1))  # type: ignore[arg-type]
    old = advance(lib, ConversationState("old"), ev.InboundMessage("x", greeting="bot"), NOW).state
    lib.add(version(2))  # type: ignore[arg-type]
    new = advance(lib, ConversationState("new"), ev.InboundMessage("x", greeting="bot"), NOW).state
    assert old.run is not None and new.run is not None
    assert (old.run.version, new.run.version) == (1, 2)
    assert texts(advance(lib, old, ev.InboundMessage("y"), NOW).effects) == ["v1"]
    assert texts(advance(lib, new, ev.InboundMessage("y"), NOW).effects) == ["v2"]
    finished = advance(lib, old, ev.InboundMessage("y"), NOW).state
    again = advance(lib, finished, ev.InboundMessage("z", greeting="bot"), NOW).state
    assert again.run is not None and again.run.version == 2


def test_flow_library_versions() -> None:
    lib = FlowLibrary()
    v1 = make_flow({"a": say("1")}, version=1)
    v2 = make_flow({"a": say("2")}, version=2)
    lib.add(v1)
    lib.add(v2, activate=False)
    assert lib.get("bot") is v1 and lib.get("bot", 2) is v2 and lib.get("bot", 3) is None
    lib.activate("bot", 2)
    assert lib.get("bot") is v2 and lib.bots() == ["bot"] and lib.get("other") is None
    with pytest.raises(KeyError):
        lib.activate("bot", 3)

