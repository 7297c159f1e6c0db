"""`salesbot flows validate` and `salesbot flows graph`."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bot.builder.graph import to_mermaid
from bot.builder.validate import parse_flow_model
from bot.cli import main

ROOT = Path(__file__).resolve().parents[1]

VALID: dict[str, Any] = {
    "format": "salesbot.flow/1", "id": "welcome", "start": "hello",
    "steps": {
        "hello": {"type": "message", "text": "Hi {{ contact.name }}!", "next": "menu"},
        "menu": {"type": "message", "text": "Pick", "other_answer": "menu",
                 "buttons": [{"title": "Catalog", "next": "bye"}, {"title": "Site", "url": "https://x.example"}]},
        "bye": {"type": "stop"},
    },
}
WITH_WARNING: dict[str, Any] = {**VALID, "steps": {**VALID["steps"], "lost": {"type": "stop"}}}
BROKEN_COPY: dict[str, Any] = {
    "format": "salesbot.flow/1", "id": "welcome-copy", "start": "menu",
    "steps": {
        "menu": {"type": "message", "text": "Pick", "other_answer": "menu",
                 "buttons": [{"title": f"Option {i}", "next": "catalog"} for i in range(13)]
                 + [{"title": "More", "next": "catlog"}]},
        "catalog": {"type": "validation", "rules": [{"check": "regex", "pattern": "[0-9"}],
                    "pass": "again", "fail": "menu"},
        "again": {"type": "goto", "step": "retry"},
        "retry": {"type": "goto", "step": "again"},
    },
}
BROKEN_LINES = [
    "/steps/catalog/rules/0/pattern: regular expression does not compile: unterminated character set at position 4",
    "/steps/menu/buttons: at most 13 buttons, got 14",
    '/steps/menu/buttons/13/next: unknown step "catlog" (did you mean "catalog"?)',
    "/steps/retry/step: loop again → retry → again can run without ever waiting for the customer",
]


def write(tmp_path: Path, name: str, doc: Any) -> str:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    return str(path)


def run(*argv: str) -> tuple[int, list[str]]:
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue().splitlines()


def test_validate_valid_flow(tmp_path: Path) -> None:
    f = write(tmp_path, "valid.json", VALID)
    assert run("flows", "validate", f) == (0, ["1 flow(s) valid"])


def test_validate_prints_warnings_and_exits_0(tmp_path: Path) -> None:
    f = write(tmp_path, "warn.json", WITH_WARNING)
    assert run("flows", "validate", f) == (0, [
        f"{f}: /steps/lost: warning: step cannot be reached from the start",
        "1 flow(s) valid",
    ])


def test_validate_broken_copy_one_line_per_problem_and_exit_1(tmp_path: Path) -> None:
    f = write(tmp_path, "broken.json", BROKEN_COPY)
    assert run("flows", "validate", f) == (1, [f"{f}: {line}" for line in BROKEN_LINES])


def test_validate_several_files(tmp_path: Path) -> None:
    good = write(tmp_path, "good.json", VALID)
    bad = write(tmp_path, "bad.json", {**VALID, "start": "helo"})
    assert run("flows", "validate", good, bad) == (1, [f'{bad}: /start: unknown step "helo" (did you mean "hello"?)'])
    other = write(tmp_path, "other.json", VALID)
    assert run("flows", "validate", good, other) == (0, ["2 flow(s) valid"])


def test_validate_skips_the_flow_schema(tmp_path: Path) -> None:
    """README: `salesbot flows validate flows/*.json` recognises schema.json and skips it."""
    schema = str(ROOT / "flows" / "schema.json")
    good = write(tmp_path, "good.json", VALID)
    assert run("flows", "validate", schema, good) == (0, [
        f"{schema}: (document): skipped: a JSON Schema, not a flow",
        "1 flow(s) valid",
    ])


@pytest.mark.parametrize(("content", "message"), [
    ('{"format": ', "not valid JSON: Expecting value at line 1 column 12"),
    ("", "not valid JSON: Expecting value at line 1 column 1"),
    ("[1, 2]", "a flow is a JSON object"),
    ('{"x": ' + "1" * 5000 + "}",
     ("not valid JSON: Exceeds the limit (4300 digits) for integer string conversion: value has 5000 digits; "
      "use sys.set_int_max_str_digits() to increase the limit")),
])
def test_validate_unreadable_documents(tmp_path: Path, content: str, message: str) -> None:
    f = write(tmp_path, "x.json", content)
    assert run("flows", "validate", f) == (1, [f"{f}: (document): {message}"])


def test_validate_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    """Regression: a UnicodeDecodeError used to escape with a traceback."""
    path = tmp_path / "latin1.json"
    path.write_bytes('{"name": "Müller"}'.encode("latin-1"))
    said = f"{path}: (document): not UTF-8 text: byte 11 cannot be decoded"
    assert run("flows", "validate", str(path)) == (1, [said])


def test_validate_a_missing_file(tmp_path: Path) -> None:
    f = str(tmp_path / "nope.json")
    assert run("flows", "validate", f) == (1, [f"{f}: (document): cannot read: No such file or directory"])


def test_validate_json_output(tmp_path: Path) -> None:
    bad = write(tmp_path, "broken.json", BROKEN_COPY)
    warn = write(tmp_path, "warn.json", WITH_WARNING)
    code, lines = run("flows", "validate", "--json", warn, bad)
    assert code == 1
    report = json.loads("\n".join(lines))
    assert report["valid"] is False
    assert report["problems"][0] == {"file": warn, "pointer": "/steps/lost",
                                     "message": "step cannot be reached from the start", "severity": "warning"}
    assert [f"{p['pointer']}: {p['message']}" for p in report["problems"][1:]] == BROKEN_LINES
    assert {p["file"] for p in report["problems"][1:]} == {bad}
    assert {p["severity"] for p in report["problems"][1:]} == {"error"}
    code, lines = run("flows", "validate", "--json", warn)
    assert code == 0 and json.loads("\n".join(lines))["valid"] is True


def test_graph_prints_mermaid(tmp_path: Path) -> None:
    f = write(tmp_path, "valid.json", VALID)
    out = io.StringIO()
    assert main(["flows", "graph", f], out=out) == 0
    assert out.getvalue() == to_mermaid(parse_flow_model(VALID))
    assert out.getvalue().splitlines()[:2] == ["flowchart TD", '    START(["start"]) --> s_hello']
    out = io.StringIO()
    assert main(["flows", "graph", f, "--highlight", "menu"], out=out) == 0
    assert out.getvalue().splitlines()[-1] == "    class s_menu current"


def test_graph_of_an_invalid_flow_prints_its_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = write(tmp_path, "broken.json", BROKEN_COPY)
    out = io.StringIO()
    assert main(["flows", "graph", f], out=out) == 1
    assert out.getvalue() == ""
    assert capsys.readouterr().err.splitlines() == [f"{f}: {line}" for line in BROKEN_LINES]


def test_graph_of_a_file_that_is_not_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = write(tmp_path, "x.json", "{")
    assert main(["flows", "graph", f], out=io.StringIO()) == 1
    expected = "not valid JSON: Expecting property name enclosed in double quotes at line 1 column 2"
    assert capsys.readouterr().err == f"{f}: {expected}\n"


def test_validate_reports_a_step_written_twice_and_names_the_document_plainly(tmp_path: Path) -> None:
    f = write(tmp_path, "dup.json", '{"format": "salesbot.flow/1", "id": "dup", "start": "a", "steps": {'
              '"a": {"type": "message", "text": "first", "next": "b"}, "b": {"type": "stop"}, "a": {"type": "stop"}}}')
    g = write(tmp_path, "list.json", "[]")
    assert run("flows", "validate", f, g) == (1, [
        f'{f}: /steps/a: "a" is written twice in this object: only the last one would count',
        f"{f}: /steps/b: warning: step cannot be reached from the start",  # the "a" that won stops
        f"{g}: (document): a flow is a JSON object"])


def test_validate_needs_a_file() -> None:
    with pytest.raises(SystemExit) as info:
        main(["flows", "validate"], out=io.StringIO())
    assert info.value.code == 2


def test_command_line_through_a_real_process(tmp_path: Path) -> None:
    bad = write(tmp_path, "broken.json", BROKEN_COPY)
    good = write(tmp_path, "warn.json", WITH_WARNING)
    done = subprocess.run([sys.executable, "-m", "bot.cli", "flows", "validate", bad],
                          capture_output=True, text=True, encoding="utf-8", timeout=120, cwd=ROOT)
    assert (done.returncode, done.stdout.splitlines(), done.stderr) == (
        1, [f"{bad}: {line}" for line in BROKEN_LINES], "")
    done = subprocess.run([sys.executable, "-m", "bot.cli", "flows", "validate", good],
                          capture_output=True, text=True, encoding="utf-8", timeout=120, cwd=ROOT)
    assert (done.returncode, done.stdout.splitlines()) == (
        0, [f"{good}: /steps/lost: warning: step cannot be reached from the start", "1 flow(s) valid"])


# ---------------------------------------------------------------------- salesbot automations validate
AUTOMATIONS: dict[str, Any] = {
    "format": "salesbot.automations/1", "id": "sales", "pipeline": "Sales",
    "rules": [{"id": "hello", "stage": "Incoming", "on": "created", "do": {"start_bot": "welcome"}}],
}


def toml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "salesbot.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_automations_validate_the_example_against_the_example_flows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # flows/ is the flows_dir, and there is no salesbot.toml
    example = str(ROOT / "automations" / "sales.json")
    schema = str(ROOT / "flows" / "automations.schema.json")
    config = str(ROOT / "tests" / "fixtures" / "no-such.toml")
    assert run("automations", "validate", example, schema, "--config", config)[0] == 2  # a config that is not there
    code, lines = run("automations", "validate", example, schema)  # ./salesbot.toml is optional; flows/ is here
    skipped = f"{schema}: (document): skipped: a JSON Schema, not a document"
    assert (code, lines) == (0, [skipped, "1 document(s) valid"])


def test_automations_validate_one_line_per_problem_and_exit_1(tmp_path: Path) -> None:
    bad = {**AUTOMATIONS, "rules": [{**AUTOMATIONS["rules"][0], "stage": "Incomng", "do": {"start_bot": "welcom"}}],
           "triggers": [{"id": "t", "stage": "Won", "on": "order.payed"}]}
    f = write(tmp_path, "bad.json", bad)
    code, lines = run("automations", "validate", f)
    assert code == 1
    assert lines == [
        (f'{f}: /rules/0/do/start_bot: unknown bot "welcom" (did you mean "welcome"?); known: ab_offer, appointment, '
        "cart_nudge, demo, qualify, welcome"),
        (f'{f}: /rules/0/stage: unknown stage "Incomng" of pipeline "Sales" (did you mean "Incoming"?); its stages: '
        "Incoming, Contacted, Qualified, Proposal, Won, Lost"),
        (f'{f}: /triggers/0/on: unknown event type "order.payed" (did you mean "order.paid"?) '
        '(your own events are "custom.<name>")'),
    ]


def test_automations_validate_warnings_exit_0_and_json(tmp_path: Path) -> None:
    doc = {**AUTOMATIONS, "rules": [{**AUTOMATIONS["rules"][0], "active": "working_hours"}]}
    f = write(tmp_path, "warn.json", doc)
    assert run("automations", "validate", f) == (0, [
        f'{f}: /rules/0/active: warning: the same as "always": settings.working_hours is not set',
        "1 document(s) valid"])
    code, lines = run("automations", "validate", "--json", f, write(tmp_path, "x.json", "[1]"))
    report = json.loads("\n".join(lines))
    assert code == 1 and report["valid"] is False
    assert [(p["pointer"], p["severity"]) for p in report["problems"]] == [("/rules/0/active", "warning"),
                                                                          ("", "error")]


def test_automations_validate_reads_pipelines_and_flows_dir_from_salesbot_toml(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bots").mkdir()
    write(tmp_path / "bots", "hello.json", {**VALID, "id": "hello"})
    toml(tmp_path, 'flows_dir = "bots"\n[embedded_crm.pipelines]\nSupport = ["New", "Waiting", "Done"]\n')
    doc = {**AUTOMATIONS, "pipeline": "Support",
           "rules": [{"id": "hi", "stage": "Waitng", "on": "created", "do": {"start_bot": "welcome"}}]}
    f = write(tmp_path, "support.json", doc)
    code, lines = run("automations", "validate", f)
    assert code == 1
    assert lines == [f'{f}: /rules/0/do/start_bot: unknown bot "welcome"; known: hello',
                     (f'{f}: /rules/0/stage: unknown stage "Waitng" of pipeline "Support" (did you mean "Waiting"?); '
                     "its stages: New, Waiting, Done")]
    # Without a salesbot.toml and a flows folder: the default Sales pipeline, bots not checked.
    (tmp_path / "salesbot.toml").unlink()
    g = write(tmp_path, "sales.json", {**AUTOMATIONS, "rules": [{**AUTOMATIONS["rules"][0],
                                                                 "do": {"start_bot": "anybody"}}]})
    assert run("automations", "validate", g) == (0, ["1 document(s) valid"])
    assert run("automations", "validate", f)[1] == [
        f'{f}: /pipeline: unknown pipeline "Support"; known: Sales']
    # Another CRM backend: pipelines and stages are not checked.
    toml(tmp_path, '[crm]\nbackend = "webhook"\nbase_url = "https://crm.example"\nsecret = "s3cret-value"\n')
    assert run("automations", "validate", f) == (0, ["1 document(s) valid"])


def test_automations_validate_with_a_broken_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = toml(tmp_path, "port = [\n")
    assert run("automations", "validate", write(tmp_path, "a.json", AUTOMATIONS), "--config", config) == (2, [])
    assert "not valid TOML" in capsys.readouterr().err


@pytest.mark.parametrize(("option", "said"), [(["--now", "yesterday"], "--now 'yesterday': not an ISO 8601 time"),
                                              (["--channel", "pigeon"], "--channel 'pigeon': not a channel")])
def test_chat_refuses_a_bad_option_with_a_message_not_a_traceback(
        option: list[str], said: str, capsys: pytest.CaptureFixture[str]) -> None:
    from bot.cli import main

    code = main(["chat", str(ROOT / "flows" / "demo.json"), *option], out=io.StringIO(), inp=io.StringIO(""))
    assert code == 2 and said in capsys.readouterr().err


def test_push_skips_a_json_schema_as_validate_does() -> None:
    from bot.cli import main

    out = io.StringIO()  # nothing to send: no server is asked
    assert main(["flows", "push", str(ROOT / "flows" / "schema.json"), "--server", "http://127.0.0.1:9",
                 "--token", "t"], out=out) == 0
    assert "skipped: a JSON Schema" in out.getvalue()


@pytest.mark.parametrize(("url", "says"), [
    ("redis://:pw-supersecret@127.0.0.1:1/0", "redis_url: Error 111 connecting to 127.0.0.1:1"),
    ("bogus://:pw-supersecret@127.0.0.1:1/0", "redis_url: Redis URL must specify one of the following schemes"),
])
def test_an_unreachable_or_unreadable_redis_url_is_one_line_without_its_password(
        tmp_path: Path, url: str, says: str) -> None:
    """Before: an 80-line traceback (exit 1) from the start's first Redis call."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SALESBOT_")}
    done = subprocess.run([sys.executable, "-m", "bot.cli", "serve", "--port", "0", "--data-dir", str(tmp_path)],
                          capture_output=True, text=True, encoding="utf-8", timeout=120, cwd=tmp_path,
                          env={**env, "SALESBOT_REDIS_URL": url, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 1
    assert says in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert "supersecret" not in done.stderr + done.stdout


def test_a_misspelled_salesbot_variable_is_named_at_start_not_silently_ignored(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """``SALESBOT_TIMER_POLL_INTERVALL=1`` left the default poll in force without a word."""
    for name in [n for n in os.environ if n.startswith("SALESBOT_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("SALESBOT_TIMER_POLL_INTERVALL", "1")
    monkeypatch.setenv("SALESBOT_TEST_REDIS_URL", "redis://x")  # the test suite's own: not warned about
    monkeypatch.setenv("SALESBOT_PORT", "abc")  # the start then fails: nothing is served
    monkeypatch.chdir(tmp_path)
    assert main(["serve", "--data-dir", str(tmp_path)], out=io.StringIO()) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == ("salesbot: warning: SALESBOT_TIMER_POLL_INTERVALL is not a setting, ignored "
                      "(did you mean SALESBOT_TIMER_POLL_INTERVAL?)"), err
    assert len(err) == 2 and err[1].startswith("salesbot: invalid configuration: port"), err
