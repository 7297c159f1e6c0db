"""The shape of a Kommo Salesbot document, checked before conversion.

Kommo accepts an array of steps or an object keyed by step number (``"0"``, ``"1"``, …), with an
optional root ``error`` list and, in visual-builder exports, ``conversation`` and per-step
``block_uuid``. A whole export (``{"model": {"text": "<steps as a JSON string>", "name": …}}``) is
unwrapped too. Every structural mistake raises ``KommoImportError`` with the pointer of the culprit,
so the operator can fix the source rather than guess.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .result import KommoImportError, pointer_join

SECTIONS = ("question", "answer", "finish")
#: Every handler we know: the 15 documented ones, the widget SDK's and the visual builder's.
HANDLERS = frozenset({
    "show", "buttons", "action", "meta", "condition", "validations", "preset", "goto", "wait_answer", "find",
    "filter", "send_internal", "send_external_message", "widget_request", "stop",
    "conditions", "exits", "send_message", "waits", "trigger",
})
_STEP_KEYS = frozenset({*SECTIONS, "block_uuid"})
_ROOT_KEYS = frozenset({"error", "conversation"})

Handler = dict[str, Any]


@dataclass(frozen=True, slots=True)
class KommoStep:
    """One numbered step: its three handler lists (None when absent) and where it sits in the input."""

    number: int
    pointer: str
    question: list[Handler] | None
    answer: list[Handler] | None
    finish: list[Handler] | None

    def section(self, kind: str) -> list[Handler] | None:
        found: list[Handler] | None = getattr(self, kind)
        return found


@dataclass(frozen=True, slots=True)
class KommoBot:
    """A checked Salesbot document: steps by number, in order, and the root ``error`` handlers."""

    steps: dict[int, KommoStep]
    error: list[Handler] | None
    error_pointer: str
    name: str | None

    def after(self, number: int) -> int | None:
        """The number of the step that follows ``number`` in the document, if any."""
        later = [n for n in self.steps if n > number]
        return min(later) if later else None


def parse(doc: Any) -> KommoBot:
    """A ``KommoBot`` from a parsed JSON document, or ``KommoImportError`` naming the first mistake."""
    base, name = "", None
    if isinstance(doc, Mapping) and isinstance(doc.get("model"), Mapping):  # a whole export
        model = doc["model"]
        base = "/model/text"
        name = model.get("name") if isinstance(model.get("name"), str) else None
        text = model.get("text")
        if not isinstance(text, str):
            raise KommoImportError(base, "an export's model.text must be the bot's steps as a JSON string")
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise KommoImportError(base, f"model.text is not JSON: {exc}") from None
    steps: dict[int, KommoStep] = {}
    error: list[Handler] | None = None
    if isinstance(doc, list):
        items: list[tuple[str, Any]] = [(str(i), step) for i, step in enumerate(doc)]
    elif isinstance(doc, Mapping):
        items = []
        for key, value in doc.items():
            if key in _ROOT_KEYS:
                continue
            if not (isinstance(key, str) and key.isdigit()):
                raise KommoImportError(pointer_join(base, key),
                                       f'"{key}" is not a step number (steps are "0", "1", …; '
                                       f'other root keys: {", ".join(sorted(_ROOT_KEYS))})')
            items.append((key, value))
        if "error" in doc:
            error = _handlers(doc["error"], pointer_join(base, "error"))
    else:
        raise KommoImportError(base, "a Salesbot document is an array of steps or an object keyed by step number")
    for key, step in items:
        pointer = pointer_join(base, key)
        steps[int(key)] = _step(int(key), step, pointer)
    if not steps:
        raise KommoImportError(base, "the bot has no steps")
    return KommoBot(dict(sorted(steps.items())), error, pointer_join(base, "error"), name)


def _step(number: int, step: Any, pointer: str) -> KommoStep:
    if not isinstance(step, Mapping):
        raise KommoImportError(pointer, "a step is an object with question, answer and finish handler lists")
    for key in step:
        if key not in _STEP_KEYS:
            raise KommoImportError(pointer_join(pointer, key),
                                   f'unknown step key "{key}" (a step has {", ".join(SECTIONS)})')
    lists = {kind: _handlers(step[kind], pointer_join(pointer, kind)) if kind in step else None
             for kind in SECTIONS}
    return KommoStep(number, pointer, lists["question"], lists["answer"], lists["finish"])


def _handlers(value: Any, pointer: str) -> list[Handler]:
    if not isinstance(value, list):
        raise KommoImportError(pointer, "must be a list of handlers")
    for i, h in enumerate(value):
        check_handler(h, pointer_join(pointer, i))
    return value


def check_handler(h: Any, pointer: str) -> None:
    """``h`` is ``{"handler": <known name>, "params": …}``."""
    if not isinstance(h, Mapping):
        raise KommoImportError(pointer, 'a handler is an object {"handler": …, "params": …}')
    name = h.get("handler")
    if not isinstance(name, str):
        raise KommoImportError(pointer_join(pointer, "handler"), "the handler's name must be a string")
    if name not in HANDLERS:
        raise KommoImportError(pointer_join(pointer, "handler"), f'unknown handler "{name}"')
    extra = set(h) - {"handler", "params"}
    if extra:
        raise KommoImportError(pointer_join(pointer, min(extra)), "a handler has only handler and params")
