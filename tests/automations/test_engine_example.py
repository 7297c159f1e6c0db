"""The example document (automations/sales.json), validated by the validator and compiled for
the rule engine — the contract between the two — runs a lead's day."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from bot.automations import effects as fx
from bot.automations.compiled import compile_automations
from bot.automations.validate import AutomationContext, parse_automations
from crm_bridge.memory import DEFAULT_STAGES

from .helpers import Lead, acted, event, later, of

ROOT = Path(__file__).resolve().parents[2]
IST = ZoneInfo("Europe/Istanbul")


def test_the_example_document_runs() -> None:
    document = json.loads((ROOT / "automations" / "sales.json").read_text(encoding="utf-8"))
    model = parse_automations(document, AutomationContext({"Sales": DEFAULT_STAGES}))
    a = compile_automations(model, DEFAULT_STAGES, version=3)
    assert a.version == 3 and a.stages == tuple(DEFAULT_STAGES)

    lead = Lead(a, tags=["website"])
    lead.send(event("lead.created"))
    (start,) = of(lead.fire_only("delay"), fx.StartBot)
    assert (start.rule, start.bot, start.channels) == ("welcome_new", "welcome", ("wa_shop",))

    effects = lead.send(event("email.opened", at=later(minutes=20)), now=later(minutes=20))
    assert of(effects, fx.AddScore) == [fx.AddScore(2, "email.opened", 1)]
    (move,) = of(lead.send(event("order.paid")), fx.MoveStage)
    assert (move.trigger, move.stage) == ("paid", "Won")

    lead.lead["stage"] = "Qualified"
    evening = datetime(2026, 12, 7, 19, 0, tzinfo=IST)
    lead.send(event("lead.stage_changed", at=evening, to={"pipeline": "Sales", "stage": "Qualified"}),
              now=evening)
    lead.lead["tags"] = ["vip"]
    effects = lead.fire_only("window")  # call_vip waits for the working hours, then checks if
    assert acted(effects) == ["call_vip"]
    (run,) = of(effects, fx.RunActions)
    assert run.actions[0]["text"] == "Call Ann today"
