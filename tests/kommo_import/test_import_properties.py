"""Whatever the input, import gives a valid flow or a KommoImportError with a pointer, never another
exception: the real-shaped fixtures with one value replaced by arbitrary JSON, and arbitrary handlers."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.builder.validate import check_document
from bot.kommo_import.convert_in import convert
from bot.kommo_import.document import HANDLERS
from bot.kommo_import.result import KommoImportError

FIXTURES = [json.loads(p.read_text()) for p in sorted((Path(__file__).parent / "fixtures").glob("*.kommo.json"))]
JSON = st.recursive(st.none() | st.booleans() | st.integers(-5, 300) | st.text(max_size=12)
                    | st.sampled_from(["{{lead.cf.1}}", "/a(/i", "question", "answer", "finish", "=", "in_range",
                                       "regex", "talk-close", "{{json.x}}", "lead.tags"]),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                    max_leaves=8)


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(value, dict):
        for k, v in value.items():
            found += _paths(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found += _paths(v, (*path, i))
    return found


def _imports_or_refuses(doc: Any) -> None:
    try:
        result = convert(doc, bot_id="t")
    except KommoImportError as exc:
        assert isinstance(exc.pointer, str) and exc.message
        return
    errors = [str(p) for p in check_document(result.flow)[0] if p.severity == "error"]
    assert errors == []


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_a_fixture_with_one_value_replaced(data: st.DataObject) -> None:
    doc = copy.deepcopy(data.draw(st.sampled_from(FIXTURES)))
    path = data.draw(st.sampled_from(_paths(doc)[1:]))
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = data.draw(JSON)
    _imports_or_refuses(doc)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.fixed_dictionaries({"handler": st.sampled_from(sorted(HANDLERS)), "params": JSON}),
                min_size=1, max_size=4), st.booleans())
def test_arbitrary_handlers(handlers: list[dict[str, Any]], answer: bool) -> None:
    step: dict[str, Any] = {"question": handlers}
    if answer:
        step["answer"] = handlers
    _imports_or_refuses([step, {"question": []}])


KIND = st.sampled_from(["question", "answer", "finish"])
STEP = st.integers(0, 2)
LEAF = st.one_of(
    st.builds(lambda k, n: {"handler": "goto", "params": {"type": k, "step": n}}, KIND, STEP),
    st.builds(lambda k, n: {"handler": "wait_answer", "params": {"type": k, "step": n}}, KIND, STEP),
    st.builds(lambda t: {"handler": "show", "params": {"type": "text", "value": t}}, st.sampled_from(["a", "b"])),
    st.just({"handler": "show", "params": {"type": "buttons", "value": "pick", "buttons": ["x", "y"]}}),
    st.just({"handler": "action", "params": {"name": "set_tag", "params": {"type": 2, "value": "t"}}}),
    st.sampled_from([{"handler": "stop", "params": {}}, {"handler": "stop", "params": {"action": "talk-close"}}]),
)
HANDLERS_ = st.recursive(st.lists(LEAF, max_size=3), lambda inner: st.lists(st.one_of(
    LEAF,
    st.builds(lambda r: {"handler": "condition", "params": {"term1": "{{message_text}}", "term2": "x",
                                                            "operation": "=", "result": r}}, inner),
    st.builds(lambda r: {"handler": "buttons", "params": [{"value": "x", "params": r}]}, inner)), max_size=3),
    max_leaves=6)
SECTIONS = st.dictionaries(KIND, HANDLERS_, max_size=3)


@settings(max_examples=300, deadline=None)
@given(st.lists(SECTIONS, min_size=1, max_size=3))
def test_arbitrary_control_flow(bot: list[dict[str, Any]]) -> None:
    _imports_or_refuses(bot)
