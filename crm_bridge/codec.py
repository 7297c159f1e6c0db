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

Smaller still, the *shaped* form (``0xc1 'R'``, issue 14 aim 3): most records have the keys, in
the order, that one of ``SHAPES`` lists (a contact, a lead, a company as they are built), each at
a value implied by the record's id or by the field's default. Such a record is written as one
msgpack integer, ``absent << 4 | shape`` (``absent``: a bit for each of the shape's keys the
record lacks), then, only when not empty, a map of what is not implied: the shape's keys at
another value (as their ``_NAMES`` index), then the record's other keys as in the compact form
(read back after the shape's, in their order). Implied: the id when it is the field it is stored
under (``pack_record``'s ``rid``: the reader, ``unpack_record``, knows it), a field's default, a
lead's name ``Lead #<id>`` and its contacts ``[<id - 1>]`` (the contact made with it takes the
id before). A live chat contact is 3 bytes, an unnamed lead about 30 where they were 22 and 45. A
record whose keys fit no shape is written in the compact form. ``SHAPES`` may only grow at its
end (16 at most).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack

COMPACT = b"\xc1r"
SHAPED = b"\xc1R"
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
_NAME = _INDEX["name"]
_LEAD_NAME: Any = object()


def pack(value: object) -> bytes:
    """A record, note or queued command as a msgpack document."""
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


def _default(name: str) -> Any:
    """The field's default as a record holds it: ``{}`` and ``[]`` new each time."""
    default = _DEFAULTS[name]
    return type(default)() if isinstance(default, (dict, list)) else default


def _is_default(name: str, value: Any) -> bool:
    if name not in _DEFAULTS:
        return False
    default = _DEFAULTS[name]
    return type(value) is type(default) and value == default


def pack_record(record: dict[str, Any], rid: str | None = None) -> bytes:
    """A contact, lead or company record, shaped when its keys fit a shape (else compact); ``rid``:
    the id it is stored under (its bucket's field, its key's), which is then not written when it
    is the record's ``id``. Read back by ``unpack_record`` (``unpack`` when no ``rid`` is given)."""
    shaped = [found for s in range(len(SHAPES)) if (found := _shaped(record, rid, s)) is not None]
    if shaped:
        return min(shaped, key=len)
    return _compact(record)


def _compact(record: dict[str, Any]) -> bytes:
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


#: The records' usual keys in their usual order (append only: a shape's number is in the bytes).
SHAPES: tuple[tuple[str, ...], ...] = (
    # a contact (MemoryCrm.create_contact)
    ("id", "name", "first_name", "phone", "email", "fields", "tags", "responsible"),
    # a lead (MemoryCrm.create_lead, then indexes.stamp_stage)
    ("id", "name", "price", "pipeline", "stage", "responsible", "fields", "tags", "contacts", "company",
     "subscribers", "stage_since"),
    # a company (MemoryCrm's company command)
    ("id", "name", "fields", "tags", "responsible"),
)
_RANKS = tuple({name: j for j, name in enumerate(shape)} for shape in SHAPES)
_NONE: Any = object()


def _lead_name(rid: Any) -> Any:
    return f"Lead #{rid}" if type(rid) is str else _NONE


def _previous(rid: Any) -> Any:
    """The contact made with a lead took the id before the lead's."""
    if type(rid) is str and rid.isascii() and rid.isdigit() and rid[0] != "0":
        return [str(int(rid) - 1)]
    return _NONE


#: Values a shape's key takes from the record's id, by (shape, key); other keys: their default.
_DERIVED: dict[tuple[int, str], Callable[[Any], Any]] = {(1, "name"): _lead_name, (1, "contacts"): _previous}


def _implied(s: int, name: str, rid: str | None, record_id: Any) -> Any:
    """The value the shape ``s`` implies for ``name`` (``_NONE``: none); ``{}`` and ``[]`` new."""
    if name == "id":
        return _NONE if rid is None else rid
    derive = _DERIVED.get((s, name))
    if derive is not None:
        return derive(record_id)
    return _default(name) if name in _DEFAULTS else _NONE


def _shaped(record: dict[str, Any], rid: str | None, s: int) -> bytes | None:
    """The record in the shape ``s`` (None: its keys do not fit: a key of the shape after one
    that is not, or out of the shape's order)."""
    rank, last, other = _RANKS[s], -1, False
    for key in record:
        if not isinstance(key, str):
            return None
        j = rank.get(key)
        if j is None:
            other = True
        elif other or j < last:
            return None
        else:
            last = j
    record_id, absent = record.get("id"), 0
    small: dict[Any, Any] = {}
    for j, name in enumerate(SHAPES[s]):
        if name not in record:
            absent |= 1 << j
            continue
        value, implied = record[name], _implied(s, name, rid, record_id)
        if implied is _NONE or type(value) is not type(implied) or value != implied:
            small[_INDEX[name]] = value
    for key, value in record.items():  # the other keys, as in the compact form (no lead name there)
        i = _INDEX.get(key)
        if key in rank:
            continue
        if i is None:
            small[key] = value
        elif _is_default(key, value):
            small[-1 - i] = None
        else:
            small[i] = value
    return SHAPED + pack(absent << 4 | s) + (pack(small) if small else b"")


#: The bytes after a msgpack integer's first byte, by that byte (a positive fixint: none).
_INT_BYTES = {0xcc: 1, 0xcd: 2, 0xce: 4, 0xcf: 8}


def _grow_shaped(data: bytes, rid: str | None) -> dict[str, Any]:
    first = data[2]
    size = 0 if first < 0x80 else _INT_BYTES[first]
    head = first if size == 0 else int.from_bytes(data[3:3 + size], "big")
    rest = data[3 + size:]
    small: dict[Any, Any] = msgpack.unpackb(rest, raw=False, strict_map_key=False) if rest else {}
    s, absent = head & 15, head >> 4
    shape, rank = SHAPES[s], _RANKS[s]
    given = {_NAMES[k]: v for k, v in small.items() if type(k) is int and k >= 0 and _NAMES[k] in rank}
    out: dict[str, Any] = {}
    for j, name in enumerate(shape):
        if absent >> j & 1:
            continue
        if name in given:
            out[name] = given[name]
            continue
        value = _implied(s, name, rid, out.get("id"))
        if value is _NONE:
            raise ValueError("a shaped record without its id: read it with unpack_record, given its id")
        out[name] = value
    for key, value in small.items():
        if type(key) is not int:
            out[key] = value
        elif key < 0:
            out[_NAMES[-1 - key]] = _default(_NAMES[-1 - key])
        elif _NAMES[key] not in rank:
            out[_NAMES[key]] = value
    return out


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
            out[_NAMES[-1 - key]] = _default(_NAMES[-1 - key])
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
    if data[:2] == SHAPED:
        return _grow_shaped(data, None)
    return msgpack.unpackb(data, raw=False)


def unpack_record(data: bytes | str, rid: str) -> dict[str, Any]:
    """A record stored under the id ``rid`` (its bucket's field, its key's), whichever its form."""
    if isinstance(data, bytes) and data[:2] == SHAPED:
        return _grow_shaped(data, rid)
    record: dict[str, Any] = unpack(data)
    return record


def text(reply: bytes | str) -> str:
    """A Redis reply as text (an id, a tag, a key)."""
    return reply.decode() if isinstance(reply, bytes) else reply
