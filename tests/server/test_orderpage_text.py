"""The order page's words (``bot/server/orderpage_text.json``): every language has every message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.server.orderpage_text import SOURCE, TEXT, load


def test_every_language_has_every_message_of_english() -> None:
    assert sorted(TEXT) == ["de", "en", "es", "fr", "ru", "tr"]
    assert all(set(texts) == set(TEXT["en"]) for texts in TEXT.values())
    assert TEXT["tr"]["placed"].format(number=7) == "Siparişiniz alındı. Sipariş numaranız: 7."


def test_a_language_missing_a_message_is_refused_at_load(tmp_path: Path) -> None:
    texts = json.loads(SOURCE.read_text(encoding="utf-8"))
    del texts["de"]["busy"]
    broken = tmp_path / "texts.json"
    broken.write_text(json.dumps(texts), encoding="utf-8")
    with pytest.raises(ValueError, match="de has not the messages en has: \\['busy'\\]"):
        load(broken)
