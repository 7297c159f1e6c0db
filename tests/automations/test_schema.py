"""flows/automations.schema.json is the JSON Schema generated from the automation models, stays in
step with them, and the example document validates against it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from bot.automations.schema import AUTOMATIONS_SCHEMA, DEFAULT_PATH, SCHEMA_ID, automations_json_schema

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_FILE = ROOT / "flows" / "automations.schema.json"
EXAMPLES = sorted((ROOT / "automations").glob("*.json"))


def test_automations_schema_json_is_up_to_date() -> None:
    assert DEFAULT_PATH == SCHEMA_FILE
    assert SCHEMA_FILE.is_file(), "flows/automations.schema.json is missing: run `python -m bot.automations.schema`"
    stored = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    assert stored == automations_json_schema(), (
        "flows/automations.schema.json is out of date with bot/automations/models.py: "
        "run `python -m bot.automations.schema`")


def test_schema_identity_and_document_keys() -> None:
    schema = automations_json_schema()
    assert schema["$id"] == SCHEMA_ID == "urn:salesbot:automations:1"
    assert schema["title"] == "Salesbot automations (salesbot.automations/1)"
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["required"] == ["format", "id", "pipeline"]
    assert schema["properties"]["format"]["const"] == "salesbot.automations/1"
    rule = schema["$defs"]["Rule"]["properties"]
    assert "if" in rule and "if_" not in rule
    assert schema["properties"]["rules"]["maxItems"] == 2000


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_the_examples_validate_against_the_schema(path: Path) -> None:
    jsonschema.validate(json.loads(path.read_text(encoding="utf-8")), automations_json_schema(),
                        cls=jsonschema.Draft202012Validator)


def test_the_schema_refuses_what_the_models_refuse() -> None:
    example = json.loads(EXAMPLES[0].read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(automations_json_schema())
    assert list(validator.iter_errors(example)) == []
    for bad in ({**example, "format": "salesbot.flow/1"}, {**example, "colour": "red"},
                {**example, "rules": [{**example["rules"][0], "on": ["movedin"]}]},
                {**example, "triggers": [{"id": "x", "stage": "Won", "on": "Order Paid"}]}):
        assert list(validator.iter_errors(bad)), bad


def test_write_and_main(tmp_path: Path) -> None:
    target = tmp_path / "a.json"
    assert AUTOMATIONS_SCHEMA.write(target) == target
    assert target.read_text(encoding="utf-8") == AUTOMATIONS_SCHEMA.text()
    assert AUTOMATIONS_SCHEMA.main([str(tmp_path / "b.json")]) == 0
    assert json.loads((tmp_path / "b.json").read_text(encoding="utf-8")) == automations_json_schema()
    assert AUTOMATIONS_SCHEMA.main(["--help"]) == 2


def test_python_dash_m_entry_point(tmp_path: Path) -> None:
    target = tmp_path / "s.json"
    done = subprocess.run([sys.executable, "-m", "bot.automations.schema", str(target)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"wrote {target}\n"
    assert json.loads(target.read_text(encoding="utf-8")) == automations_json_schema()
