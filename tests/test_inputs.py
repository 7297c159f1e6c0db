"""The edge's checks in isolation: the strict JSON parser and the one string-cleaning function."""

from __future__ import annotations

import json
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.inputs import MAX_DEPTH, BadInput, BadJson, clean_text, control_pointers, header_bytes, loads


@pytest.mark.parametrize("raw", [
    b"NaN", b"[Infinity]", b'{"a": -Infinity}', b"1e400", b"-1e400", b"[9223372036854775808]",
    b"-9223372036854775809", b"1" + b"0" * 5000, b"\xff\xfe", b"[" * 10_000 + b"]" * 10_000,
    b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), b"{", b""])
def test_loads_refuses(raw: bytes) -> None:
    with pytest.raises(BadJson):
        loads(raw)


def test_loads_accepts_the_edges_of_the_range() -> None:
    assert loads(b"[9223372036854775807, -9223372036854775808, 1.7976931348623157e308]") == [
        2**63 - 1, -(2**63), 1.7976931348623157e308]
    nested = b"[" * MAX_DEPTH + b"]" * MAX_DEPTH
    assert loads(nested) == json.loads(nested)
    assert loads('{"name": "Ayşe \\u00e4"}') == {"name": "Ayşe ä"}


@given(st.text())
def test_clean_text_leaves_no_control_character_and_respects_the_limit(text: str) -> None:
    out = clean_text(text, "f", limit=50)
    assert len(out) <= 50
    assert all(unicodedata.category(c) not in ("Cc", "Cs") or c in "\t\n\r" for c in out)
    line = clean_text(text, "f", limit=50, line=True)
    assert all(unicodedata.category(c) not in ("Cc", "Cs") for c in line)


def test_clean_text_refuses_what_is_not_a_string_and_normalises() -> None:
    with pytest.raises(BadInput) as err:
        clean_text(5, "name", limit=10)
    assert err.value.field == "name"
    assert clean_text("e\u0301", "f", limit=10) == "\u00e9"  # NFC
    assert clean_text(" a\tb\n c ", "f", limit=10, line=True) == "a b c"


def test_header_bytes_is_none_for_undecodable_bytes() -> None:
    assert header_bytes("Bearer \udcff") is None
    assert header_bytes("ok") == b"ok" and header_bytes(None) is None


def test_control_pointers_name_each_string_and_key_in_document_order() -> None:
    doc = {"id": "a\x01", "type": "ok", "data": {"k\x1f": 1, "l": ["ok", "b\x00"], "a/b~": "\u2028"}}
    assert control_pointers(doc) == ["/id", "/data/k\x1f", "/data/l/1", "/data/a~1b~0"]
    assert control_pointers("\x00") == ["/"] and control_pointers({"ok": ["fine"]}) == []
    assert len(control_pointers([f"\x07{n}" for n in range(100)], limit=5)) == 5
