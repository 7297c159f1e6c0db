"""Events from outside the flow, on the pure core: takeover and release, stop, start; stale
results and CRM events that change nothing; advance never changes the state it is given; ``now``
in templates."""

from __future__ import annotations

from datetime import UTC, datetime

import msgpack

from bot.engine import effects as fx
from bot.engine import events as ev
from bot.engine.flows import FlowLibrary
from bot.engine.interpreter import advance
from bot.engine.state import ConversationState, Run, Wait

from .helpers import NOW, Chat, library, make_flow, of_type, say, texts, trace_events, without_traces

# ---------------------------------------------------------------- takeover, release, stop, start
TAKEOVER = {
    "ask": {
        "type": "message",
        "text": "Yes or no?",
        "buttons": [{"title": "yes", "next": "yes"}],
        "other_answer": "ask",
        "no_answer": {"after": "1h", "next": "nudge"},
    },
    "yes": say("great"),
    "nudge": say("nudge"),
    "menu": say("menu"),
}


def test_while_a_person_has_the_conversation_the_bot_neither_answers_nor_fires_timers() -> None:
    chat = Chat(make_flow(TAKEOVER))
    chat.start()
    timer = next(iter(chat.state.run.wait.timers))
    assert without_traces(chat.feed(ev.Takeover("user:7"))) == []
    assert (chat.state.owner, chat.state.owner_user) == ("human", "user:7")
    assert without_traces(chat.say("yes")) == [fx.ChatStatus("unanswered")]
    assert chat.step == "ask" and chat.status == "waiting"
    out = chat.fire(timer)
    assert without_traces(out) == [] and trace_events(out) == ["timer.held"]
    assert chat.state.run.wait.timers == {}
    chat.feed(ev.Release())
    assert chat.state.owner == "bot" and chat.step == "ask"
    assert texts(chat.say("yes")) == ["great"]  # continues where it was


def test_while_a_person_has_the_conversation_no_run_starts() -> None:
    chat = Chat(make_flow(TAKEOVER))
    chat.feed(ev.Takeover("user:7"))
    out = chat.say("hello")
    assert without_traces(out) == [] and chat.state.run is None
    assert chat.state.last_message is not None and chat.state.last_message["text"] == "hello"


def test_release_at_a_chosen_step_cancels_the_wait() -> None:
    chat = Chat(make_flow(TAKEOVER))
    chat.start()
    timer = next(iter(chat.state.run.wait.timers))
    chat.feed(ev.Takeover("user:7"))
    out = chat.feed(ev.Release("menu"))
    assert without_traces(out) == [
        fx.CancelTimer(timer),
        fx.SendMessage("r1:menu:m4", "menu", "message", "menu"),
    ]
    assert chat.status == "finished" and chat.state.owner == "bot"


def test_release_at_an_unknown_step_only_gives_the_conversation_back() -> None:
    chat = Chat(make_flow(TAKEOVER))
    chat.start()
    chat.feed(ev.Takeover("user:7"))
    out = chat.feed(ev.Release("nope"))
    assert without_traces(out) == [] and "release.unknown_step" in trace_events(out)
    assert chat.state.owner == "bot" and chat.step == "ask" and chat.status == "waiting"


def test_release_at_a_step_revives_a_finished_run() -> None:
    chat = Chat(make_flow(TAKEOVER))
    chat.start()
    chat.say("yes")
    assert chat.status == "finished"
    chat.feed(ev.Takeover("user:7"))
    assert texts(chat.feed(ev.Release("ask"))) == ["Yes or no?"]
    assert chat.status == "waiting" and chat.run.id == "r1"


def test_release_at_a_step_revives_a_failed_run_and_clears_its_error() -> None:
    chat = Chat(make_flow({**TAKEOVER, "boom": {"type": "start_bot", "bot": "ghost"}}))
    chat.start()
    chat.feed(ev.Release("boom"))
    assert chat.status == "failed" and chat.run.error
    chat.feed(ev.Release("menu"))
    assert chat.status == "finished" and chat.run.error is None and texts(chat.last) == ["menu"]


def test_release_without_a_run() -> None:
    chat = Chat(make_flow(TAKEOVER))
    chat.feed(ev.Takeover("user:7"))
    out = chat.feed(ev.Release("ask"))
    assert (
        without_traces(out) == []
        and "release.no_run" in trace_events(out)
        and chat.state.owner == "bot"
    )


def test_video_events_are_ignored_while_a_person_has_the_conversation() -> None:
    chat = Chat(
        make_flow(
            {"w": {"type": "pause", "until": [{"on": "video_opened", "next": "v"}]}, "v": say("v")}
        )
    )
    chat.start()
    chat.feed(ev.Takeover("user:7"))
    assert texts(chat.feed(ev.VideoEvent("video_opened"))) == []
    assert chat.step == "w"


def test_stop_ends_the_run_and_cancels_its_timers() -> None:
    chat = Chat(make_flow(TAKEOVER))
    chat.start()
    timer = next(iter(chat.state.run.wait.timers))
    out = chat.feed(ev.StopBot("operator"))
    assert without_traces(out) == [fx.CancelTimer(timer)]
    assert chat.status == "stopped" and chat.run.wait is None
    assert without_traces(chat.feed(ev.StopBot())) == []  # stopping twice does nothing
    chat.say("hello")
    assert chat.status == "waiting" and chat.run.id != "r1"  # a new run


def test_start_replaces_the_running_bot_at_a_step_with_variables() -> None:
    other = make_flow(
        {"a": say("a"), "b": say("b {{ vars.x }} {{ vars.y }}")}, id="other", variables={"y": "Y"}
    )
    chat = Chat(other, make_flow(TAKEOVER), greeting="bot")
    chat.start()
    timer = next(iter(chat.state.run.wait.timers))
    out = chat.feed(ev.StartBot("other", "b", {"x": 1}))
    assert of_type(out, fx.CancelTimer) == [fx.CancelTimer(timer)]
    assert texts(out) == ["b 1 Y"]
    assert chat.run.bot == "other" and chat.status == "finished"
    out = chat.feed(ev.StartBot("ghost"))
    assert trace_events(out) == ["run.unknown_bot"]


def test_a_start_if_idle_leaves_an_active_run_alone_and_starts_once_it_ended() -> None:
    """Two starts of a process racing each other: the turn, not the caller, decides (issue 13)."""
    other = make_flow({"a": say("a")}, id="other")
    chat = Chat(other, make_flow(TAKEOVER), greeting="bot")
    chat.start()
    run, timers = chat.run.id, dict(chat.state.run.wait.timers)
    out = chat.feed(ev.StartBot("other", if_idle=True))
    assert trace_events(out) == ["run.start_skipped"] and texts(out) == []
    assert chat.run.id == run and chat.status == "waiting" and chat.state.run.wait.timers == timers
    chat.feed(ev.StopBot("operator"))
    out = chat.feed(ev.StartBot("other", if_idle=True))
    assert texts(out) == ["a"] and chat.run.bot == "other"


def test_a_result_for_a_flow_no_longer_loaded_fails_the_run() -> None:
    # Regression: a RequestResult raised KeyError when the run's version had gone.
    flow = make_flow(
        {
            "a": {"type": "action", "actions": [{"do": "add_note", "text": "x"}], "next": "s"},
            "s": {"type": "stop"},
        }
    )
    lib = library(flow)
    out = advance(lib, ConversationState("c1"), ev.InboundMessage("x", greeting="bot"), NOW)
    assert out.request is not None
    out2 = advance(FlowLibrary(), out.state, ev.RequestResult(out.request.id), NOW)
    assert out2.state.run is not None and out2.state.run.status == "failed"
    assert out2.state.run.error == "bot bot v1 is no longer loaded"


def test_a_stale_request_result_is_ignored() -> None:
    chat = Chat(make_flow(TAKEOVER))
    chat.start()
    before = chat.state
    assert without_traces(chat.feed(ev.RequestResult("q999"))) == []
    assert chat.state == before


def test_crm_events_are_only_recorded() -> None:
    chat = Chat(make_flow(TAKEOVER))
    chat.start()
    before = chat.state
    assert chat.feed(ev.CrmEvent("lead.stage_changed", {"stage": "Won"})) == [
        fx.Trace("crm.event", "info", {"type": "lead.stage_changed", "bot": "bot", "step": "ask"})
    ]
    assert chat.state == before


def test_the_state_given_to_advance_is_never_changed() -> None:
    flow = make_flow(TAKEOVER)
    lib = library(flow)
    state = ConversationState(
        "c1",
        run=Run(
            "r9",
            "bot",
            1,
            "ask",
            "waiting",
            {"a": [1]},
            wait=Wait("reply", "ask", {"c1:t1": "no_answer"}),
        ),
    )
    packed = msgpack.packb(state.to_dict())
    for event in (
        ev.InboundMessage("yes"),
        ev.TimerFired("c1:t1"),
        ev.StopBot(),
        ev.Takeover("u"),
        ev.Release("menu"),
        ev.StartBot("bot"),
    ):
        advance(lib, state, event, NOW)
        assert msgpack.packb(state.to_dict()) == packed


def test_now_in_templates_is_in_the_flow_timezone() -> None:
    flow = make_flow(
        {"hi": say("{{ now.hour }}:{{ now.minute }} {{ bot.id }} v{{ bot.version }}")},
        timezone="Europe/Istanbul",
    )
    out = advance(
        library(flow),
        ConversationState("c1"),
        ev.InboundMessage("x", greeting="bot"),
        datetime(2024, 5, 1, 12, 5, tzinfo=UTC),
    )
    assert texts(out.effects) == ["15:5 bot v1"]

