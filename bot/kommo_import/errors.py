"""Errors that list several problems at once, each with its JSON pointer.

    SalesbotError
    └── KommoImportError       (result.py) a Kommo document, a flow or a map cannot be converted
        ├── KommoMapInvalid    the --map document has problems (every one listed)
        └── KommoExportRefused a flow uses what Kommo cannot express (every use listed)

``pointer`` and ``message`` are the first problem's, so a caller that handles one
``KommoImportError`` handles these too; ``problems`` holds them all.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Self

from bot.errors import Problem

from .result import KommoImportError


class _Problems(KommoImportError):
    def __init__(self, pointer: str, message: str, more: Sequence[Problem] = ()) -> None:
        super().__init__(pointer, message)
        self.problems = [Problem(pointer, message), *more]
        self.args = ("\n".join(str(p) for p in self.problems),)

    @classmethod
    def of(cls, problems: Sequence[Problem]) -> Self:
        """One error carrying every problem (at least one)."""
        first, *rest = problems
        return cls(first.pointer, first.message, rest)


class KommoMapInvalid(_Problems):
    """The map (``--map map.toml``) is malformed: an unknown table, a non-numeric id, an empty name."""


class KommoExportRefused(_Problems):
    """The flow uses something Kommo's Salesbot language has no way to say."""
