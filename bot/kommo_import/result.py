"""What a conversion returns and raises: shared by import (convert_in) and export (convert_out)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ROOT, Problem, SalesbotError


class KommoImportError(SalesbotError):
    """The Kommo document cannot be converted: ``pointer`` is the JSON pointer of the culprit in the input."""

    def __init__(self, pointer: str, message: str) -> None:
        super().__init__(f"{pointer or ROOT}: {message}")
        self.pointer = pointer
        self.message = message


@dataclass(slots=True)
class Conversion:
    """A converted document with what the operator should review.

    ``warnings`` are ``Problem``s with severity "warning" whose pointer names the *input* document,
    so an operator can find the original handler. The three counters are over handlers: converted
    exactly, approximated (behaviour differs in a documented way) and kept as ``custom`` steps.
    """

    flow: dict[str, Any]
    warnings: list[Problem] = field(default_factory=list)
    converted: int = 0
    approximated: int = 0
    custom: int = 0

    def warn(self, pointer: str, message: str) -> None:
        self.warnings.append(Problem(pointer, message, "warning"))

    def summary(self) -> str:
        """The one line the CLI prints."""
        return (f"{self.converted} handler(s) converted, {self.approximated} approximated, "
                f"{self.custom} left as custom step(s), {len(self.warnings)} warning(s)")


def pointer_key(pointer: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key putting pointers in document order (``/2`` before ``/10``)."""
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in pointer.split("/"))


def pointer_join(pointer: str, *parts: str | int) -> str:
    """``pointer`` extended by ``parts``, escaped as RFC 6901 says (``~`` → ``~0``, ``/`` → ``~1``)."""
    for part in parts:
        pointer += "/" + str(part).replace("~", "~0").replace("/", "~1")
    return pointer


def map_texts(value: Any, pointer: str, text: Callable[[str, str], str]) -> Any:
    """``value`` (a scalar, list or object) with every text replaced by ``text(it, its pointer)``:
    import and export walk Kommo values the same way, each rewriting texts its own way."""
    if isinstance(value, str):
        return text(value, pointer)
    if isinstance(value, list):
        return [map_texts(v, pointer_join(pointer, i), text) for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        return {str(k): map_texts(v, pointer_join(pointer, str(k)), text) for k, v in value.items()}
    return value
