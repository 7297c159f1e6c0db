"""``salesbot flows import --from kommo``: output, warnings, the summary line and exit 1 on bad input."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from bot.cli import main
from bot.kommo_import_cli import default_id

BOT = [{"question": [{"handler": "show", "params": {"type": "text", "value": "Hi {{lead.cf.4242}}"}},
                     {"handler": "find", "params": {"type": "contact_double", "params": {"type": "name"}}}]}]


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(["flows", "import", "--from", "kommo", *argv], out=out)
    return code, out.getvalue()


def test_the_flow_goes_to_stdout_and_the_notes_to_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "Greeter Bot.json").write_text(json.dumps(BOT))
    code, out = run(str(tmp_path / "Greeter Bot.json"))
    assert code == 0
    flow = json.loads(out)
    assert flow["id"] == "greeter-bot" and flow["steps"]["q0"]["text"] == "Hi {{ lead.fields.cf_4242 }}"
    err = capsys.readouterr().err.splitlines()
    assert err[0].endswith("/0/question/0/params/value: warning: Kommo field 4242 is not in the map's [fields]: "
                           "the flow calls it cf_4242")
    assert err[1].endswith("/0/question/1: warning: find (finding duplicates or list elements) has no equivalent "
                           "here: kept as a custom step (kommo.find) with the original handler")
    assert err[-1].endswith('as flow "greeter-bot": 1 handler(s) converted, 0 approximated, '
                            "1 left as custom step(s), 2 warning(s)")


def test_with_output_and_map_the_notes_go_to_stdout(tmp_path: Path) -> None:
    (tmp_path / "in.json").write_text(json.dumps(BOT))
    (tmp_path / "map.toml").write_text('[fields]\n"4242" = "participation"\n')
    code, out = run(str(tmp_path / "in.json"), "--id", "greeter", "-o", str(tmp_path / "out.json"),
                    "--map", str(tmp_path / "map.toml"))
    assert code == 0
    flow = json.loads((tmp_path / "out.json").read_text())
    assert flow["steps"]["q0"]["text"] == "Hi {{ lead.fields.participation }}"
    assert out.splitlines()[-1].endswith(f'as flow "greeter" to {tmp_path / "out.json"}: 1 handler(s) converted, '
                                         "0 approximated, 1 left as custom step(s), 1 warning(s)")
    assert main(["flows", "validate", str(tmp_path / "out.json")], out=io.StringIO()) == 0


@pytest.mark.parametrize(("text", "expected"), [
    ("{not json", ": (document): not JSON: "),
    ('[{"question": [{"handler": "ask", "params": {}}]}]', ': /0/question/0/handler: unknown handler "ask"'),
    ('[{"question": [{"handler": "goto", "params": {"type": "question", "step": 9}}]}]',
     ": /0/question/0/params/step: there is no step 9"),
    ('[{"question": [{"handler": "show", "params": {"type": "text", "value": ["x"]}}]}]',
     ": /0/question/0/params/value: must be text"),
])
def test_malformed_input_exits_1_with_the_pointer(tmp_path: Path, text: str, expected: str) -> None:
    (tmp_path / "bad.json").write_text(text)
    code, out = run(str(tmp_path / "bad.json"), "-o", str(tmp_path / "out.json"))
    assert code == 1
    assert out.startswith(f"{tmp_path / 'bad.json'}{expected}")
    assert not (tmp_path / "out.json").exists()


def test_a_bad_map_a_missing_file_or_a_bad_id_exit_1(tmp_path: Path) -> None:
    (tmp_path / "in.json").write_text(json.dumps(BOT))
    (tmp_path / "map.toml").write_text('[colors]\n"1" = "red"\n')
    code, out = run(str(tmp_path / "in.json"), "--map", str(tmp_path / "map.toml"))
    assert code == 1 and '/colors: unknown table "colors"' in out
    code, out = run(str(tmp_path / "missing.json"))
    assert code == 1 and "missing.json: (document): cannot read" in out
    code, out = run(str(tmp_path / "in.json"), "--id", "Not An Id")
    assert code == 1 and "a flow id is" in out


def test_default_ids() -> None:
    assert default_id("bots/Welcome Bot.json") == "welcome-bot"
    assert default_id("menu.kommo.json") == "menu"
    assert default_id("Çiçek Şube.json") == "cicek-sube"
    assert default_id("!!!.json") == "kommo-bot"
