"""Steps per second of the pure interpreter core, next to a minimal dict-dispatch reference.

Both run the same 5-step flow for the same customer replies, in the same process:

* ``salesbot``: ``bot.engine.advance`` on a compiled flow (templates, a typed expression,
  a condition, button matching, a waiting message; effects and a new state per event);
* ``reference``: a hand-written loop over plain dicts, one handler per step type, with
  ``str.format_map`` for text, a Python lambda for the expression, and dicts for effects.

Each repeat runs both loops back to back (interleaved, so a change in the machine's load hits
both) and takes the ratio of that pair, in CPU time of this process; it prints the median and
the spread (min–max) of each over the repeats (aim of issue 14: ratio >= 0.3). Run from a checkout with
``PYTHONPATH=$PWD python bench/interpreter.py``: without it the installed ``salesbot`` is measured.

Instructions per event do not depend on the machine's load: ``--only salesbot|reference
--events N`` runs one loop once, for ``valgrind --tool=cachegrind --cache-sim=no``; the
difference between ``--events N`` and ``--events 0``, divided by N, is that loop's count.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from datetime import UTC, datetime
from typing import Any

from bot.builder import compile_document
from bot.engine import ConversationState, FlowLibrary, advance
from bot.engine.events import InboundMessage

FLOW = {
    "format": "salesbot.flow/1", "id": "bench", "start": "greet",
    "variables": {"visits": 0},
    "steps": {
        "greet": {"type": "message", "text": "Hi {{ contact.name }}, visit {{ vars.visits }}", "next": "count"},
        "count": {"type": "action", "actions": [
            {"do": "set_variable", "name": "visits", "value": "{{ vars.visits + 1 }}"}], "next": "check"},
        "check": {"type": "condition", "branches": [
            {"if": {"field": "vars.visits", "op": "gt", "value": 3}, "next": "vip"}], "else": "menu"},
        "vip": {"type": "action", "actions": [
            {"do": "set_variable", "name": "tier", "value": "vip"}], "next": "menu"},
        "menu": {"type": "message", "text": "Pick one, {{ contact.name }}", "buttons": [
            {"title": "Again", "synonyms": ["a"], "next": "greet"},
            {"title": "More", "next": "greet"}], "other_answer": "greet"},
    },
}
SNAPSHOT = {"contact": {"name": "Ayşe"}, "lead": {}, "company": {}}
NOW = datetime(2026, 11, 25, 10, tzinfo=UTC)


def run_salesbot(events: int) -> int:
    library = FlowLibrary()
    library.add(compile_document(FLOW, version=1))
    state = ConversationState(id="c1")
    state = advance(library, state, InboundMessage(text="hi", greeting="bench"), NOW, SNAPSHOT).state
    steps = 0
    msg = InboundMessage(text="again")
    for _ in range(events):
        before = state.turn_steps
        state = advance(library, state, msg, NOW, SNAPSHOT).state
        steps += state.turn_steps or before
    return steps


# ---------------------------------------------------------------- the reference loop
REF_FLOW: dict[str, dict[str, Any]] = {
    "greet": {"type": "message", "text": "Hi {name}, visit {visits}", "next": "count"},
    "count": {"type": "set", "name": "visits", "fn": lambda v: v["visits"] + 1, "next": "check"},
    "check": {"type": "if", "field": "visits", "gt": 3, "then": "vip", "else": "menu"},
    "vip": {"type": "set", "name": "tier", "fn": lambda v: "vip", "next": "menu"},
    "menu": {"type": "wait", "text": "Pick one, {name}", "buttons": {"again": "greet", "a": "greet", "more": "greet"},
             "other": "greet"},
}


def _ref_message(step: dict[str, Any], st: dict[str, Any], out: list[Any]) -> str | None:
    out.append({"send": step["text"].format_map({**st["vars"], "name": st["contact"]["name"]})})
    return step["next"]


def _ref_set(step: dict[str, Any], st: dict[str, Any], out: list[Any]) -> str | None:
    st["vars"][step["name"]] = step["fn"](st["vars"])
    return step["next"]


def _ref_if(step: dict[str, Any], st: dict[str, Any], out: list[Any]) -> str | None:
    return step["then"] if st["vars"][step["field"]] > step["gt"] else step["else"]


def _ref_wait(step: dict[str, Any], st: dict[str, Any], out: list[Any]) -> str | None:
    out.append({"send": step["text"].format_map({"name": st["contact"]["name"]}), "buttons": list(step["buttons"])})
    st["waiting"] = True
    return None


REF_HANDLERS = {"message": _ref_message, "set": _ref_set, "if": _ref_if, "wait": _ref_wait}


def run_reference(events: int) -> int:
    st: dict[str, Any] = {"vars": {"visits": 1}, "contact": {"name": "Ayşe"}, "step": "menu"}
    steps = 0
    for _ in range(events):
        st = {**st, "vars": dict(st["vars"])}  # a new state per event, as the core does
        out: list[Any] = []
        text = "again".strip().casefold()
        current: str | None = REF_FLOW[st["step"]]["buttons"].get(text) or REF_FLOW[st["step"]]["other"]
        while current is not None:
            steps += 1
            st["step"] = current
            step = REF_FLOW[current]
            current = REF_HANDLERS[step["type"]](step, st, out)
    return steps


def _rate(fn: Any, events: int) -> float:
    gc.collect()
    t0 = time.process_time()  # CPU time: the other load on a shared machine counts less
    steps = fn(events)
    return float(steps / (time.process_time() - t0))


def _spread(values: list[float], fmt: str) -> str:
    return f"{format(statistics.median(values), fmt)} (min {format(min(values), fmt)}, max {format(max(values), fmt)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--only", choices=["salesbot", "reference"],
                        help="run one loop once, quietly: for an instruction count under valgrind")
    args = parser.parse_args()
    assert run_salesbot(10) == run_reference(10), "the two loops must run the same number of steps"
    if args.only:
        (run_salesbot if args.only == "salesbot" else run_reference)(args.events)
        return
    run_salesbot(args.events // 10)  # warm up both (caches, first-use compilation)
    run_reference(args.events // 10)
    ours, ref = [], []
    for _ in range(args.repeats):
        ours.append(_rate(run_salesbot, args.events))
        ref.append(_rate(run_reference, args.events))
    ratios = [o / r for o, r in zip(ours, ref, strict=True)]
    print(f"salesbot core : {_spread(ours, ',.0f')} steps/s ({1e6 / statistics.median(ours):.2f} µs/step)")
    print(f"reference loop: {_spread(ref, ',.0f')} steps/s ({1e6 / statistics.median(ref):.2f} µs/step)")
    print(f"ratio         : {_spread(ratios, '.3f')} over {args.repeats} interleaved repeats (aim >= 0.3)")

if __name__ == "__main__":
    main()
