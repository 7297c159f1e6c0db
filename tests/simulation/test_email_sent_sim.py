"""Conversation tests with ``automations:`` see ``email.sent`` as the server's lead queues do: a
flow's ``send_email`` (depth 0) and a rule's (the rule's depth), once per contact with an address,
so triggers and scoring on it act and a loop through it stops at the loop guard."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bot.simulation.convtest import run_test_file

MAILER = {
    "format": "salesbot.flow/1", "id": "mailer", "start": "mail",
    "steps": {
        "mail": {"type": "action", "actions": [{"do": "send_email", "template": "offer"}], "next": "done"},
        "done": {"type": "message", "text": "Mailed"},
    },
}


def _run(tmp_path: Path, doc: dict[str, Any], script: str, *, contact: str = "{email: ann@example.com}") -> str:
    (tmp_path / "mailer.json").write_text(json.dumps(MAILER), encoding="utf-8")
    (tmp_path / "auto.json").write_text(json.dumps({"format": "salesbot.automations/1", "id": "t",
                                                    "pipeline": "Sales", **doc}), encoding="utf-8")
    test = tmp_path / "t.test.yaml"
    test.write_text(f"flow: mailer.json\nautomations: auto.json\ncontact: {contact}\n"
                    'now: "2026-11-25T10:00:00+00:00"\nscript:\n' + script, encoding="utf-8")
    return run_test_file(test).report()


def test_a_flows_and_a_rules_email_reach_the_rules_as_email_sent(tmp_path: Path) -> None:
    doc = {"rules": [{"id": "follow_up", "stage": "Contacted", "on": "moved_in",
                      "do": {"actions": [{"do": "send_email", "template": {"subject": "Hi", "body": "Again"}}]}}],
           "triggers": [{"id": "mailed", "stage": "Contacted", "on": "email.sent", "match": {"template": "offer"}}],
           "scoring": [{"on": "email.sent", "add": 3}]}
    script = ("  - user: hi\n  - bot: Mailed\n"
              "  - expect: {lead.stage: Contacted, contact.score: 6, rules: {acted: [mailed, follow_up]},"
              " emails: {count: 2}}\n")
    report = _run(tmp_path, doc, script)
    assert report.startswith("PASS"), report


def test_a_contact_without_an_address_gets_no_email_sent(tmp_path: Path) -> None:
    doc = {"triggers": [{"id": "mailed", "stage": "Contacted", "on": "email.sent"}]}
    report = _run(tmp_path, doc, "  - user: hi\n  - bot: Mailed\n"
                  "  - expect: {lead.stage: Incoming, rules.fired: [], emails: {count: 1}}\n",
                  contact="{name: Ann}")
    assert report.startswith("PASS"), report


def test_rules_that_mail_on_email_sent_stop_at_the_loop_guard(tmp_path: Path) -> None:
    doc = {"rules": [{"id": "again", "stage": "Contacted", "on": "moved_in",
                      "do": {"actions": [{"do": "change_stage", "stage": "Incoming"},
                                         {"do": "send_email", "template": "offer"}]}}],
           "triggers": [{"id": "sent", "stage": "Contacted", "on": "email.sent", "allow_backward": True}]}
    # the flow's e-mail (depth 0) moves the lead (1), whose rule mails (2) …: the e-mail of depth 10 stops
    report = _run(tmp_path, doc, "  - user: hi\n  - bot: Mailed\n"
                  "  - expect: {rules.loop: [sent], rules.acted: {count: 10}, emails: {count: 6}}\n")
    assert report.startswith("PASS"), report
