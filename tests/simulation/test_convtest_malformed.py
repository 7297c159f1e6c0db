"""Malformed conversation tests are broken tests, never a crash: each problem is reported with the
file, line and key when the file is loaded, any other exception breaks that test only, and the
failure diff shows the lines that matched as context."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from bot.cli import main
from bot.simulation.convtest import run_test_file
from bot.simulation.simulator import Simulator

SHOP = {
    "format": "salesbot.flow/1", "id": "shop", "start": "hello",
    "steps": {
        "hello": {"type": "message", "text": "Hi there!", "next": "menu"},
        "menu": {"type": "message", "text": "Pick one", "buttons": [
            {"title": "Buy", "next": "bought"}, {"title": "Tea", "next": "bought"}],
            "no_answer": {"after": "2h", "next": "nudge"}},
        "nudge": {"type": "message", "text": "Still there?"},
        "bought": {"type": "message", "text": "Done"},
    },
}
OTHER = {"format": "salesbot.flow/1", "id": "other", "start": "hi",
         "steps": {"hi": {"type": "message", "text": "Other here"}}}
GREETED = "  - user: hi\n  - bot: Hi there!\n  - bot: Pick one\n"


def _write(folder: Path, text: str, name: str = "t.test.yaml") -> Path:
    (folder / "shop.json").write_text(json.dumps(SHOP), encoding="utf-8")
    (folder / "other.json").write_text(json.dumps(OTHER), encoding="utf-8")
    test = folder / name
    test.write_text("flow: shop.json\n" + text, encoding="utf-8")
    return test


def _report(tmp_path: Path, text: str) -> str:
    return run_test_file(_write(tmp_path, text)).report()


@pytest.mark.parametrize(("text", "problem"), [
    ('script:\n  - user: hi\n  - bot: {text: "Hi there!", matches: "(unclosed"}\n',
     "t.test.yaml:4: bot.matches: not a valid regular expression: missing ), unterminated subpattern"),
    ('script:\n  - user: hi\n  - expect: {vars.tries: {matches: "(("}}\n',
     "t.test.yaml:4: expect.vars.tries.matches: not a valid regular expression"),
    ('script:\n  - user: hi\n  - expect: {tasks: {count: "x"}}\n',
     "t.test.yaml:4: expect.tasks.count: takes a whole number, not 'x'"),
    ("script:\n  - user: hi\n  - bot: 5\n", "t.test.yaml:4: bot: takes text or a mapping"),
    ('contact: "Ayşe"\nscript:\n  - user: hi\n', "t.test.yaml:2: contact: expected a mapping, not 'Ayşe'"),
    ("webhooks: [1]\nscript:\n  - user: hi\n", "t.test.yaml:2: webhooks: expected a mapping, not [1]"),
    ("pipelines: {Sales: [Incoming]}\nlead: {pipeline: Nope, stage: Nowhere}\nscript:\n  - user: hi\n",
     "t.test.yaml:3: lead.pipeline: unknown pipeline 'Nope' (pipelines: Sales)"),
    ("pipelines: {Sales: [Incoming]}\nlead: {stage: Nowhere}\nscript:\n  - user: hi\n",
     "t.test.yaml:3: lead.stage: unknown stage 'Nowhere' in pipeline 'Sales' (stages: Incoming)"),
    ("contact: {name: Ann, nmae: x}\nscript:\n  - user: hi\n",
     "t.test.yaml:2: contact.nmae: unknown key (known: name,"),
    ("lead: {colour: red}\nscript:\n  - user: hi\n", "t.test.yaml:2: lead.colour: unknown key (known: name,"),
    ("script:\n  - bot: {contians: x}\n", "t.test.yaml:3: bot.contians: unknown key (known: text, contains,"),
    ("script:\n  - user: hi\n  - silence: 1\n", "t.test.yaml:4: silence: takes true or false, not 1"),
])
def test_a_malformed_file_is_a_broken_test_naming_the_line_and_key(tmp_path: Path, text: str, problem: str) -> None:
    report = _report(tmp_path, text)
    assert report.startswith(f"FAIL {tmp_path / 't.test.yaml'}: broken test: {tmp_path}/"), report
    assert problem in report, report


def test_every_problem_of_a_file_is_reported_at_once(tmp_path: Path) -> None:
    report = _report(tmp_path, "lead: {colour: red}\ncontact: {nmae: x, phone: 12}\n"
                               "script:\n  - user: hi\n  - bot: {contians: zzz}\n  - wait: forever\n")
    for problem in ("t.test.yaml:2: lead.colour: unknown key", "t.test.yaml:3: contact.nmae: unknown key",
                    "t.test.yaml:3: contact.phone: expected text, not 12", "t.test.yaml:6: bot.contians: unknown key",
                    't.test.yaml:7: wait: "forever" is not a duration'):
        assert problem in report, report


def test_a_key_given_twice_is_reported_not_silently_overwritten(tmp_path: Path) -> None:
    report = _report(tmp_path, "lead: {tags: [vip]}\nlead: {tags: [new]}\nscript:\n"
                               "  - user: hi\n  - expect: {lead.tags: [new], lead.tags: [vip]}\n")
    assert "t.test.yaml:3: lead: given twice (line 2 too); write it once" in report, report
    assert "t.test.yaml:6: expect.lead.tags: given twice (line 6 too); write it once" in report, report


def test_one_name_where_a_list_is_expected_is_a_one_item_list(tmp_path: Path) -> None:
    report = _report(tmp_path, "bots: other.json\nlead: {tags: vip}\ncontact: {tags: new}\n"
                               "script:\n  - event: {type: start_bot, bot: other}\n  - bot: Other here\n"
                               "  - expect: {lead.tags: [vip], contact.tags: [new]}\n")
    assert report.startswith("PASS"), report


def test_one_button_title_is_a_list_of_one_button(tmp_path: Path) -> None:
    report = _report(tmp_path, "script:\n  - user: hi\n  - bot: Hi there!\n  - bot: {text: Pick one, buttons: Buy}\n")
    assert 'line 5: buttons differ: expected ["Buy"], got ["Buy", "Tea"]' in report, report
    report = _report(tmp_path, "script:\n  - user: hi\n  - bot: Hi there!\n"
                               "  - bot: {text: Pick one, buttons: [Buy, Tea]}\n")
    assert report.startswith("PASS"), report


def test_an_event_moving_the_lead_to_a_stage_the_pipelines_lack_is_refused(tmp_path: Path) -> None:
    head = "pipelines: {Sales: [Incoming, Qualified]}\nscript:\n" + GREETED
    report = _report(tmp_path, head + "  - event: {type: lead.stage_changed, stage: Nowhere}\n")
    assert 'broken test: line 7: event: unknown stage "Nowhere" in pipeline "Sales"' in report, report
    report = _report(tmp_path, head + "  - event: {type: lead.stage_changed, stage: Qualified}\n"
                                      "  - expect: {lead.stage: Qualified}\n")
    assert report.startswith("PASS"), report


def test_a_crash_of_the_runtime_breaks_that_test_with_its_type_and_message(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def crash(self: Simulator, text: str, **kwargs: object) -> None:
        raise RuntimeError("the runtime fell over")

    monkeypatch.setattr(Simulator, "say", crash)
    outcome = run_test_file(_write(tmp_path, "script:\n  - user: hi\n"))
    assert not outcome.passed
    assert outcome.message == "broken test: RuntimeError: the runtime fell over"
    assert outcome.details[0].startswith("raised at ") and "in crash" in outcome.details[0], outcome.details


def test_the_cli_reports_every_file_of_a_folder_with_a_broken_one(tmp_path: Path) -> None:
    _write(tmp_path, 'script:\n  - user: hi\n  - bot: {text: "Hi there!", matches: "(unclosed"}\n', "a.test.yaml")
    _write(tmp_path, "script:\n" + GREETED, "b.test.yaml")
    _write(tmp_path, "script:\n" + GREETED + "  - bot: Nope\n", "c.test.yaml")
    out = io.StringIO()
    assert main(["test", "-v", str(tmp_path)], out=out) == 1
    text = out.getvalue()
    assert f"FAIL {tmp_path / 'a.test.yaml'}: broken test:" in text, text
    assert f"PASS {tmp_path / 'b.test.yaml'}" in text, text
    assert f"FAIL {tmp_path / 'c.test.yaml'}: line 6: expected a bot message" in text, text
    assert text.endswith("1 passed, 2 failed (1 broken)\n"), text


def test_the_diff_shows_the_lines_that_matched_as_context(tmp_path: Path) -> None:
    report = _report(tmp_path, "script:\n" + GREETED + "  - user: {click: Buy}\n  - bot: Thanks\n")
    transcript = report.split("transcript (- expected script, + what happened):\n")[1].splitlines()
    assert transcript == [
        "      user: hi",
        "      bot: Hi there!",
        "      bot: Pick one [Buy | Tea]",
        "      user: [click Buy]",
        "    - bot: Thanks",
        "    + bot: Done",
    ], report


def test_the_cli_refuses_a_channel_no_adapter_renders_for(tmp_path: Path) -> None:
    """``channel: pigeon`` used to run the test as plain text, silently not testing what it named."""
    _write(tmp_path, "channel: pigeon\nscript:\n" + GREETED, "a.test.yaml")
    _write(tmp_path, "channel: telegram\nscript:\n" + GREETED, "b.test.yaml")
    out = io.StringIO()
    assert main(["test", "-v", str(tmp_path)], out=out) == 1
    text = out.getvalue()
    assert f"FAIL {tmp_path / 'a.test.yaml'}: broken test: " in text, text
    assert "a.test.yaml:2: channel: unknown channel 'pigeon' (channels: instagram, livechat, messenger, process" in text
    assert f"PASS {tmp_path / 'b.test.yaml'}" in text, text
