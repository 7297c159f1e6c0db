"""``salesbot flows export --to kommo``: the Kommo JSON, or exit 1 with one line per problem."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from bot.cli import main

MENU = {"format": "salesbot.flow/1", "id": "menu", "start": "ask", "steps": {
    "ask": {"type": "message", "text": "Offline or online?", "buttons": [
        {"title": "Offline", "next": "off"}, {"title": "Online", "next": "off"}], "other_answer": "ask"},
    "off": {"type": "action", "actions": [
        {"do": "set_field", "field": "participation", "value": "{{ message.text }}"}]},
}}


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return main(list(argv), out=out), out.getvalue()


def write(tmp_path: Path, name: str, doc: Any) -> str:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return str(path)


def test_a_flow_is_written_as_kommo_json(tmp_path: Path) -> None:
    flow = write(tmp_path, "menu.json", MENU)
    mapped = write(tmp_path, "map.toml", '[fields]\n"4242" = "participation"\n')
    code, said = run("flows", "export", "--to", "kommo", flow, "--map", mapped)
    assert code == 0, said
    steps = json.loads(said)
    assert steps[1]["question"][0]["params"] == {"name": "set_custom_fields", "params": {
        "type": 2, "value": "{{message_text}}", "custom_fields_id": 4242}}
    target = tmp_path / "out.json"
    code, said = run("flows", "export", "--to", "kommo", flow, "--map", mapped, "-o", str(target))
    assert (code, said) == (0, f"exported 2 step(s) to {target}\n")
    assert json.loads(target.read_text()) == steps


def test_what_kommo_cannot_express_is_listed_and_nothing_is_written(tmp_path: Path) -> None:
    flow = write(tmp_path, "menu.json", {**MENU, "variables": {"n": 1}})
    target = tmp_path / "out.json"
    code, said = run("flows", "export", "--to", "kommo", flow, "-o", str(target))
    assert code == 1 and not target.exists()
    assert said.splitlines() == [
        f"{flow}: /variables: Kommo has no bot variables",
        (f'{flow}: /steps/off/actions/0/field: Kommo has no field named "participation": add its id to [fields] '
         "in the map (or name it cf_<id>)"),
        "not exported: 2 thing(s) Kommo cannot express"]


def test_a_bad_map_an_invalid_flow_and_a_missing_file_are_one_line_each(tmp_path: Path) -> None:
    flow = write(tmp_path, "menu.json", MENU)
    bad_map = write(tmp_path, "map.toml", '[field]\n"x" = "participation"\n')
    code, said = run("flows", "export", "--to", "kommo", flow, "--map", bad_map)
    assert (code, said) == (1, f'{bad_map}: /field: unknown table "field" (known: fields, stages, pipelines, users)\n')
    code, said = run("flows", "export", "--to", "kommo", flow, "--map", str(tmp_path / "none.toml"))
    assert code == 1 and said.startswith(f"{tmp_path / 'none.toml'}: (document): cannot read the map: ")
    broken = write(tmp_path, "broken.json", {**MENU, "start": "nowhere"})
    code, said = run("flows", "export", "--to", "kommo", broken)
    assert code == 1 and said.endswith("not exported: the flow is not valid\n") and "/start" in said
    code, said = run("flows", "export", "--to", "kommo", write(tmp_path, "nojson.json", "{"))
    assert code == 1 and said.startswith(f"{tmp_path / 'nojson.json'}: (document): ")
