"""The quick-order page's words in the languages a small shop's customers write in (en, tr, de, es,
fr, ru; ``orderpage_text.json``: a language is one block there); any other language reads
English. ``{discount}`` and ``{number}`` are filled in."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

#: The data file: language -> message id -> text.
SOURCE = Path(__file__).with_name("orderpage_text.json")


def load(path: Path = SOURCE) -> dict[str, dict[str, str]]:
    """The texts of every language; refused (at start) when a language lacks one of English's
    messages or has one English lacks, so no page shows a missing word."""
    found: dict[str, dict[str, str]] = json.loads(path.read_text(encoding="utf-8"))
    wanted = set(found["en"])
    for lang, texts in found.items():
        if set(texts) != wanted:
            raise ValueError(f"{path.name}: {lang} has not the messages en has: "
                             f"{sorted(wanted ^ set(texts))}")
    return found


TEXT: Mapping[str, Mapping[str, str]] = load()


def language_of(tag: str | None) -> str:
    """The page's language for a BCP 47 tag (``tr-TR`` → ``tr``); English when it has none."""
    primary = (tag or "").split("-")[0].split("_")[0].strip().lower()
    return primary if primary in TEXT else "en"


def accepted_language(header: str | None) -> str:
    """The first language of an ``Accept-Language`` header that the page has (for the pages of
    a bad link, which names no customer)."""
    for part in (header or "")[:500].split(","):
        found = language_of(part.split(";")[0])
        if found != "en" or part.strip().lower().startswith("en"):
            return found
    return "en"
