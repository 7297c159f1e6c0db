"""Conversation tests with ``automations:``: lead events through the rule engine, on the
in-memory CRM and the virtual clock (docs/testing.md, "Automations")."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bot.simulation.convtest import run_test_file

#: A flow whose action step tags the lead (a CRM change made by the conversation).
FLOW = {
    "format": "salesbot.flow/1", "id": "tagger", "start": "tag",
    "steps": {
        "tag": {"type": "action", "actions": [{"do": "tags", "add": ["hot"]}], "next": "done"},
        "done": {"type": "message", "text": "Tagged"},
    },
}
HELLO = {
    "format": "salesbot.flow/1", "id": "hello", "start": "hi",
    "steps": {"hi": {"type": "message", "text": "Hello from {{ lead.stage }}"}},
}


def _doc(rules: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"format": "salesbot.automations/1", "id": "t", "pipeline": "Sales", "rules": rules, **extra}


def _run(tmp_path: Path, rules: list[dict[str, Any]] | dict[str, Any], script: str, *, head: str = "") -> str:
    (tmp_path / "tagger.json").write_text(json.dumps(FLOW), encoding="utf-8")
    (tmp_path / "hello.json").write_text(json.dumps(HELLO), encoding="utf-8")
    doc = rules if isinstance(rules, dict) else _doc(rules)
    (tmp_path / "auto.json").write_text(json.dumps(doc), encoding="utf-8")
    test = tmp_path / "t.test.yaml"
    test.write_text("flow: tagger.json\nbots: [hello.json]\nautomations: auto.json\n"
                    'now: "2026-11-25T10:00:00+00:00"\n' + head + "script:\n" + script, encoding="utf-8")
    return run_test_file(test).report()


def test_a_change_the_flow_makes_reaches_the_rules(tmp_path: Path) -> None:
    rules = [{"id": "on_hot", "stage": "Incoming", "on": "tag_added", "tag": "hot",
              "do": {"actions": [{"do": "add_note", "text": "hot at {{ event.depth }}"}]}}]
    report = _run(tmp_path, rules, "  - user: hi\n  - bot: Tagged\n"
                  "  - expect: {rules: {acted: [on_hot]}, notes: [{text: hot at 0}]}\n")
    assert report.startswith("PASS"), report


def test_rules_chain_with_depth_like_on_the_server(tmp_path: Path) -> None:
    rules = [
        {"id": "qualify", "stage": "Contacted", "on": "moved_in",
         "do": {"actions": [{"do": "change_stage", "stage": "Qualified"}]}},
        {"id": "note", "stage": "Qualified", "on": "moved_in",
         "do": {"actions": [{"do": "add_note", "text": "depth {{ event.depth }}"}]}},
    ]
    report = _run(tmp_path, rules, "  - event: {type: lead.stage_changed, to: Contacted}\n"
                  "  - expect: {lead.stage: Qualified, rules: {acted: [qualify, note]}, notes: [{text: depth 1}]}\n")
    assert report.startswith("PASS"), report


def test_a_loop_of_rules_stops_at_the_maximum_depth(tmp_path: Path) -> None:
    rules = [
        {"id": "there", "stage": "Contacted", "on": "moved_in",
         "do": {"actions": [{"do": "change_stage", "stage": "Qualified"}]}},
        {"id": "back", "stage": "Qualified", "on": "moved_in",
         "do": {"actions": [{"do": "change_stage", "stage": "Contacted"}]}},
    ]
    report = _run(tmp_path, rules, "  - event: {type: lead.stage_changed, to: Contacted}\n"
                  "  - expect: {rules.acted: {count: 10}, rules.loop: {count: 1}}\n")
    assert report.startswith("PASS"), report


def test_a_delay_waits_on_the_virtual_clock_and_leaving_the_stage_cancels_it(tmp_path: Path) -> None:
    rules = [{"id": "later", "stage": "Contacted", "on": "moved_in", "delay": "1h", "do": {"start_bot": "hello"}}]
    script = ("  - event: {type: lead.stage_changed, to: Contacted}\n  - wait: 59m\n  - silence: true\n"
              "  - wait: 1m\n  - bot: Hello from Contacted\n"
              "  - event: {type: lead.stage_changed, to: Incoming}\n"
              "  - event: {type: lead.stage_changed, to: Contacted}\n"
              "  - event: {type: lead.stage_changed, to: Qualified}\n  - wait: 2h\n"
              "  - expect: {rules: {acted: [later], cancelled: [later], delayed: [later, later]},"
              " started: {count: 1}}\n")
    assert _run(tmp_path, rules, script).startswith("PASS")
    # the same test, one minute short, fails: the bot has not spoken yet
    report = _run(tmp_path, rules, script.replace("  - wait: 1m\n", "  - wait: 30s\n"))
    assert report.startswith("FAIL") and "expected a bot message" in report, report


def test_idle_and_field_time_rules_fire_on_the_clock(tmp_path: Path) -> None:
    rules = [
        {"id": "quiet", "stage": "Proposal", "on": "idle", "after": "2d", "do": {"actions": [{"do": "tags",
                                                                                              "add": ["quiet"]}]}},
        {"id": "visit", "stage": "Proposal", "on": "field_time", "at": {"field": "lead.fields.visit", "offset": "-1h"},
         "do": {"actions": [{"do": "add_note", "text": "visit soon"}]}},
    ]
    head = 'lead: {stage: Proposal, fields: {visit: "2026-11-26T12:00:00+00:00"}}\n'
    script = ("  - expect: {timers: {count: 2}}\n"  # the lead's idle and field_time timers, from the start
              "  - wait: 1d\n  - expect: {rules.acted: []}\n"
              "  - wait: 1h\n  - expect: {rules.acted: [visit], notes: {count: 1}}\n"
              "  - wait: 23h\n  - expect: {rules.acted: [visit, quiet], lead.tags: [quiet]}\n")
    report = _run(tmp_path, rules, script, head=head)
    assert report.startswith("PASS"), report


def test_a_trigger_moves_the_lead_and_scoring_adds_to_the_contact(tmp_path: Path) -> None:
    doc = _doc([], triggers=[{"id": "paid", "stage": "Won", "on": "order.paid", "match": {"amount": 100}}],
               scoring=[{"on": "order.paid", "add": 20}])
    script = ("  - event: {type: order.paid, data: {amount: 99}}\n"
              "  - expect: {lead.stage: Incoming, contact.score: 20, rules.acted: []}\n"
              "  - event: {type: order.paid, data: {amount: 100}}\n"
              "  - expect: {lead.stage: Won, contact.score: 40, rules.acted: [paid]}\n")
    report = _run(tmp_path, doc, script)
    assert report.startswith("PASS"), report


def test_a_rules_expectation_that_does_not_hold_fails_the_test(tmp_path: Path) -> None:
    note = {"actions": [{"do": "add_note", "text": "x"}]}
    rules = [{"id": "n", "stage": "Contacted", "on": "moved_in", "do": note},
             {"id": "q", "stage": "Qualified", "on": "moved_in", "do": note,
              "if": {"all": [{"field": "lead.tags", "op": "has", "value": "vip"}]}}]
    report = _run(tmp_path, rules, "  - event: {type: lead.stage_changed, to: Qualified}\n"
                  "  - expect: {rules: {acted: [n]}}\n")
    assert report.startswith("FAIL") and "line" in report and '"acted": []' in report, report
    # the report says what the rules did instead
    assert "what the rules did:" in report and "lead 2: q fired (lead.stage_changed)" in report, report
    assert "lead 2: q skipped_if" in report, report


def test_an_invalid_automation_document_is_a_broken_test_naming_the_problem(tmp_path: Path) -> None:
    rules = [{"id": "x", "stage": "Proposl", "on": "moved_in", "do": {"start_bot": "hello"}}]
    report = _run(tmp_path, rules, "  - event: {type: lead.stage_changed, to: Proposal}\n")
    assert report.startswith("FAIL") and "broken test" in report and "/rules/0/stage" in report, report


def test_the_document_is_checked_against_the_tests_pipelines(tmp_path: Path) -> None:
    rules = [{"id": "x", "stage": "Proposal", "on": "moved_in", "do": {"start_bot": "hello"}}]
    report = _run(tmp_path, rules, "  - silence: true\n", head="pipelines: {Sales: [Incoming, Won]}\n")
    assert report.startswith("FAIL") and "/rules/0/stage" in report, report


def test_a_lead_event_without_what_changed_is_a_broken_test(tmp_path: Path) -> None:
    report = _run(tmp_path, [], "  - event: {type: lead.stage_changed}\n")
    assert report.startswith("FAIL") and "broken test" in report and "to: STAGE" in report, report
    report = _run(tmp_path, [], "  - event: {type: lead.stage_changed, to: Nowhere}\n",
                  head="pipelines: {Sales: [Incoming, Won]}\n")
    assert report.startswith("FAIL") and 'unknown stage "Nowhere"' in report, report


def test_a_bot_started_for_another_lead_is_noted_not_run_in_the_test_conversation(tmp_path: Path) -> None:
    rules = [{"id": "greet", "stage": "Won", "on": "created", "do": {"start_bot": "hello"}}]
    flow = {"format": "salesbot.flow/1", "id": "tagger", "start": "new",
            "steps": {"new": {"type": "action", "actions": [{"do": "create_lead", "stage": "Won"}]}}}
    (tmp_path / "tagger.json").write_text(json.dumps(flow), encoding="utf-8")
    test = tmp_path / "t.test.yaml"
    (tmp_path / "hello.json").write_text(json.dumps(HELLO), encoding="utf-8")
    (tmp_path / "auto.json").write_text(json.dumps(_doc(rules)), encoding="utf-8")
    test.write_text("flow: tagger.json\nbots: [hello.json]\nautomations: auto.json\nscript:\n"
                    "  - user: hi\n  - silence: true\n"
                    "  - expect: {started: [{rule: greet, bot: hello, lead: '3'}], leads: {count: 2}}\n",
                    encoding="utf-8")
    report = run_test_file(test).report()
    assert report.startswith("PASS"), report


def test_salesbot_test_runs_the_example_automation_tests_green() -> None:
    import io

    from bot.cli import main

    out = io.StringIO()
    folder = Path(__file__).resolve().parents[2] / "automations"
    assert main(["test", str(folder)], out=out) == 0, out.getvalue()
    assert "11 passed, 0 failed" in out.getvalue()


def test_an_action_the_crm_refuses_is_recorded_as_failed_and_the_test_goes_on(tmp_path: Path) -> None:
    rules = [{"id": "bad", "stage": "Contacted", "on": "moved_in",
              "do": {"actions": [{"do": "change_stage", "stage": "Nowhere", "pipeline": "Other"},
                                 {"do": "add_note", "text": "after"}]}}]
    report = _run(tmp_path, rules, "  - event: {type: lead.stage_changed, to: Contacted}\n"
                  "  - expect: {rules: {acted: [bad], failed: [bad]}, notes: [{text: after}],"
                  " rules.history: {has: {outcome: failed, detail: {contains: Nowhere}}}}\n",
                  head="pipelines: {Sales: [Incoming, Contacted], Other: [A]}\n")
    assert report.startswith("PASS"), report


def test_two_leads_of_one_contact_decay_its_score_once_per_period(tmp_path: Path) -> None:
    """Each lead has its own decay timer; the contact's score decays once a period, not once per lead."""
    flow = {"format": "salesbot.flow/1", "id": "tagger", "start": "new",
            "steps": {"new": {"type": "action", "actions": [{"do": "create_lead", "copy": ["contacts"]}], "next": "ok"},
                      "ok": {"type": "message", "text": "Created"}}}
    doc = _doc([], scoring=[{"on": "lead.created", "add": 30}, {"on": "email.opened", "add": 2},
                            {"decay": {"every": "30d", "subtract": 10}}])
    (tmp_path / "tagger.json").write_text(json.dumps(flow), encoding="utf-8")
    (tmp_path / "auto.json").write_text(json.dumps(doc), encoding="utf-8")
    test = tmp_path / "t.test.yaml"
    test.write_text('flow: tagger.json\nautomations: auto.json\nnow: "2026-11-25T10:00:00+00:00"\nscript:\n'
                    "  - user: hi\n  - bot: Created\n"
                    "  - event: {type: email.opened}\n"             # the test's lead scores too: two timers
                    "  - expect: {contact.score: 32, leads: {count: 2}, timers: {count: 2}}\n"
                    "  - wait: 30d\n"
                    "  - expect: {contact.score: 22}\n"             # once, not once per lead (12)
                    "  - wait: 30d\n"
                    "  - expect: {contact.score: 12}\n", encoding="utf-8")
    report = run_test_file(test).report()
    assert report.startswith("PASS"), report


def test_a_contact_change_reaches_the_rules_as_on_the_server(tmp_path: Path) -> None:
    """Scoring writes the contact's score, a flow its field: each is ``lead.field_changed`` with
    ``contact.…`` on the lead, and the score's own change does not score again."""
    doc = _doc([{"id": "hot", "stage": "Incoming", "on": "field_changed", "field": "contact.score",
                 "do": {"actions": [{"do": "tags", "add": ["scored"]}]}}],
               scoring=[{"on": "email.opened", "add": 5}, {"on": "lead.field_changed", "add": 1}])
    report = _run(tmp_path, doc, "  - event: {type: email.opened}\n"
                  "  - expect: {contact.score: 5, lead.tags: {has: scored}, rules: {acted: [hot]}}\n")
    assert report.startswith("PASS"), report
