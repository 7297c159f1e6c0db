"""``salesbot chat``: typed lines on stdin, the conversation (and with ``--automations`` what the
rules did) on stdout — the example flows and automation document of the repository."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from bot.cli import main

ROOT = Path(__file__).resolve().parents[2]
DEMO, QUALIFY = str(ROOT / "flows" / "demo.json"), str(ROOT / "flows" / "qualify.json")
SALES = str(ROOT / "automations" / "sales.json")
NOW = "2026-11-25T10:00:00+03:00"  # a Wednesday


def chat(*lines: str, args: tuple[str, ...] = ("--automations", SALES, "--bot", QUALIFY)) -> tuple[int, str]:
    out = io.StringIO()
    code = main(["chat", DEMO, "--now", NOW, *args], out=out, inp=io.StringIO("".join(f"{x}\n" for x in lines)))
    return code, out.getvalue()


def test_events_typed_as_json_run_the_rules_and_the_session_prints_what_they_did() -> None:
    code, out = chat(
        "hello",
        '/event {"type": "lead.stage_changed", "to": "Proposal"}',
        '/event lead.field_changed {"field": "budget", "to": 20000}',
        '/event order.paid {"amount": 5}',
        "/quit")
    assert code == 0
    assert "Automations sales on pipeline Sales; your lead 2 is in Incoming." in out
    # the customer's first message starts the qualify bot: its question follows the demo's greeting
    assert "rule qualify_first_message acted: chat.first_message" in out
    assert "rule qualify_first_message started bot qualify" in out
    assert out.index("Welcome to Lale Home") < out.index("What's the best phone number") < out.index(
        "started bot qualify")
    assert "(lead 2: stage Proposal)" in out
    assert "rule budget_set acted: lead.field_changed\n        (lead 2: tag +big_budget)" in out
    assert "rule paid acted: moved from Proposal to Won" in out  # the trigger, with the JSON data
    assert "rule won_offer delayed: until 2026-11-26T10:00:00+03:00" in out
    assert "(lead 2: stage Won, score 20)" in out


def test_wait_moves_the_clock_and_fires_the_leads_timers() -> None:
    code, out = chat('/event {"type": "lead.stage_changed", "to": "Won"}', "/event email.opened", "/wait 1d",
                     "/wait 30d", "/rules", "/quit")
    assert code == 0
    after_wait = out[out.index("(clock: 2026-11-26T10:00:00+03:00)"):]
    assert "rule won_offer acted: lead.stage_changed" in after_wait
    assert "rule won_offer started process ab_offer" in after_wait
    assert "(lead 2: score 0)" in out[out.index("(clock: 2026-12-26"):]  # the score decayed (2 - 10, not below 0)
    rules = out[out.index("[2026-11-25T10:00:00+03:00] lead 2: rule won_offer fired"):]
    assert "[2026-11-26T10:00:00+03:00] lead 2: rule won_offer acted" in rules


def test_the_chat_starts_the_lead_in_a_stage_and_runs_its_rules_at_once() -> None:
    code, out = chat("/quit", args=("--automations", SALES, "--stage", "Proposal"))
    assert code == 0
    assert "your lead 2 is in Proposal." in out
    code, out = chat("/rules", "/quit", args=("--automations", SALES, "--stage", "Proposal"))
    assert "timer lead:2:t2: idle at 2026-11-28T10:00:00+03:00" in out  # the stale rule's timer, 3 days on


@pytest.mark.parametrize(("line", "says"), [
    ("/event {bad", "! Expecting property name"),
    ('/event ["order.paid"]', '! /event {…} takes a JSON object with "type"'),
    ('/event {"amount": 5}', '! /event {…} takes a JSON object with "type"'),
    ('/event order.paid [5]', "! /event order.paid takes a JSON object after the type"),
    ("/event order.payd", "! order.payd is not an event type"),
    ('/event {"type": "lead.stage_changed", "to": "Nowhere"}', '! unknown stage "Nowhere"'),
    ("/event lead.stage_changed", "! lead.stage_changed takes to: STAGE"),
])
def test_a_bad_event_line_says_why_and_the_chat_goes_on(line: str, says: str) -> None:
    code, out = chat(line, "hello", "/quit")
    assert code == 0
    assert says in out, out
    assert "Welcome to Lale Home" in out  # still chatting


def test_without_automations_events_in_json_reach_the_conversation() -> None:
    code, out = chat('/event {"type": "takeover", "user": "ana"}', "/state", "/rules", "/quit", args=())
    assert code == 0
    state = json.loads(out[out.index("{"):out.rindex("}") + 1])
    assert state["chat"]["owner"] == "human"
    assert "no automations: start with --automations FILE" in out
    assert "rule " not in out


def test_an_invalid_document_or_stage_exits_1_naming_the_problem(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = json.loads(Path(SALES).read_text(encoding="utf-8"))
    doc["rules"][0]["stage"] = "Incomming"
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(doc), encoding="utf-8")
    assert chat("/quit", args=("--automations", str(broken)))[0] == 1
    assert "/rules/0/stage" in capsys.readouterr().err
    assert chat("/quit", args=("--automations", SALES, "--stage", "Nowhere"))[0] == 1
    assert "--stage Nowhere: not a stage of Sales (Incoming, Contacted" in capsys.readouterr().err
    assert chat("/quit", args=("--automations", str(tmp_path / "missing.json")))[0] == 1
    assert "missing.json" in capsys.readouterr().err
