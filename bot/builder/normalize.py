"""Text normalisation for matching replies to buttons: case-, accent- and space-insensitive."""

from __future__ import annotations

import unicodedata
from functools import lru_cache

# Letters that NFKD does not decompose but customers type without the mark.
_FOLD = str.maketrans({"ı": "i", "ø": "o", "đ": "d", "ł": "l", "ß": "ss", "æ": "ae", "œ": "oe"})


@lru_cache(maxsize=4096)
def normalize(text: str) -> str:
    """``" Katalóg "`` -> ``"katalog"``: trimmed, casefolded, accents dropped, spaces folded."""
    # Compatibility forms first ("㎩" -> "Pa"), then case, then again for what casefold made.
    folded = unicodedata.normalize("NFKD", unicodedata.normalize("NFKD", text).casefold().translate(_FOLD))
    stripped = "".join(c for c in folded if not unicodedata.combining(c))
    return " ".join(stripped.split())
