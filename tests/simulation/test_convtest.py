"""Conversation tests (``bot.simulation.convtest``): matchers on values of every type."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bot.simulation.convtest import match_value, run_test_file

FLOW = {
    "format": "salesbot.flow/1", "id": "counts", "start": "count",
    "steps": {
        "count": {"type": "action", "actions": [
            {"do": "set_variable", "name": "attempts", "value": "{{ 1 + 1 }}"},
            {"do": "set_variable", "name": "price", "value": "{{ 5 / 2 }}"},
            {"do": "set_variable", "name": "vip", "value": "{{ 3 > 1 }}"},
            {"do": "set_variable", "name": "tags", "value": "{{ ['a', 'b'] }}"},
        ], "next": "done"},
        "done": {"type": "message", "text": "Counted {{ vars.attempts }}"},
    },
}


@pytest.mark.parametrize(("actual", "matcher"), [
    (2, {"matches": "^2$"}),
    (2, {"contains": "2"}),
    (2.5, {"matches": r"^2\.5$"}),
    (-3, {"contains": "-3"}),
    (True, {"matches": "^true$"}),
    (False, {"contains": "false"}),
    (None, {"matches": "^$"}),
    (["a", "b"], {"contains": '"b"'}),
    ({"k": 1}, {"matches": r'^\{"k": 1\}$'}),
    ("Ayşe", {"contains": "ş"}),
])
def test_text_matchers_read_any_value_as_an_operator_writes_it(actual: Any, matcher: dict[str, str]) -> None:
    assert match_value(actual, matcher)


@pytest.mark.parametrize(("actual", "matcher"), [
    (2, {"matches": "^2.0$"}),  # the number is 2, not 2.0
    (12, {"matches": "^2$"}),
    (True, {"matches": "^True$"}),  # YAML and JSON spell it true
    (None, {"contains": "None"}),
    (None, {"contains": "null"}),
])
def test_text_matchers_still_fail_on_other_text(actual: Any, matcher: dict[str, str]) -> None:
    assert not match_value(actual, matcher)


def _conversation_test(tmp_path: Path, expect: str) -> str:
    (tmp_path / "counts.json").write_text(json.dumps(FLOW), encoding="utf-8")
    test = tmp_path / "counts.test.yaml"
    test.write_text(
        "flow: counts.json\n"
        "script:\n"
        "  - event: {type: start_bot, bot: counts}\n"
        "  - bot: Counted 2\n"
        f"  - expect: {expect}\n",
        encoding="utf-8",
    )
    outcome = run_test_file(test)
    return outcome.report()


def test_a_conversation_test_matches_numbers_and_booleans_as_text(tmp_path: Path) -> None:
    report = _conversation_test(
        tmp_path, '{vars.attempts: {matches: "^2$"}, vars.price: {contains: "2.5"}, vars.vip: {matches: "^true$"},'
                  ' vars.tags: {contains: "b"}, vars.unset: {matches: "^$"}}')
    assert report.startswith("PASS"), report


def test_a_text_matcher_that_does_not_match_a_number_still_fails(tmp_path: Path) -> None:
    report = _conversation_test(tmp_path, '{vars.attempts: {matches: "^3$"}}')
    assert report.startswith("FAIL"), report
    assert 'vars.attempts is 2, expected {"matches": "^3$"}' in report


def test_a_conversation_test_sees_the_order_link_in_vars_and_outbox(tmp_path: Path) -> None:
    flow = {"format": "salesbot.flow/1", "id": "orders", "start": "link", "steps": {
        "link": {"type": "action", "actions": [{"do": "order_link", "expires": "3d"}], "next": "say"},
        "say": {"type": "message", "text": "Order here: {{ vars.order_url }}"}}}
    (tmp_path / "orders.json").write_text(json.dumps(flow), encoding="utf-8")
    test = tmp_path / "orders.test.yaml"
    test.write_text(
        "flow: orders.json\n"
        "script:\n"
        "  - event: {type: start_bot, bot: orders}\n"
        '  - bot: {matches: "^Order here: https://orders\\\\.invalid/order/\\\\d+$"}\n'
        '  - expect: {vars.order_url: {contains: "/order/"}, outbox: {contains: "order_link"}}\n',
        encoding="utf-8")
    report = run_test_file(test).report()
    assert report.startswith("PASS"), report
