"""Steps that wait, on the pure core: pause (message, timer, working hours and video events;
the first event wins) and timers that are no longer current."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from bot.engine import effects as fx
from bot.engine import events as ev
from bot.engine.interpreter import advance
from bot.engine.state import ConversationState, Wait

from .helpers import Chat, library, make_flow, of_type, say, texts, without_traces

IST = ZoneInfo("Europe/Istanbul")


# ---------------------------------------------------------------- pause
PAUSE = {
    "wait": {
        "type": "pause",
        "until": [
            {"on": "message", "next": "got"},
            {"on": "timer", "after": "1d", "next": "nudge"},
            {"on": "working_hours", "next": "open"},
            {"on": "video_opened", "next": "watched"},
        ],
    },
    "got": say("got"),
    "nudge": say("nudge"),
    "open": say("open"),
    "watched": say("watched"),
}
FRIDAY_EVENING = datetime(2024, 5, 3, 20, 0, tzinfo=IST)
MONDAY_OPENING = datetime(2024, 5, 6, 9, 0, tzinfo=IST).timestamp()


def pause_flow() -> object:
    return make_flow(PAUSE, timezone="Europe/Istanbul", working_hours={"mon-fri": "09:00-18:00"})


def test_pause_outside_working_hours_sets_one_timer_per_timed_event() -> None:
    assert MONDAY_OPENING == 1714975200.0
    out = advance(
        library(pause_flow()),
        ConversationState("c1"),
        ev.InboundMessage("x", greeting="bot"),
        FRIDAY_EVENING,
    )
    now = FRIDAY_EVENING.timestamp()
    assert without_traces(out.effects) == [
        fx.SetTimer("c1:t2", now + 86400, "pause"),
        fx.SetTimer("c1:t3", MONDAY_OPENING, "pause"),
    ]
    assert out.state.run is not None
    assert out.state.run.wait == Wait(
        "pause",
        "wait",
        {"c1:t2": "pause:1", "c1:t3": "pause:2"},
        ("message", "timer", "working_hours", "video_opened"),
        until=now + 86400,
    )


@pytest.mark.parametrize(
    ("event", "answer", "cancelled"),
    [
        (ev.InboundMessage("hi"), "got", ["c1:t2", "c1:t3"]),
        (ev.TimerFired("c1:t2"), "nudge", ["c1:t3"]),
        (ev.TimerFired("c1:t3"), "open", ["c1:t2"]),
        (ev.VideoEvent("video_opened"), "watched", ["c1:t2", "c1:t3"]),
    ],
)
def test_pause_the_first_event_wins_and_the_others_are_cancelled(
    event: ev.Event, answer: str, cancelled: list[str]
) -> None:
    lib = library(pause_flow())
    state = advance(
        lib, ConversationState("c1"), ev.InboundMessage("x", greeting="bot"), FRIDAY_EVENING
    ).state
    out = advance(lib, state, event, FRIDAY_EVENING + timedelta(hours=1))
    assert of_type(out.effects, fx.CancelTimer) == [fx.CancelTimer(t) for t in cancelled]
    assert texts(out.effects) == [answer]
    later = advance(lib, out.state, ev.TimerFired(cancelled[0]), FRIDAY_EVENING + timedelta(days=3))
    assert later.state == out.state and without_traces(later.effects) == []


def test_pause_working_hours_fires_at_once_when_open() -> None:
    monday_10 = datetime(2024, 5, 6, 10, 0, tzinfo=IST)
    out = advance(
        library(pause_flow()),
        ConversationState("c1"),
        ev.InboundMessage("x", greeting="bot"),
        monday_10,
    )
    assert without_traces(out.effects) == [
        fx.SendMessage("r1:open:m2", "open", "message", "open"),
        fx.ChatStatus("answered"),
    ]


def test_pause_video_closed_and_unrelated_video_events() -> None:
    flow = make_flow(
        {
            "wait": {"type": "pause", "until": [{"on": "video_closed", "next": "closed"}]},
            "closed": say("closed"),
        }
    )
    chat = Chat(flow)
    chat.start()
    before = chat.state
    assert without_traces(chat.feed(ev.VideoEvent("video_opened"))) == []
    assert chat.state == before
    assert texts(chat.feed(ev.VideoEvent("video_closed"))) == ["closed"]


def test_pause_defaults_to_the_next_message() -> None:
    chat = Chat(make_flow({"wait": {"type": "pause", "next": "done"}, "done": say("done")}))
    assert texts(chat.start()) == []
    assert (chat.step, chat.status) == ("wait", "waiting")
    assert texts(chat.say("hi")) == ["done"]


def test_a_timer_for_a_step_that_is_no_longer_current_does_nothing() -> None:
    flow = make_flow(
        {
            "p1": {
                "type": "pause",
                "until": [
                    {"on": "message", "next": "p2"},
                    {"on": "timer", "after": "1h", "next": "x"},
                ],
            },
            "p2": {"type": "pause", "until": [{"on": "timer", "after": "2h", "next": "y"}]},
            "x": say("x"),
            "y": say("y"),
        }
    )
    chat = Chat(flow)
    chat.start()
    old_timer = next(iter(chat.state.run.wait.timers))
    chat.say("go")
    assert chat.step == "p2"
    before = chat.state
    out = chat.feed(ev.TimerFired(old_timer))
    assert out == [
        fx.Trace("timer.stale", "debug", {"timer": old_timer, "bot": "bot", "step": "p2"})
    ]
    assert chat.state == before


def test_a_timer_of_an_old_run_does_nothing() -> None:
    flow = make_flow(
        {
            "p": {
                "type": "pause",
                "until": [
                    {"on": "message", "next": "s"},
                    {"on": "timer", "after": "1h", "next": "s"},
                ],
            },
            "s": {"type": "stop"},
        }
    )
    chat = Chat(flow)
    chat.start()
    old_timer = next(iter(chat.state.run.wait.timers))
    chat.say("done")  # run 1 ends
    chat.say("again")  # run 2 waits at p with its own timer
    assert old_timer not in chat.state.run.wait.timers
    before = chat.state
    assert without_traces(chat.feed(ev.TimerFired(old_timer))) == []
    assert chat.state == before

