"""The example flows in flows/ are valid and their conversation tests pass, and so do the
automations' tests in automations/ (one per rule kind)."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import pytest

from bot.automations.models import RuleOn
from bot.builder import check_document, read_document
from bot.simulation.convtest import run_test_file

FLOWS = Path(__file__).resolve().parents[1] / "flows"
FLOW_FILES = sorted(p for p in FLOWS.glob("*.json") if not p.name.endswith("schema.json"))  # the formats' schemas
TEST_FILES = sorted(FLOWS.rglob("*.test.yaml"))
AUTOMATIONS = FLOWS.parent / "automations"
AUTOMATION_TESTS = sorted(AUTOMATIONS.rglob("*.test.yaml"))


def test_there_are_example_flows_with_tests() -> None:
    assert len(FLOW_FILES) >= 5
    for flow in FLOW_FILES:
        assert any(t.name.startswith(flow.stem + ".") for t in TEST_FILES), f"{flow.name} has no test"


@pytest.mark.parametrize("path", FLOW_FILES, ids=lambda p: p.name)
def test_example_flow_is_valid_without_warnings(path: Path) -> None:
    problems, flow = check_document(read_document(path))
    assert flow is not None, [str(p) for p in problems]
    assert [str(p) for p in problems] == []


@pytest.mark.parametrize("path", TEST_FILES + AUTOMATION_TESTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_conversation_test_passes(path: Path) -> None:
    outcome = run_test_file(path)
    assert outcome.passed, outcome.report()


def test_example_flows_use_every_step_type() -> None:
    from bot.builder.validate import _STEP_TYPE_NAMES

    used = {step["type"] for p in FLOW_FILES for step in read_document(p)["steps"].values()}
    assert set(_STEP_TYPE_NAMES) - used == set()


def test_every_rule_kind_triggers_and_scoring_have_an_example_test() -> None:
    names = {p.name for p in AUTOMATION_TESTS}
    for kind in [*get_args(RuleOn), "triggers", "scoring"]:
        assert f"sales.{kind}.test.yaml" in names, f"automations/sales.{kind}.test.yaml is missing"
