"""The flow under construction during an import: steps, fresh ids, texts, counters and warnings.

Shared by the control-flow conversion (convert_in.py) and the handlers that map one to one
(actions_in.py, presets_in.py), so none of them needs the others.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .mapping import KommoMap, Table
from .placeholders import FieldNames, to_template
from .result import Conversion, KommoImportError, map_texts, pointer_join, pointer_key

Step = dict[str, Any]
END = "end"  # the shared stop step, for branches that must name a step


@dataclass(frozen=True, slots=True)
class Cont:
    """Where the bot goes after a handler: a step id (None: the run ends), after waiting for a reply or not."""

    target: str | None
    wait: bool = False


class Builder:
    """Our steps by id plus the bookkeeping of one import."""

    def __init__(self, kommo_map: KommoMap, result: Conversion) -> None:
        self.map = kommo_map
        self.result = result
        self.fields = FieldNames(kommo_map.fields)
        self.steps: dict[str, Step] = {}
        self.origin: dict[str, str] = {}  # our step id → pointer of the Kommo handler it came from
        self._reserved: set[str] = set()
        self._states: list[str] = []  # one per handler being converted (they nest): converted|approximated|custom
        self._unmapped: dict[tuple[str, int], str] = {}
        self._field_uses: dict[int, str] = {}  # Kommo field id without a name → pointer of its first use

    # ---------------------------------------------------------------- ids and steps
    def reserve(self, sid: str) -> str:
        self._reserved.add(sid)
        return sid

    def new_id(self, base: str) -> str:
        n = 1
        while f"{base}_{n}" in self._reserved:
            n += 1
        return self.reserve(f"{base}_{n}")

    def add(self, sid: str, step: Step, pointer: str) -> str:
        self._reserved.add(sid)
        self.steps[sid] = {k: v for k, v in step.items() if v is not None}
        self.origin[sid] = pointer
        return sid

    def target(self, cont: Cont) -> str | None:
        """The step id to name as a successor: a wait becomes a pause step (one per target)."""
        if not cont.wait:
            return cont.target
        assert cont.target is not None
        sid = f"wait_{cont.target}"
        if sid not in self.steps:
            self.add(sid, {"type": "pause", "until": [{"on": "message", "next": cont.target}]},
                     self.origin.get(cont.target, ""))
        return sid

    def required(self, cont: Cont) -> str:
        """Like ``target`` but never None: the end of the run is the shared stop step."""
        found = self.target(cont)
        if found is None:
            if END not in self.steps:
                self.add(END, {"type": "stop"}, "")
            return END
        return found

    def ensure(self, sid: str, cont: Cont, pointer: str) -> None:
        """A step named ``sid`` that leads where ``cont`` says (a chain that made no step of its own)."""
        if sid in self.steps:
            return
        if cont.wait:
            self.add(sid, {"type": "pause", "until": [{"on": "message", "next": cont.target}]}, pointer)
        elif cont.target is None:
            self.add(sid, {"type": "stop"}, pointer)
        else:
            self.add(sid, {"type": "goto", "step": cont.target}, pointer)

    # ---------------------------------------------------------------- counting and warnings
    def begin(self) -> None:
        """A handler's conversion starts (``count`` ends it); handlers nest in branches."""
        self._states.append("converted")

    def approximate(self, pointer: str, message: str) -> None:
        if self._states and self._states[-1] == "converted":
            self._states[-1] = "approximated"
        self.result.warn(pointer, message)

    def count(self) -> None:
        state = self._states.pop()
        if state == "approximated":
            self.result.approximated += 1
        elif state == "converted":
            self.result.converted += 1

    def custom(self, sid: str, h: Mapping[str, Any], pointer: str, cont: Cont, why: str, kind: str) -> Cont:
        """A ``custom`` step carrying the original handler, and a warning naming it."""
        handler = f"kommo.{kind}"
        self.add(sid, {"type": "custom", "handler": handler, "params": {"kommo": wrap_original(h)},
                       "next": self.target(cont)}, pointer)
        self.result.warn(pointer, f"{why}: kept as a custom step ({handler}) with the original handler")
        self.result.custom += 1
        if self._states:
            self._states[-1] = "custom"
        return Cont(sid)

    # ---------------------------------------------------------------- values
    def text(self, value: Any, pointer: str) -> str:
        """Kommo text → our template; approximations and unknown placeholders are warned about."""
        if not isinstance(value, str):
            raise KommoImportError(pointer, "must be text")
        before = set(self.fields.unmapped)
        rewritten = to_template(value, self.fields)
        for kommo_id in self.fields.unmapped - before:
            self._first_use(kommo_id, pointer)
        for note in rewritten.approximations:
            self.approximate(pointer, note)
        for note in rewritten.unknown:
            self.approximate(pointer, note)
        return rewritten.text

    def value(self, value: Any, pointer: str) -> Any:
        """A scalar, list or object of Kommo values with every text rewritten."""
        return map_texts(value, pointer, self.text)

    def named(self, table: Table, raw: Any, pointer: str) -> str | int:
        """Our name for a Kommo id (stage, pipeline, user); an unmapped id stays a number, said once."""
        kommo_id = as_int(raw, pointer)
        name = self.map.name(table, kommo_id)
        if name is not None:
            return name
        known = self._unmapped.get((table, kommo_id))
        if known is None or pointer_key(pointer) < pointer_key(known):
            self._unmapped[(table, kommo_id)] = pointer
        return kommo_id

    def field(self, raw: Any, pointer: str) -> str:
        kommo_id = as_int(raw, pointer)
        name = self.fields.name(kommo_id)
        if kommo_id in self.fields.unmapped:
            self._first_use(kommo_id, pointer)
        return name

    def _first_use(self, kommo_id: int, pointer: str) -> None:
        known = self._field_uses.get(kommo_id)
        if known is None or pointer_key(pointer) < pointer_key(known):
            self._field_uses[kommo_id] = pointer

    def finish(self) -> None:
        """One warning per Kommo id without a name in the map, at its first use; warnings in document order."""
        for (table, kommo_id), pointer in self._unmapped.items():
            self.result.warn(pointer, f"Kommo id {kommo_id} is not in the map's [{table}]: the flow names it by "
                                      f"number (add it to map.toml and import again to use our name)")
        for kommo_id in sorted(self.fields.unmapped):
            self.result.warn(self._field_uses.get(kommo_id, ""), f"Kommo field {kommo_id} is not in the map's "
                                                                  f"[fields]: the flow calls it cf_{kommo_id}")
        self.result.warnings.sort(key=lambda w: pointer_key(w.pointer))


def as_int(raw: Any, pointer: str) -> int:
    """A Kommo id given as a number or as digits."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().isdigit():
        return int(raw.strip())
    raise KommoImportError(pointer, f"must be a Kommo id (a number), not {json.dumps(raw, ensure_ascii=False)}")


def params_of(h: Mapping[str, Any], pointer: str, kind: type = dict) -> Any:
    """The handler's params, checked to be an object (or the given type)."""
    p = h.get("params")
    if not isinstance(p, kind):
        what = "an object" if kind is dict else "a list"
        raise KommoImportError(pointer_join(pointer, "params"), f"{h.get('handler')}: params must be {what}")
    return p


_RAW_OPEN, _RAW_CLOSE = "{% raw %}", "{% endraw %}"


def wrap_original(h: Mapping[str, Any]) -> str:
    """The original handler as JSON text, kept out of template rendering (``{% raw %}``)."""
    return _RAW_OPEN + json.dumps(h, ensure_ascii=False, sort_keys=True) + _RAW_CLOSE


def unwrap_original(text: str) -> Any:
    """The handler ``wrap_original`` stored (export turns a custom step back into it)."""
    if not (text.startswith(_RAW_OPEN) and text.endswith(_RAW_CLOSE)):
        raise ValueError("not an imported Kommo handler")
    return json.loads(text[len(_RAW_OPEN):-len(_RAW_CLOSE)])
