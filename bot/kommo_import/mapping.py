"""The ``--map map.toml`` model: which Kommo numeric id is which of our names.

Kommo's Salesbot code names custom fields, stages, pipelines and users by account-specific ids
(``{{lead.cf.4242}}``, ``change_status 142``); our flows name them (``lead.fields.budget``,
``stage: "won"``). The map says which is which, in four tables::

    [fields]
    "4242" = "participation"
    [stages]
    "142" = "won"
    [pipelines]
    "7001" = "Sales"
    [users]
    "9001" = "anna"

Import reads it id → name, export name → id. An id absent from the map stays a number on import
(a warning there) and a name absent from it cannot be exported (a refusal). Parsing TOML text is
pure (``tomllib``), so it lives here; reading the file is the CLI's job.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from bot.errors import Problem

from .errors import KommoMapInvalid

Table = Literal["fields", "stages", "pipelines", "users"]
TABLES: tuple[Table, ...] = ("fields", "stages", "pipelines", "users")
MAX_NAME = 128
_ID = re.compile(r"^[0-9]{1,19}$")


def _frozen(entries: Mapping[int, str] | None = None) -> Mapping[int, str]:
    return MappingProxyType(dict(entries or {}))


@dataclass(frozen=True, slots=True)
class KommoMap:
    """Kommo id → our name, per table. Many ids may share a name (import is then fine, export of
    that name is ambiguous and :meth:`kommo_id` says so)."""

    fields: Mapping[int, str] = field(default_factory=_frozen)
    stages: Mapping[int, str] = field(default_factory=_frozen)
    pipelines: Mapping[int, str] = field(default_factory=_frozen)
    users: Mapping[int, str] = field(default_factory=_frozen)

    def table(self, table: Table) -> Mapping[int, str]:
        found: Mapping[int, str] = getattr(self, table)
        return found

    def name(self, table: Table, kommo_id: int | str) -> str | None:
        """Our name of a Kommo id (an int or its digits), or None when the map does not know it."""
        key = _as_id(kommo_id)
        return None if key is None else self.table(table).get(key)

    def kommo_ids(self, table: Table, name: str) -> list[int]:
        """Every Kommo id mapped to ``name`` (exact match first, else case-insensitive), sorted."""
        entries = self.table(table)
        exact = sorted(k for k, v in entries.items() if v == name)
        return exact or sorted(k for k, v in entries.items() if v.casefold() == name.casefold())

    def kommo_id(self, table: Table, name: str) -> int | None:
        """The one Kommo id of ``name``; None when none or several are mapped to it."""
        found = self.kommo_ids(table, name)
        return found[0] if len(found) == 1 else None

    def is_empty(self) -> bool:
        return not any(self.table(t) for t in TABLES)


EMPTY = KommoMap()


def _as_id(value: int | str) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    return int(value) if _ID.match(value) else None


def from_document(doc: Mapping[str, object]) -> KommoMap:
    """A map from a parsed TOML (or JSON) document; every problem is reported at once with its pointer."""
    problems: list[Problem] = []
    tables: dict[str, dict[int, str]] = {t: {} for t in TABLES}
    for table, entries in doc.items():
        if table not in TABLES:
            problems.append(Problem(f"/{_escape(table)}", f'unknown table "{table}" (known: {", ".join(TABLES)})'))
            continue
        if not isinstance(entries, Mapping):
            problems.append(Problem(f"/{table}", f'"{table}" must be a table of "<kommo id>" = "<name>"'))
            continue
        for key, name in entries.items():
            pointer = f"/{table}/{_escape(str(key))}"
            kommo_id = _as_id(str(key))
            if kommo_id is None:
                problems.append(Problem(pointer, f'"{key}" is not a Kommo id: keys are numbers such as "4242"'))
            elif not isinstance(name, str) or not name.strip():
                problems.append(Problem(pointer, "the name must be a non-empty string"))
            elif len(name) > MAX_NAME:
                problems.append(Problem(pointer, f"the name is longer than {MAX_NAME} characters"))
            elif kommo_id in tables[table]:
                problems.append(Problem(pointer, f"Kommo id {kommo_id} is mapped twice"))
            else:
                tables[table][kommo_id] = name.strip()
    if problems:
        raise KommoMapInvalid.of(problems)
    return KommoMap(**{t: _frozen(v) for t, v in tables.items()})


def parse(text: str) -> KommoMap:
    """A map from the text of a map.toml."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise KommoMapInvalid("", f"not TOML: {exc}") from None
    return from_document(doc)


def dump(kommo_map: KommoMap, comments: Mapping[tuple[Table, int], str] | None = None,
         header: Iterable[str] = ()) -> str:
    """The TOML text of a map, ids in order; ``comments[(table, id)]`` is written after its entry
    (a draft says there what Kommo calls the thing), ``header`` lines at the top."""
    notes = comments or {}
    lines = [f"# {line}" if line else "#" for line in header]
    for table in TABLES:
        if lines:
            lines.append("")
        lines.append(f"[{table}]")
        for kommo_id, name in sorted(kommo_map.table(table).items()):
            entry = f'"{kommo_id}" = {_string(name)}'
            note = notes.get((table, kommo_id))
            lines.append(f"{entry}  # {_one_line(note)}" if note else entry)
    return "\n".join(lines) + "\n"


def _string(value: str) -> str:
    """A TOML basic string: JSON's escapes (\\", \\\\, \\n, \\uXXXX) are TOML's too."""
    return json.dumps(value, ensure_ascii=False)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")
