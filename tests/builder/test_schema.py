"""flows/schema.json is the JSON Schema generated from the models, and stays in step with them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bot.builder import models as m
from bot.builder.schema import DEFAULT_PATH, SCHEMA_ID, flow_json_schema, main, schema_text, write_schema

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_FILE = ROOT / "flows" / "schema.json"


def test_flows_schema_json_is_up_to_date() -> None:
    assert DEFAULT_PATH == SCHEMA_FILE
    assert SCHEMA_FILE.is_file(), "flows/schema.json is missing: run `python -m bot.builder.schema`"
    stored = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    assert stored == flow_json_schema(), (
        "flows/schema.json is out of date with bot/builder/models.py: run `python -m bot.builder.schema`"
    )


def test_schema_identity() -> None:
    schema = flow_json_schema()
    assert schema["$id"] == SCHEMA_ID == "urn:salesbot:flow:1"
    assert schema["title"] == "Salesbot flow (salesbot.flow/1)"
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["type"] == "object"
    assert schema["required"] == ["format", "id", "start", "steps"]
    assert schema["properties"]["format"]["const"] == "salesbot.flow/1"
    assert schema["properties"]["id"]["pattern"] == "^[a-z0-9][a-z0-9_-]{0,63}$"


def test_schema_lists_every_step_type_and_action_in_its_discriminators() -> None:
    schema = flow_json_schema()
    steps = schema["properties"]["steps"]
    (step_schema,) = steps["patternProperties"].values()
    assert list(steps["patternProperties"]) == ["^[A-Za-z0-9_-]{1,64}$"]
    assert step_schema["discriminator"]["propertyName"] == "type"
    mapping = step_schema["discriminator"]["mapping"]
    assert set(mapping) == {"message", "list", "condition", "validation", "pause", "action",
                            "internal_message", "subscribe", "comment", "goto", "start_bot",
                            "round_robin", "widget", "custom", "stop", "split"}
    defs = schema["$defs"]
    for ref in mapping.values():
        assert ref.startswith("#/$defs/") and ref.removeprefix("#/$defs/") in defs
    actions = defs["ActionStep"]["properties"]["actions"]["items"]
    assert actions["discriminator"]["propertyName"] == "do"
    assert set(actions["discriminator"]["mapping"]) == {
        "add_note", "add_task", "complete_tasks", "set_chat_status", "change_stage", "change_responsible",
        "create_lead", "subscribers", "tags", "send_email", "send_webhook", "set_field", "set_variable",
        "create_form", "meta_conversion", "order_link",
        "start_process", "end_process", "score", "lists", "notify", "send_sms", "send_message"}


def test_schema_uses_document_keys_and_limits() -> None:
    defs = flow_json_schema()["$defs"]
    assert "if" in defs["Branch"]["properties"] and "if_" not in defs["Branch"]["properties"]
    assert "else" in defs["ConditionStep"]["properties"]
    assert "pass" in defs["ValidationStep"]["properties"]
    assert "from" in defs["SetField"]["properties"]
    assert "not" in defs["NotPredicate"]["properties"]
    assert defs["MessageStep"]["properties"]["buttons"]["maxItems"] == m.MAX_BUTTONS == 13
    assert defs["ListRow"]["properties"]["title"]["maxLength"] == 24
    assert defs["RoundRobinStep"]["properties"]["options"]["minItems"] == 2
    assert defs["RoundRobinStep"]["properties"]["options"]["maxItems"] == 100
    for name, model in defs.items():
        if model.get("type") == "object" and "properties" in model:
            assert model["additionalProperties"] is False, name
            assert model["patternProperties"] == {"^x-": {}}, name


def test_write_schema_and_main(tmp_path: Path) -> None:
    target = tmp_path / "schema.json"
    assert write_schema(target) == target
    assert target.read_text(encoding="utf-8") == schema_text()
    assert schema_text().endswith("}\n")
    other = tmp_path / "other.json"
    assert main([str(other)]) == 0
    assert json.loads(other.read_text(encoding="utf-8")) == flow_json_schema()
    assert main(["--help"]) == 2


def test_python_dash_m_entry_point(tmp_path: Path) -> None:
    target = tmp_path / "s.json"
    done = subprocess.run([sys.executable, "-m", "bot.builder.schema", str(target)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"wrote {target}\n"
    assert json.loads(target.read_text(encoding="utf-8")) == flow_json_schema()
