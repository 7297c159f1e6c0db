"""Errors of the Kommo conversion: each names the JSON pointer of what is wrong.

    SalesbotError
    └── KommoImportError       a Kommo document, a flow or a map cannot be converted
        ├── KommoMapInvalid    the --map document has problems (every one listed)
        └── KommoExportRefused a flow uses what Kommo cannot express (every use listed)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Self

from bot.errors import Problem, SalesbotError


class KommoImportError(SalesbotError):
    """A conversion failed at ``pointer``; ``problems`` holds it and any others found with it."""

    def __init__(self, pointer: str, message: str, more: Sequence[Problem] = ()) -> None:
        self.pointer = pointer
        self.message = message
        self.problems = [Problem(pointer, message), *more]
        super().__init__("\n".join(str(p) for p in self.problems))

    @classmethod
    def of(cls, problems: Sequence[Problem]) -> Self:
        """One error carrying every problem (at least one)."""
        first, *rest = problems
        return cls(first.pointer, first.message, rest)


class KommoMapInvalid(KommoImportError):
    """The map (``--map map.toml``) is malformed: an unknown table, a non-numeric id, an empty name."""


class KommoExportRefused(KommoImportError):
    """The flow uses something Kommo's Salesbot language has no way to say."""
