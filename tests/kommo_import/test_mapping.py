"""The --map model: parsed, validated with pointers, looked up both ways, written back."""

from __future__ import annotations

import pytest

from bot.kommo_import import mapping
from bot.kommo_import.errors import KommoImportError, KommoMapInvalid

MAP = """
[fields]
"4242" = "participation"
"555123" = "budget"
[stages]
"142" = "won"
"143" = "lost"
"7002" = "Qualified"
"8002" = "Qualified"
[pipelines]
"7001" = "Sales"
[users]
"9001" = "anna"
"""


def test_a_map_reads_both_ways() -> None:
    m = mapping.parse(MAP)
    assert m.name("fields", 4242) == "participation"
    assert m.name("fields", "555123") == "budget"
    assert m.name("fields", "12") is None
    assert m.name("fields", "x1") is None
    assert m.kommo_id("stages", "won") == 142
    assert m.kommo_id("pipelines", "sales") == 7001  # case-insensitive when nothing matches exactly
    assert m.kommo_id("users", "bob") is None
    assert m.kommo_ids("stages", "Qualified") == [7002, 8002]
    assert m.kommo_id("stages", "Qualified") is None  # ambiguous for export
    assert not m.is_empty() and mapping.EMPTY.is_empty()


def test_every_problem_is_listed_with_its_pointer() -> None:
    with pytest.raises(KommoMapInvalid) as caught:
        mapping.parse('users = "x"\n[feilds]\n"1" = "a"\n[stages]\n"abc" = "won"\n"2" = ""\n"3" = 4\n')
    pointers = [p.pointer for p in caught.value.problems]
    assert pointers == ["/users", "/feilds", "/stages/abc", "/stages/2", "/stages/3"]
    assert 'unknown table "feilds" (known: fields, stages, pipelines, users)' in str(caught.value)
    assert '"abc" is not a Kommo id' in str(caught.value)
    assert isinstance(caught.value, KommoImportError)


def test_a_map_that_is_not_toml_is_a_clear_error() -> None:
    with pytest.raises(KommoMapInvalid, match="not TOML"):
        mapping.parse("[fields\n")


def test_ids_mapped_twice_are_refused() -> None:
    with pytest.raises(KommoMapInvalid, match="mapped twice"):
        mapping.from_document({"fields": {"1": "a", "01": "b"}})


def test_dump_reads_back_the_same_map_with_its_comments() -> None:
    m = mapping.from_document({"fields": {"2": 'say "hi"\\', "1": "Ünïcode"}, "users": {"5": "anna"}})
    text = mapping.dump(m, {("fields", 2): "Kommo: Quote\nfield (leads)"}, header=["drafted", ""])
    assert text.startswith("# drafted\n#\n\n[fields]\n")
    assert '"2" = "say \\"hi\\"\\\\"  # Kommo: Quote field (leads)' in text
    assert mapping.parse(text) == m
