"""Processes in conversation tests: a rule's process actions act as on the server (``score``
changes the contact's score, ``start_process`` is recorded in ``started``), a chat flow's
``start_process`` too, and a ``channel: process`` test starts the flow without a message."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bot.simulation.convtest import run_test_file

CHAT = {"format": "salesbot.flow/1", "id": "chat", "start": "go",
        "steps": {"go": {"type": "action", "actions": [
            {"do": "start_process", "process": "nurture", "variables": {"from": "{{ contact.name }}"}},
            {"do": "lists", "unsubscribe": ["email"]}], "next": "done"},
            "done": {"type": "message", "text": "Done"}}}


def _run(tmp_path: Path, script: str, doc: dict[str, Any] | None = None, flow: dict[str, Any] = CHAT,
         channel: str = "livechat") -> str:
    (tmp_path / "flow.json").write_text(json.dumps(flow), encoding="utf-8")
    head = f"flow: flow.json\nchannel: {channel}\ncontact: {{name: Ann, email: ann@example.com}}\n"
    if doc is not None:
        (tmp_path / "auto.json").write_text(json.dumps({"format": "salesbot.automations/1", "id": "t",
                                                        "pipeline": "Sales", **doc}), encoding="utf-8")
        head += "automations: auto.json\n"
    test = tmp_path / "t.test.yaml"
    test.write_text(head + 'now: "2026-11-25T10:00:00+00:00"\nscript:\n' + script, encoding="utf-8")
    return run_test_file(test).report()


def test_a_rules_score_and_start_process_act_as_on_the_server(tmp_path: Path) -> None:
    doc = {"rules": [{"id": "hot", "stage": "Incoming", "on": "chat.first_message",
                      "do": {"actions": [{"do": "score", "add": 7}, {"do": "score", "subtract": 2}]}},
                     {"id": "nurture", "stage": "Incoming", "on": "chat.message", "do": {"start_process": "nurture"}}]}
    script = ("  - user: hi\n  - bot: Done\n"
              "  - expect: {contact.score: 5, started: {count: 2}, lists: {email: unsubscribed},"
              " contact.unsubscribed: true}\n"
              "  - expect: {started: {has: {process: nurture, variables: {from: Ann}}}}\n"
              "  - expect: {started: {has: {rule: nurture, process: nurture}}}\n")
    report = _run(tmp_path, script, doc)
    assert report.startswith("PASS"), report


def test_a_process_test_starts_the_flow_for_the_contact(tmp_path: Path) -> None:
    flow = {"format": "salesbot.flow/1", "id": "p", "start": "sms",
            "steps": {"sms": {"type": "action", "actions": [{"do": "send_sms", "account": "sms",
                                                              "text": "Hi {{ contact.name }}"}]}}}
    report = _run(tmp_path, "  - bot: {text: Hi Ann, kind: sms}\n  - expect: {run.status: finished}\n",
                  flow=flow, channel="process")
    assert report.startswith("PASS"), report
    report = _run(tmp_path, "  - silence: true\n", flow=flow)  # a chat flow waits for the customer
    assert report.startswith("PASS"), report
