"""Exact limits of the interpreter: the ``start_bot`` call depth (``MAX_CALL_DEPTH`` nested calls
work, one more fails); after a hand-back, the earliest of several held timers is the one that
is due first and fires; the step budget, per outside event, stops a loop with an error."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from bot.engine import effects as fx
from bot.engine import events as ev
from bot.engine.interpreter import advance
from bot.engine.state import ConversationState
from bot.engine.steps.control import MAX_CALL_DEPTH

from .helpers import NOW, Chat, library, make_flow, of_type, texts


def _chain(calls: int) -> Chat:
    """Bots b0 … b<calls>: each calls the next and, when it returns, says its name."""
    flows = []
    for i in range(calls + 1):
        steps: dict[str, Any] = ({"call": {"type": "start_bot", "bot": f"b{i + 1}", "next": "back"},
                        "back": {"type": "message", "text": f"back in b{i}"}}
                       if i < calls else {"deep": {"type": "message", "text": "deepest"}})
        flows.append(make_flow(steps, id=f"b{i}"))
    return Chat(*flows, greeting="b0")


def test_the_deepest_allowed_chain_of_calls_runs_and_unwinds() -> None:
    assert MAX_CALL_DEPTH == 10
    chat = _chain(MAX_CALL_DEPTH)
    out = chat.start()
    assert texts(out) == ["deepest"] + [f"back in b{i}" for i in reversed(range(MAX_CALL_DEPTH))]
    assert chat.status == "finished" and chat.run.error is None


def test_one_call_more_than_the_limit_fails_the_run() -> None:
    chat = _chain(MAX_CALL_DEPTH + 1)
    out = chat.start()
    assert texts(out) == []
    assert chat.status == "failed"
    assert chat.run.error == f"start_bot: more than {MAX_CALL_DEPTH} nested bot calls"


PAUSE = {
    "wait": {"type": "pause", "until": [{"on": "timer", "after": "2h", "next": "late"},
                                         {"on": "timer", "after": "30m", "next": "soon"},
                                         {"on": "timer", "after": "1h", "next": "middle"}]},
    "late": {"type": "message", "text": "late"},
    "soon": {"type": "message", "text": "soon"},
    "middle": {"type": "message", "text": "middle"},
}


def test_after_a_hand_back_the_earliest_held_timer_is_due_first_and_fires() -> None:
    chat = Chat(make_flow(PAUSE, start="wait"))
    chat.start()
    assert len(chat.timers) == 3
    chat.feed(ev.Takeover("agent"))
    chat.now = NOW + timedelta(hours=3)
    for timer in sorted(chat.timers, key=chat.timers.__getitem__, reverse=True):
        assert texts(chat.fire(timer)) == []  # all three held, latest first
    assert chat.run.wait.held and chat.timers == {}
    out = chat.feed(ev.Release())
    base = chat.now.timestamp()
    rearmed = {t.at - base for t in of_type(out, fx.SetTimer)}
    assert rearmed == {1800.0, 3600.0, 7200.0}
    assert chat.run.wait.until == base + 1800.0 and chat.run.wait.held == ()
    earliest = min(chat.timers, key=chat.timers.__getitem__)
    assert texts(chat.fire(earliest)) == ["soon"]
    assert chat.step == "soon"


def test_held_timers_are_rearmed_once() -> None:
    chat = Chat(make_flow(PAUSE, start="wait"))
    chat.start()
    chat.feed(ev.Takeover("agent"))
    chat.now = NOW + timedelta(hours=3)
    for timer in list(chat.timers):
        chat.fire(timer)
    chat.feed(ev.Release())
    chat.feed(ev.Takeover("agent"))
    out = chat.feed(ev.Release())  # nothing fell due this time: nothing to rearm
    assert of_type(out, fx.SetTimer) == [] and len(chat.timers) == 3


# ---------------------------------------------------------------- step budget
def test_step_budget_stops_a_start_bot_loop_with_an_error() -> None:
    flow = make_flow(
        {
            "hi": {"type": "message", "text": "hi", "next": "again"},
            "again": {"type": "start_bot", "bot": "bot"},
        },
        step_budget=5,
    )
    out = advance(
        library(flow), ConversationState("c1"), ev.InboundMessage("x", greeting="bot"), NOW
    )
    assert texts(out.effects) == ["hi", "hi", "hi"]
    run = out.state.run
    assert run is not None and run.status == "failed"
    assert run.error == "step budget of 5 exhausted at step 'again'"
    assert [t for t in of_type(out.effects, fx.Trace) if t.level == "error"] == [
        fx.Trace("run.failed", "error", {"error": run.error, "bot": "bot", "step": "hi"})
    ]


def test_step_budget_counts_per_outside_event_across_requests() -> None:
    chain = {
        f"a{i}": {
            "type": "action",
            "actions": [{"do": "add_note", "text": f"n{i}"}],
            "next": f"a{i + 1}",
        }
        for i in range(1, 4)
    }
    chain["a4"] = {"type": "pause", "next": "a1"}
    chat = Chat(make_flow(chain, step_budget=4))
    chat.start()
    assert chat.status == "waiting" and len(chat.requests) == 3
    chat.say("again")  # a fresh budget: a1..a3 and the pause again
    assert chat.status == "waiting" and len(chat.requests) == 6
    chat2 = Chat(make_flow(chain, step_budget=3))
    chat2.start()
    assert chat2.status == "failed" and chat2.run.error == "step budget of 3 exhausted at step 'a4'"

