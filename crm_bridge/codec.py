"""How the embedded CRM and the outbox store values in Redis: msgpack documents and text replies.

One place knows that msgpack ships no type hints and that redis-py types replies as ``bytes | str``
(ours are bytes: no client of ours sets ``decode_responses``).

Contacts, leads and companies are stored *compact* (``pack_record``, issue 14): the bytes
``0xc1 'r'`` (``0xc1`` is never used by msgpack), then a msgpack map in which a key listed in
``_NAMES`` is written as its index, and a field whose value is its default (``_DEFAULTS``: an empty
name, no phone, no tags …) as the index's complement ``-1 - i`` with nil: two bytes instead of the
name and the value; a lead's default name ``Lead #<its id>`` is ``-1 - i`` with ``true``. The
map keeps the record's key order and the value's type, so a record reads back exactly as written.
``unpack`` reads both forms: records written plain before stay readable and are compacted by
their next write. ``_NAMES`` may only grow at its end.
"""

from __future__ import annotations

from typing import Any

import msgpack

COMPACT = b"\xc1r"
#: Record field names written as their index: append only (see the module docstring).
_NAMES: tuple[str, ...] = (
    "id", "name", "first_name", "phone", "email", "fields", "tags", "responsible", "price", "pipeline",
    "stage", "contacts", "company", "subscribers", "stage_since", "status", "temperature", "discount",
    "currency", "language", "unsubscribed", "created_at", "updated_at",
)
_INDEX = {name: i for i, name in enumerate(_NAMES)}
#: A field's default value (compared with its type: ``0.0`` is not the default ``0``); ``{}`` and
#: ``[]`` are read back as new objects.
_DEFAULTS: dict[str, Any] = {
    "name": "", "first_name": None, "phone": None, "email": None, "fields": {}, "tags": [], "responsible": None,
    "price": 0, "contacts": [], "company": None, "subscribers": [], "status": "potential", "temperature": None,
    "discount": 0, "currency": None, "language": None, "unsubscribed": False,
}
_DEFAULT_OF = {_INDEX[name]: value for name, value in _DEFAULTS.items()}
_NAME = _INDEX["name"]
_LEAD_NAME: Any = object()


def pack(value: object) -> bytes:
    """A record, note or queued command as a msgpack document."""
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


def _is_default(name: str, value: Any) -> bool:
    if name not in _DEFAULTS:
        return False
    default = _DEFAULTS[name]
    return type(value) is type(default) and value == default


def pack_record(record: dict[str, Any]) -> bytes:
    """A contact, lead or company record, compact (read back by ``unpack``)."""
    small: dict[Any, Any] = {}
    for key, value in record.items():
        i = _INDEX.get(key) if isinstance(key, str) else None
        if i is None:
            small[key] = value
        elif _is_default(key, value):
            small[-1 - i] = None
        elif i == _NAME and value == f"Lead #{record.get('id')}" and isinstance(record.get("id"), str):
            small[-1 - i] = True
        else:
            small[i] = value
    return COMPACT + pack(small)


def _grow(small: dict[Any, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in small.items():
        if type(key) is not int:
            out[key] = value
        elif key >= 0:
            out[_NAMES[key]] = value
        elif value is True:  # a lead's default name: its id may come later in the map
            out[_NAMES[-1 - key]] = _LEAD_NAME
        else:
            default = _DEFAULT_OF[-1 - key]
            out[_NAMES[-1 - key]] = type(default)() if isinstance(default, (dict, list)) else default
    if out.get("name") is _LEAD_NAME:
        out["name"] = f"Lead #{out.get('id')}"
    return out


def unpack(data: bytes | str) -> Any:
    """A msgpack document (or a compact record) as plain data (str keys and text, lists, numbers):
    parsed, so ``Any``.

    ``str`` is in the signature because redis-py types every reply so; it only comes from a client
    that decodes replies, which has already mangled the document.
    """
    if isinstance(data, str):
        raise TypeError("a msgpack document read as text: the Redis client must not decode responses")
    if data[:2] == COMPACT:
        return _grow(msgpack.unpackb(data[2:], raw=False, strict_map_key=False))
    return msgpack.unpackb(data, raw=False)


def text(reply: bytes | str) -> str:
    """A Redis reply as text (an id, a tag, a key)."""
    return reply.decode() if isinstance(reply, bytes) else reply
