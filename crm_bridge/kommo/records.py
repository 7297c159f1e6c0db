"""Kommo's JSON records and ours: ids, names, dates, custom-field values, and the snapshot's views.

Pure functions, no I/O: how a value is written to or read from Kommo does not depend on how the
request travels or which command asked for it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime
from typing import Any

from bot.errors import CrmRejected

#: One record (or item) of Kommo's API: parsed JSON.
Record = dict[str, Any]
#: The snapshot's standard fields of each collection: not custom fields.
STANDARD = {"leads": {"name", "price"}, "contacts": {"name", "first_name", "last_name", "phone", "email"},
            "companies": {"name"}}
#: Standard contact fields that Kommo keeps as multitext custom fields with a code.
MULTITEXT_CODES = {"phone": "PHONE", "email": "EMAIL"}
_ENUM_TYPES = frozenset({"select", "radiobutton", "category"})
_DATE_TYPES = frozenset({"date", "date_time", "birthday"})
_NUMBER_TYPES = frozenset({"numeric", "price", "monetary"})


def int_id(value: object) -> int | None:
    """An id given as an int or a string of digits; None for anything else (a name)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*\d+\s*", value):
        return int(value)
    return None


def fold(value: object) -> str:
    """The form names are compared in: trimmed, case-folded."""
    return str(value).strip().casefold()


def epoch(value: object) -> int | None:
    """An ISO date/time (or epoch) as Unix seconds; naive times are UTC."""
    if value in (None, ""):
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, date):
        dt = datetime(value.year, value.month, value.day, tzinfo=UTC)
    else:
        text = str(value).strip()
        if re.fullmatch(r"\d+", text):
            return int(text)
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp())


def slug(value: object) -> str:
    """``call_back`` for "Call back": how flows written for the embedded CRM name fields."""
    return re.sub(r"[^0-9a-z]+", "_", fold(value)).strip("_")


def digits(phone: object) -> str:
    return re.sub(r"\D", "", str(phone or ""))


def str_id(value: object) -> str | None:
    """An id as our snapshots show it; None for Kommo's "nobody" (0 or empty)."""
    return None if value in (None, 0, "") else str(value)


# ---------------------------------------------------------------------- custom field values
def encode_values(field: Mapping[str, Any], value: Any) -> list[Record] | None:
    """The ``values`` of one ``custom_fields_values`` item for ``value`` (None clears the field)."""
    kind = field.get("type")
    if value is None or value == "" or value == []:
        return None
    enums = field.get("enums") or []

    def enum_of(v: object) -> Record:
        for e in enums:
            if fold(e.get("value")) == fold(v) or (int_id(v) is not None and e["id"] == int_id(v)):
                return {"enum_id": e["id"]}
        choices = ", ".join(str(e.get("value")) for e in enums)
        raise CrmRejected(f'kommo: "{v}" is not a choice of "{field.get("name")}" ({choices})')

    if kind in _ENUM_TYPES:
        return [enum_of(value)]
    if kind == "multiselect":
        items = value if isinstance(value, (list, tuple)) else [v for v in str(value).split(",") if v.strip()]
        return [enum_of(v) for v in items]
    if kind == "checkbox":
        flag = value if isinstance(value, bool) else fold(value) in ("1", "true", "yes", "on", "y")
        return [{"value": flag}]
    if kind in _NUMBER_TYPES:
        try:
            number = float(value)
            return [{"value": int(number) if number.is_integer() else number}]
        except (TypeError, ValueError):
            return [{"value": value}]  # Kommo's own validation error says what is wrong
    if kind in _DATE_TYPES:
        stamp = epoch(value)
        return [{"value": stamp if stamp is not None else value}]
    if kind == "multitext":
        return [{"value": str(value), "enum_code": "WORK"}]
    return [{"value": str(value)}]


def decode_values(item: Mapping[str, Any]) -> Any:
    """The value of one ``custom_fields_values`` item: a list for a multiselect, else its first value."""
    values = item.get("values") or []
    if item.get("field_type") == "multiselect":
        return [v.get("value") for v in values]
    if not values:
        return None
    first = values[0]
    value = first.get("value") if isinstance(first, Mapping) else first
    if item.get("field_type") == "checkbox":
        return bool(value)
    return value


def written_value(field: Mapping[str, Any], values: list[Record] | None) -> Any:
    """What ``decode_values`` will read back from a record after ``encode_values(field, …)`` was
    written (an enum id as its choice's name): the ``to`` of our own field change's event."""
    names = {e.get("id"): e.get("value") for e in field.get("enums") or []}
    shown = [{"value": names.get(v["enum_id"])} if v.get("enum_id") else v for v in values or []]
    return decode_values({"field_type": field.get("type"), "values": shown})


def field_of(record: Mapping[str, Any], field_id: object) -> Any:
    """The decoded value of a record's custom field (None when it has none)."""
    for item in record.get("custom_fields_values") or []:
        if item.get("field_id") == field_id:
            return decode_values(item)
    return None


def same_value(a: Any, b: Any) -> bool:
    """Whether two field values are equal as Kommo shows them (it returns numbers as text)."""
    def norm(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [norm(x) for x in v]
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        return None if v in (None, "") else str(v)
    return bool(norm(a) == norm(b))


def field_change(before: Mapping[str, Any], field: Record | None,
                 body: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``lead.field_changed`` data of a lead write (``body``) over the lead as it was, or None
    when nothing changes. A custom field is named as rules write it: ``budget`` for "Budget"."""
    if field is None:
        key = next(iter(body))  # name or price: the lead's own fields
        name, old, new = f"lead.{key}", before.get(key), body[key]
    else:
        name = slug(field.get("name")) or str(field.get("id"))
        old = field_of(before, field["id"])
        new = written_value(field, body["custom_fields_values"][0]["values"])
    if same_value(old, new):
        return None
    return {"field": name, "from": old, "to": new}


def custom_fields(record: Mapping[str, Any], identity_field: str | None, *,
                  skip_codes: Iterable[str] = ()) -> tuple[Record, Record]:
    """(by name, by id) of a record's custom fields; the identity field is not shown by name."""
    by_name: Record = {}
    by_id: Record = {}
    skip = set(skip_codes)
    for item in record.get("custom_fields_values") or []:
        value = decode_values(item)
        by_id[str(item.get("field_id"))] = value
        if item.get("field_code") not in skip and item.get("field_name") != identity_field:
            by_name[str(item.get("field_name"))] = value
    for name, value in list(by_name.items()):  # "Call back" is also call_back (unless taken)
        by_name.setdefault(slug(name) or name, value)
    return by_name, by_id


def multitext(record: Mapping[str, Any], code: str) -> list[str]:
    """The values of the multitext field with this code (``PHONE``, ``EMAIL``)."""
    for item in record.get("custom_fields_values") or []:
        if item.get("field_code") == code:
            return [str(v.get("value")) for v in item.get("values") or [] if v.get("value")]
    return []


def tags(record: Mapping[str, Any]) -> list[str]:
    return [str(t.get("name")) for t in (record.get("_embedded") or {}).get("tags") or []]


# ---------------------------------------------------------------------- snapshot views
def lead_view(lead: Mapping[str, Any], pipeline: str | None, stage: str | None,
              identity_field: str | None) -> Record:
    """A lead as templates see it; ``pipeline``/``stage`` are the names of its ids."""
    fields, cf = custom_fields(lead, identity_field)
    return {
        "id": str(lead["id"]), "name": lead.get("name") or "", "price": lead.get("price") or 0,
        "pipeline": pipeline, "stage": stage, "responsible": str_id(lead.get("responsible_user_id")),
        "fields": fields, "cf": cf, "tags": tags(lead),
        "pipeline_id": lead.get("pipeline_id"), "status_id": lead.get("status_id"),
    }


def contact_view(contact: Mapping[str, Any], identity_field: str | None) -> Record:
    if not contact:
        return {}
    fields, cf = custom_fields(contact, identity_field, skip_codes=("PHONE", "EMAIL"))
    phones, emails = multitext(contact, "PHONE"), multitext(contact, "EMAIL")
    name = contact.get("name") or ""
    return {
        "id": str(contact["id"]), "name": name,
        "first_name": contact.get("first_name") or (name.split()[0] if name else None),
        "last_name": contact.get("last_name") or None,
        "phone": phones[0] if phones else None, "email": emails[0] if emails else None,
        "phones": phones, "emails": emails, "fields": fields, "cf": cf, "tags": tags(contact),
        "responsible": str_id(contact.get("responsible_user_id")),
    }


def company_view(company: Mapping[str, Any], identity_field: str | None) -> Record:
    fields, cf = custom_fields(company, identity_field, skip_codes=("PHONE", "EMAIL"))
    return {"id": str(company["id"]), "name": company.get("name") or "", "fields": fields, "cf": cf,
            "tags": tags(company), "responsible": str_id(company.get("responsible_user_id"))}
