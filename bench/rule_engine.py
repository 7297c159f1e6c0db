"""Events per second through the pure rule engine (``bot.automations.engine.react``).

One document of 1,000 rules over 10 stages (100 a stage, every ``on`` kind, half with an
``if``, some delayed, some in working hours only), 20 triggers and scoring with decay. A
stream of lead events of mixed types for leads spread over the stages goes through ``react``
with each lead's state carried from event to event (the shell's job without its I/O): matching,
conditions, rendered actions, timers set and cancelled, a new state per event. It also prints
the matching alone (the ``(stage, on)`` lookup) in microseconds.

Run: ``python bench/rule_engine.py [--events N]``.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.automations.compiled import compile_automations
from bot.automations.engine import react
from bot.automations.events import LeadEvent
from bot.automations.models import Automations
from bot.automations.state import LeadState

STAGES = tuple(f"Stage {i}" for i in range(10))
KINDS = ("created", "moved_in", "responsible_changed", "tag_added", "field_changed", "chat.first_message",
         "chat.message", "idle", "field_time")
TAGS = tuple(f"tag{i}" for i in range(10))
NOW = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)


def document() -> dict[str, Any]:
    rules = []
    for i in range(1000):
        stage = STAGES[i % 10]
        kind = KINDS[(i // 10) % len(KINDS)]
        note = {"do": "add_note", "text": "Rule {{ event.type }} for {{ lead.name }}"}
        rule: dict[str, Any] = {"id": f"r{i}", "stage": stage, "on": [kind],
                                "do": {"actions": [note, {"do": "tags", "add": ["auto"]}]}}
        if kind == "tag_added":
            rule["tag"] = TAGS[i % 10]
        elif kind == "field_changed":
            rule["field"] = "lead.fields.budget"
        elif kind == "idle":
            rule["after"] = "3d"
        elif kind == "field_time":
            rule["at"] = {"field": "lead.fields.meeting_at", "offset": "-1h"}
        if i % 2:
            rule["if"] = {"all": [{"field": "lead.price", "op": "gt", "value": 100},
                                  {"field": "lead.tags", "op": "has", "value": "vip"}]}
        if i % 7 == 0:
            rule["delay"] = "10m"
        if i % 11 == 0:
            rule["active"] = "working_hours"
        if i % 13 == 0:
            rule["do"] = {"start_bot": "welcome", "variables": {"name": "{{ contact.name }}"}}
        rules.append(rule)
    triggers = [{"id": f"t{i}", "stage": STAGES[i % 10], "on": "order.paid" if i % 2 else "email.link_clicked",
                 "match": {"url": f"https://x/{i}"} if i % 2 == 0 else {}} for i in range(20)]
    scoring = [{"on": "email.opened", "add": 2}, {"on": "order.paid", "add": 20},
               {"decay": {"every": "30d", "subtract": 10}}]
    return {"format": "salesbot.automations/1", "id": "bench", "pipeline": "Sales",
            "settings": {"timezone": "Europe/Istanbul", "working_hours": {"mon-fri": "09:00-18:00"}},
            "rules": rules, "triggers": triggers, "scoring": scoring}


def events(n: int, leads: int, rng: random.Random) -> list[tuple[str, LeadEvent]]:
    out = []
    for i in range(n):
        lead = str(rng.randrange(leads))
        t = rng.choice(("chat.message", "chat.message", "lead.tag_added", "lead.field_changed", "email.opened",
                        "lead.stage_changed", "order.paid", "lead.responsible_changed"))
        data: dict[str, Any] = {}
        if t == "lead.tag_added":
            data = {"tag": rng.choice(TAGS)}
        elif t == "lead.field_changed":
            data = {"field": "lead.fields.budget", "to": rng.randrange(1000)}
        elif t == "lead.stage_changed":
            data = {"from": {"pipeline": "Sales", "stage": rng.choice(STAGES)},
                    "to": {"pipeline": "Sales", "stage": rng.choice(STAGES)}}
        at = NOW + timedelta(seconds=i)
        out.append((lead, LeadEvent(f"e{i}", t, at.timestamp(), lead, None, data)))
    return out


def run(n: int) -> None:
    compiled = compile_automations(Automations.model_validate(document()), STAGES, version=1)
    rng = random.Random(7)
    stream = events(n, 200, rng)
    snapshots = {
        str(i): {"lead": {"id": i, "name": f"Deal {i}", "pipeline": "Sales", "stage": STAGES[i % 10],
                          "price": 50 + i * 3, "tags": ["vip"] if i % 3 else [],
                          "fields": {"meeting_at": (NOW + timedelta(days=2)).isoformat()}},
                 "contact": {"id": i, "name": f"Ann {i}", "score": 5}}
        for i in range(200)
    }
    rounds = []
    effects = 0
    for _ in range(5):
        states = {str(i): LeadState.for_lead(str(i)) for i in range(200)}
        gc.collect()
        start = time.perf_counter()
        for lead, e in stream:
            snap = snapshots[lead]
            to = e.data.get("to")
            if isinstance(to, dict):
                snap["lead"]["stage"] = to["stage"]
            reaction = react(compiled, states[lead], e, snap, NOW)
            states[lead] = reaction.state
            effects += len(reaction.effects)
        rounds.append(len(stream) / (time.perf_counter() - start))
    print(f"react: {statistics.median(rounds):,.0f} events/s (median of 5 rounds of {n} events; "
          f"{effects / (5 * n):.1f} effects an event)")
    lookups = [(STAGES[i % 10], KINDS[i % 7]) for i in range(10_000)]
    start = time.perf_counter()
    matched = sum(len(compiled.stage_rules(s, k)) for s, k in lookups)
    per = (time.perf_counter() - start) / len(lookups) * 1e6
    print(f"matching: {per:.2f} µs a lookup ({matched / len(lookups):.1f} rules matched each)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    run(parser.parse_args().events)
