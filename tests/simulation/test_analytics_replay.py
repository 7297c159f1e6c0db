"""Analytics counts equal what the transcripts show: 500 random conversations replayed through the
simulator (clicks, free text, waits that fire no-answer timers, restarts after the end, over
several days), then every count recomputed from the transcripts alone and compared field by field.

The flow is built so that a transcript tells the steps: each message step says its own id, and
the steps that send nothing (``count``, ``check``, ``end``) sit on the only path between two
messages, so the recount puts them back from the graph.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.builder import compile_document
from bot.engine.analytics import DAY, Counts, bucket
from bot.simulation.simulator import Line, Simulator

FLOW: dict[str, Any] = {
    "format": "salesbot.flow/1", "id": "funnel", "start": "menu", "variables": {"visits": 0},
    "steps": {
        "menu": {"type": "message", "text": "menu", "buttons": [
            {"title": "A", "next": "a"}, {"title": "B", "next": "b"}, {"title": "C", "next": "count"}],
            "other_answer": "sorry", "no_answer": {"after": "1h", "next": "nudge"}},
        "sorry": {"type": "message", "text": "sorry", "next": "menu"},
        "nudge": {"type": "message", "text": "nudge", "buttons": [
            {"title": "Back", "next": "menu"}, {"title": "Quit", "next": "bye"}],
            "no_answer": {"after": "1d", "next": "bye"}},
        "a": {"type": "message", "text": "a", "buttons": [{"title": "More", "next": "menu"},
                                                           {"title": "Done", "next": "bye"}]},
        "b": {"type": "message", "text": "b", "next": "bye"},
        "count": {"type": "action", "actions": [
            {"do": "set_variable", "name": "visits", "value": "{{ vars.visits + 1 }}"}], "next": "check"},
        "check": {"type": "condition", "branches": [
            {"if": {"field": "vars.visits", "op": "gt", "value": 1}, "next": "vip"}], "else": "menu"},
        "vip": {"type": "message", "text": "vip", "next": "bye"},
        "bye": {"type": "message", "text": "bye", "next": "end"},
        "end": {"type": "stop"},
    },
}
#: The steps that send nothing, between two messages the transcript shows (the only such paths).
HIDDEN = {("menu", "vip"): ["count", "check"], ("menu", "menu"): ["count", "check"]}
INPUTS = ["A", "B", "C", "Back", "Quit", "More", "Done", "hello?", "🙂"]
WAITS = [30, 600, 3600 + 5, 7200, 86400 + 60, 3 * 86400]


def _add(counts: Counts, at: float, name: str) -> None:
    key = ("funnel", 1, int(at // DAY))
    fields = counts.setdefault(key, {})
    fields[name] = fields.get(name, 0) + 1


def recount(lines: list[Line]) -> Counts:
    """The counts a transcript implies (see the module docstring), with nothing from the engine."""
    counts: Counts = {}
    shown = [(line.text, line.at.timestamp()) for line in lines if line.role == "bot" and line.at is not None]
    open_: tuple[str, float] | None = None  # the visit open: step, since when

    def close(name: str, now: float) -> None:
        assert open_ is not None
        _add(counts, open_[1], name)
        if now - open_[1] >= 1:
            _add(counts, open_[1], f"t|{open_[0]}|{bucket(now - open_[1])}")

    def enter(step: str, now: float) -> None:
        nonlocal open_
        if open_ is not None:
            close(f"l|{open_[0]}|{step}", now)
        _add(counts, now, "e|" + step)
        open_ = (step, now)

    for text, at in shown:
        if open_ is not None and open_[0] == "end":  # the run ended: this message starts a new one
            open_ = None
        for hidden in HIDDEN.get((open_[0], text), []) if open_ is not None else []:
            enter(hidden, at)
        enter(text, at)
        if text == "bye":  # bye -> end (stop) in the same turn: the run ends there
            enter("end", at)
            close("x|end", at)
            open_ = ("end", at)
    return counts


def expanded(counts: Counts) -> Counts:
    """The counts with each ``m|S|T`` (a move within one day) as what it stands for: ``S`` left
    for ``T`` and ``T`` entered, the fields the recount writes."""
    out: Counts = {}
    for key, fields in counts.items():
        into = out.setdefault(key, {})
        for name, n in fields.items():
            if name.startswith("m|"):
                _, step, target = name.split("|")
                for field in (f"l|{step}|{target}", f"e|{target}"):
                    into[field] = into.get(field, 0) + n
            else:
                into[name] = into.get(name, 0) + n
    return out


async def _conversation(rng: random.Random, flow: Any, start: datetime) -> Simulator:
    sim = Simulator(flow, now=start, contact={"name": "Ayşe"})
    await sim.say("hi")
    for _ in range(rng.randint(1, 14)):
        roll = rng.random()
        if roll < 0.35:
            await sim.wait(rng.choice(WAITS))
        else:
            text = rng.choice(INPUTS)
            try:
                await sim.click(text)
            except LookupError:
                await sim.say(text)
    return sim


async def test_500_random_conversations_count_what_their_transcripts_show() -> None:
    rng = random.Random(1306)
    flow = compile_document(FLOW, version=1)
    base = datetime(2026, 11, 20, 8, tzinfo=UTC)
    counted: Counts = {}
    recounted: Counts = {}
    for _ in range(500):
        start = base + timedelta(seconds=rng.randint(0, 6 * 86400))
        sim = await _conversation(rng, flow, start)
        for key, fields in expanded(sim.analytics).items():
            into = counted.setdefault(key, {})
            for name, n in fields.items():
                into[name] = into.get(name, 0) + n
        for key, fields in recount(sim.transcript).items():
            into = recounted.setdefault(key, {})
            for name, n in fields.items():
                into[name] = into.get(name, 0) + n
    assert counted == recounted
    # the replay went everywhere the flow goes: every step entered, every edge taken, several days
    total: dict[str, int] = {}
    for fields in counted.values():
        for name, n in fields.items():
            total[name] = total.get(name, 0) + n
    assert {name[2:] for name in total if name.startswith("e|")} == set(FLOW["steps"])
    assert {"l|check|vip", "l|check|menu", "l|nudge|bye", "l|menu|nudge", "l|menu|sorry", "x|end"} <= set(total)
    assert any(name.startswith("t|menu|") for name in total) and len(counted) >= 6
