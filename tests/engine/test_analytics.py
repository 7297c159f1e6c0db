"""Funnel counts where runs change bots or end early (start_bot with and without a return, a
person stopping the run, a run replaced), and the funnel built from them (``bot/runtime/funnel.py``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bot.builder import compile_document
from bot.engine import events as ev
from bot.engine.analytics import DAY, bucket, bucket_middle
from bot.runtime.funnel import funnel
from bot.simulation.simulator import Simulator

NOW = datetime(2026, 12, 6, 10, tzinfo=UTC)
DAYNO = int(NOW.timestamp() // DAY)


def _flow(bot: str, steps: dict[str, Any], start: str) -> Any:
    return compile_document({"format": "salesbot.flow/1", "id": bot, "start": start, "steps": steps}, version=1)


MAIN = _flow("main", {
    "ask": {"type": "message", "text": "ask", "buttons": [{"title": "Sub", "next": "call"},
                                                          {"title": "Jump", "next": "jump"}]},
    "call": {"type": "start_bot", "bot": "sub", "next": "after"},
    "jump": {"type": "start_bot", "bot": "sub"},
    "after": {"type": "message", "text": "after", "buttons": [{"title": "x", "next": "ask"}]},
}, "ask")
SUB = _flow("sub", {"hi": {"type": "message", "text": "sub", "next": "done"}, "done": {"type": "stop"}}, "hi")


async def test_a_call_leaves_for_the_callee_and_the_return_enters_the_callers_next_step() -> None:
    sim = Simulator(MAIN, bots=[SUB], now=NOW)
    await sim.say("hi")
    await sim.click("Sub")
    assert sim.analytics[("main", 1, DAYNO)] == {"e|ask": 1, "m|ask|call": 1, "l|call|@sub": 1, "e|after": 1}
    assert sim.analytics[("sub", 1, DAYNO)] == {"e|hi": 1, "m|hi|done": 1, "x|done": 1}
    assert sim.visit is not None and (sim.visit.bot, sim.visit.step) == ("main", "after")


async def test_a_jump_leaves_for_the_other_bot_and_a_person_stopping_the_run_ends_the_visit() -> None:
    sim = Simulator(MAIN, bots=[SUB], now=NOW)
    await sim.say("hi")
    await sim.feed(ev.StopBot("operator"))
    assert sim.analytics[("main", 1, DAYNO)] == {"e|ask": 1, "x|ask": 1}
    await sim.say("again")  # a new run at the greeting
    await sim.click("Jump")
    assert sim.analytics[("main", 1, DAYNO)]["l|jump|@sub"] == 1
    assert sim.analytics[("sub", 1, DAYNO)]["x|done"] == 1 and sim.visit is None


async def test_a_run_replaced_by_another_ends_where_it_waited_and_dwell_goes_to_the_day_it_entered() -> None:
    sim = Simulator(MAIN, bots=[SUB], now=NOW)
    await sim.say("hi")
    await sim.wait(2 * DAY)
    await sim.feed(ev.StartBot("sub", None, {}))
    fields = sim.analytics[("main", 1, DAYNO)]
    assert fields["x|ask"] == 1 and fields[f"t|ask|{bucket(2 * DAY)}"] == 1
    assert sim.analytics[("sub", 1, DAYNO + 2)]["e|hi"] == 1


async def test_a_move_from_a_visit_of_an_earlier_day_is_a_leave_there_and_an_entry_today() -> None:
    sim = Simulator(MAIN, bots=[SUB], now=NOW)
    await sim.say("hi")
    await sim.wait(DAY)
    await sim.click("Sub")
    assert sim.analytics[("main", 1, DAYNO)] == {"e|ask": 1, "l|ask|call": 1, f"t|ask|{bucket(DAY)}": 1}
    assert sim.analytics[("main", 1, DAYNO + 1)] == {"e|call": 1, "l|call|@sub": 1, "e|after": 1}


def test_the_funnel_adds_days_and_tells_abandoned_from_waiting_runs() -> None:
    old, young = {"e|a": 4, "m|a|b": 1, "t|a|4": 1}, {"e|a": 3, "x|a": 1}
    [a, b] = funnel({DAYNO - 5: old, DAYNO: young}, order=["a", "b"], abandon_after=DAY, now=NOW.timestamp())
    assert (a.entered, a.left, a.ended, a.abandoned, a.waiting) == (7, {"b": 1}, 1, 3, 2)
    assert a.median_seconds == 0.0  # of the two closed visits (one instant, one ~5 s) the lower median
    assert (b.entered, b.abandoned) == (1, 1) and b.median_seconds is None  # entered by the move a -> b
    [a] = funnel({DAYNO: {"e|a": 3, "l|a|b": 3, "t|a|4": 2, "t|a|9": 1}}, order=["a"], abandon_after=DAY,
                 now=NOW.timestamp())
    assert a.median_seconds == round(bucket_middle(4), 1) and a.waiting == 0


def test_a_bucket_holds_its_durations_within_a_fifth_of_its_middle() -> None:
    for seconds in (1, 1.5, 59, 3600, 86400 * 3):
        middle = bucket_middle(bucket(seconds))
        assert abs(middle - seconds) / seconds < 0.2
