"""Exact limits of the validator: the document size at and one byte over the limit, problems
reported once however often they are found, and which flows read the CRM (``uses_crm``)."""

from __future__ import annotations

import json
from typing import Any

from bot.builder import check_document
from bot.builder.validate import MAX_DOCUMENT_BYTES

from .helpers import flow, lst

STOP: dict[str, Any] = {"type": "stop"}


def _sized(size: int) -> dict[str, Any]:
    """A valid one-step flow whose stored JSON is exactly ``size`` bytes (a multi-byte pad)."""
    doc = flow({"a": STOP}, **{"x-blob": ""})
    base = len(json.dumps(doc, ensure_ascii=False).encode())
    pad = size - base
    doc["x-blob"] = "é" * (pad // 2) + "x" * (pad % 2)  # 2 bytes each in UTF-8, 1 character
    assert len(json.dumps(doc, ensure_ascii=False).encode()) == size
    return doc


def test_a_document_of_exactly_the_limit_is_accepted() -> None:
    problems, compiled = check_document(_sized(MAX_DOCUMENT_BYTES))
    assert problems == [] and compiled is not None


def test_a_document_one_byte_over_the_limit_is_refused() -> None:
    problems, compiled = check_document(_sized(MAX_DOCUMENT_BYTES + 1))
    assert compiled is None
    assert [(p.pointer, p.message) for p in problems] == [
        ("", f"the document is {MAX_DOCUMENT_BYTES + 1} bytes; at most {MAX_DOCUMENT_BYTES} are allowed")]


def test_the_limit_is_512_kib() -> None:
    assert MAX_DOCUMENT_BYTES == 512 * 1024


def test_each_row_that_repeats_an_id_is_reported_once() -> None:
    # Three rows share an id: the second and the third repeat it, each once.
    step = lst([{"title": "A", "rows": [{"id": "tea", "title": f"Tea {i}", "next": "l"} for i in range(3)]}],
               target="l")
    problems, _ = check_document(flow({"l": step}))
    assert [(p.pointer, p.message, p.severity) for p in problems] == [
        ("/steps/l/sections/0/rows/1/id", 'row id "tea" is used twice', "error"),
        ("/steps/l/sections/0/rows/2/id", 'row id "tea" is used twice', "error")]


def _uses_crm(actions: list[dict[str, Any]]) -> bool:
    problems, compiled = check_document(flow({"act": {"type": "action", "actions": actions}}))
    assert compiled is not None, problems
    return compiled.uses_crm


def test_set_field_from_manual_reads_the_crm() -> None:
    """Asking a person to fill a field names the lead, read from the CRM snapshot."""
    assert _uses_crm([{"do": "set_field", "entity": "lead", "field": "budget", "from": "manual"}])


def test_a_flow_reading_nothing_of_the_crm_does_not_use_it() -> None:
    assert not _uses_crm([{"do": "set_variable", "name": "n", "value": "1"},
                          {"do": "set_field", "entity": "lead", "field": "budget", "from": "message"}])
    assert _uses_crm([{"do": "set_variable", "name": "n", "value": "{{ lead.name }}"}])
