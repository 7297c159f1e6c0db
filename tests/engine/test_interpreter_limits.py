"""Exact limits of the interpreter: the ``start_bot`` call depth (``MAX_CALL_DEPTH`` nested calls
work, one more fails) and, after a hand-back, the earliest of several held timers is the one
that is due first and fires."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from bot.engine import effects as fx
from bot.engine import events as ev
from bot.engine.steps.control import MAX_CALL_DEPTH

from .helpers import NOW, Chat, make_flow, of_type, texts


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
