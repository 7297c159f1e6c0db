"""A first map (``map.toml``) drafted from what a Kommo account defines, for the operator to review.

Names are what our flows use against the Kommo backend (crm_bridge/kommo/account.py resolves
them): a field by its slug (``call_back`` for "Call back", as ``lead.fields.call_back``), or its
name when the slug is empty (a name in another script); pipelines and stages by name; users by
e-mail (it fits ``user:<who>`` of internal messages), else by name. Each entry carries a comment
with what Kommo calls it. Pure: the CLI reads the account and passes the records in.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from .mapping import KommoMap, Table

Record = Mapping[str, Any]
#: Kommo's "Incoming leads" stage type: no bot moves a lead there.
INCOMING = 1
ENTITIES = {"leads": "lead", "contacts": "contact", "companies": "company"}


def slug(name: object) -> str:
    """``call_back`` for "Call back" (the same rule as crm_bridge.kommo.records.slug)."""
    return re.sub(r"[^0-9a-z]+", "_", str(name).strip().casefold()).strip("_")


def draft(fields: Mapping[str, Sequence[Record]], pipelines: Sequence[Record],
          users: Sequence[Record]) -> tuple[KommoMap, dict[tuple[Table, int], str]]:
    """The map and its comments from the custom fields per entity, the pipelines (with their
    ``_embedded.statuses``) and the users of an account."""
    tables: dict[Table, dict[int, str]] = {"fields": {}, "stages": {}, "pipelines": {}, "users": {}}
    notes: dict[tuple[Table, int], str] = {}

    def put(table: Table, kommo_id: object, name: object, note: str) -> None:
        if isinstance(kommo_id, int) and not isinstance(kommo_id, bool) and str(name or "").strip() \
                and kommo_id not in tables[table]:
            tables[table][kommo_id] = str(name).strip()
            notes[(table, kommo_id)] = note

    for entity, one in ENTITIES.items():
        for f in fields.get(entity, ()):
            name = str(f.get("name") or "")
            put("fields", f.get("id"), slug(name) or name, f'{one} field "{name}" ({f.get("type") or "?"})')
    for p in pipelines:
        put("pipelines", p.get("id"), p.get("name"), f'pipeline "{p.get("name")}"')
        for s in (p.get("_embedded") or {}).get("statuses") or []:
            if s.get("type", 0) != INCOMING:
                put("stages", s.get("id"), s.get("name"), f'stage "{s.get("name")}" of pipeline "{p.get("name")}"')
    for u in users:
        put("users", u.get("id"), u.get("email") or u.get("name"), f'user "{u.get("name")}"')
    kommo_map = KommoMap(**{table: MappingProxyType(entries) for table, entries in tables.items()})
    return kommo_map, notes
