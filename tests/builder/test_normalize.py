"""Normalisation of replies for matching buttons: case-, accent- and space-insensitive."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.builder.normalize import normalize


@pytest.mark.parametrize("reply", ["Katalog", "katalog ", "KATALÓG", "  katalóg\t", "ＫＡＴＡＬＯＧ", "Kata\u0301log"])
def test_variants_of_a_title_match(reply: str) -> None:
    assert normalize(reply) == normalize("Katalog") == "katalog"


@pytest.mark.parametrize(("text", "expected"), [
    ("ıstanbul", "istanbul"),   # Turkish dotless ı
    ("İSTANBUL", "istanbul"),   # Turkish dotted capital İ
    ("ISTANBUL", "istanbul"),
    ("Fıyat", "fiyat"),
    ("Straße", "strasse"),
    ("Øre", "ore"),
    ("Łódź", "lodz"),
    ("ŒUVRE", "oeuvre"),
    ("çağrı", "cagri"),
    ("ﬁyat", "fiyat"),          # ligature, NFKD
])
def test_letters_without_their_marks(text: str, expected: str) -> None:
    assert normalize(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("  Talk   to\ta person \n", "talk to a person"),
    ("talk\u00a0to", "talk to"),
    ("", ""),
    ("   ", ""),
])
def test_whitespace_is_trimmed_and_folded(text: str, expected: str) -> None:
    assert normalize(text) == expected


def test_different_words_stay_different() -> None:
    assert normalize("catalog") != normalize("catalogue")
    assert normalize("1") != normalize("2")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=30))
def test_normalize_is_idempotent_and_trimmed(text: str) -> None:
    once = normalize(text)
    assert normalize(once) == once
    assert once == once.strip()
    assert "  " not in once
