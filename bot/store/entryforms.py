"""Transcript entries in *forms* (issue 14 aim 3): the store's smallest way to write an entry.

The common entries' keys come in a few fixed orders (the customer's message, the bot's, a CRM
event …), most with the same few values at some keys (role "user", kind "text" …): ``FORMS``.
Such an entry is written (``bot/store/codec.py``) as ``0xc1``, its form's number (1 to 31: bytes
no other compact kind uses) and the items of a msgpack array of its values in order (the array's
header is the form's, ``HEADS``), no keys, without the values its form fixes; the values its keys'
ways name (``_ways``) are smaller, each by its key's way. A way raises ``Unfit`` for a value it
could not write so that it reads back exactly as written (same type, floats bit for bit): the
entry is then written as a compact map. ``FORMS``, ``TOKENS`` and ``DATA_NAMES``: append only (a
number, once written, names its form, value or key for ever). Pure: no I/O, no msgpack (the
codec packs and unpacks the arrays).
"""

from __future__ import annotations

import base64
import re
import zlib
from typing import Any

#: Values written as a token, in their place, in forms and compact maps: a negative number from
#: -1 to -32 (one byte) stands for the value ``TOKENS`` gives it (the compact map's -32: the step
#: its ``ref`` names). An entry that holds such a number there itself is written otherwise.
TOKENS = {-1 - i: value for i, value in enumerate((
    "user", "bot", "event", "system", "human", "text", "message", "crm", "lead.created", "contact.created",
    "lead.stage_changed", "lead.field_changed"))}
TOKEN_OF = {value: token for token, value in TOKENS.items()}


class Unfit(Exception):
    """A value a form's way cannot write so that it reads back as it is."""


def hex_id(value: str) -> bytes | None:
    """The bytes of lower-case hex digits (None: not such digits): a 32-digit id's 16, a button
    payload's 8-digit head's 4."""
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        return None
    return raw if raw.hex() == value else None


def ref_step(ref: str) -> str | None:
    """The step a message's ref ``<run>:<step>:m<n>`` names (None: not of that form)."""
    parts = ref.split(":")
    return parts[1] if len(parts) == 3 else None


#: The forms, numbered from 1 in this order: (the keys in their order, the values the form fixes).
_USER_KEYS = ("role", "text", "at", "kind")
_BOT_KEYS = ("role", "text", "at", "kind", "ref", "step")
_EVENT_KEYS = ("role", "at", "id", "type", "happened_at", "source", "depth", "data")
_SYSTEM_KEYS = ("role", "text", "at")
_RECEIPT_KEYS = ("role", "event", "status", "ref", "text", "at")
_USER_TEXT: dict[str, Any] = {"role": "user", "kind": "text"}
_BOT_MESSAGE: dict[str, Any] = {"role": "bot", "kind": "message"}
Form = tuple[tuple[str, ...], dict[str, Any]]
FORMS: tuple[Form, ...] = (
    ((*_USER_KEYS, "message_id", "client_msg_id"), _USER_TEXT),  # 1: a customer's message (live chat)
    ((*_USER_KEYS, "message_id"), _USER_TEXT),  # 2: a customer's message (other channels)
    (_USER_KEYS, _USER_TEXT),
    ((*_BOT_KEYS, "bot", "buttons"), _BOT_MESSAGE),  # 4: the bot's message
    ((*_BOT_KEYS, "bot"), _BOT_MESSAGE),
    ((*_BOT_KEYS, "buttons"), _BOT_MESSAGE),
    (_BOT_KEYS, _BOT_MESSAGE),
    (_EVENT_KEYS, {"role": "event", "source": "crm", "depth": 0}),  # 8: a CRM event (a lead's history)
    (_RECEIPT_KEYS, {"role": "system", "event": "delivery"}),  # 9: a delivery receipt
    # 10 to 19: the same keys with other values there
    ((*_USER_KEYS, "message_id", "client_msg_id"), {}), ((*_USER_KEYS, "message_id"), {}), (_USER_KEYS, {}),
    ((*_BOT_KEYS, "bot", "buttons"), {}), ((*_BOT_KEYS, "bot"), {}), ((*_BOT_KEYS, "buttons"), {}), (_BOT_KEYS, {}),
    (_EVENT_KEYS, {}), (_RECEIPT_KEYS, {}), (_SYSTEM_KEYS, {}),
)
FORMS_END = 32
#: Keys of a CRM event's data written as their number (positive: one byte).
DATA_NAMES = ("pipeline", "stage", "contact", "from", "to", "field", "tag", "task", "text", "responsible", "lead")
_DATA_INDEX = {name: i for i, name in enumerate(DATA_NAMES)}
_BUTTON_KEYS = ("title", "payload", "url", "number")
#: ``happened_at`` as the number of these it is before ``at`` (2**-22 s: a float's unit between
#: 2**30 and 2**31 s, 2004 to 2038; later times are multiples of it).
_TICKS = 4194304.0
_BYTES = (bytes, bytearray, memoryview)
#: A bot message's ref as the engine makes it, ``r<run>:<step>:m<seq>`` (``turn.py``), in decimal.
_REF_PARTS = re.compile(r"r([1-9][0-9]{0,8}|0):(.*):m([1-9][0-9]{0,8}|0)", re.DOTALL)
#: A way to write a value: (the value, the entry's values, the values written so far) -> what is
#: written; to read one: (the value read, the values read so far) -> the value.
Way = Any


def _token(v: Any, vals: list[Any], out: list[Any]) -> Any:
    if type(v) is str:
        return TOKEN_OF.get(v, v)
    if type(v) is int and -32 <= v < 0:
        raise Unfit
    return v


def _read_token(v: Any, values: list[Any]) -> Any:
    return TOKENS.get(v, v) if type(v) is int and v < 0 else v


def _hex(v: Any, vals: list[Any], out: list[Any]) -> Any:
    if type(v) is str:
        return (hex_id(v) or v) if len(v) == 32 else v
    if isinstance(v, _BYTES):
        raise Unfit
    return v


def _read_hex(v: Any, values: list[Any]) -> Any:
    return v.hex() if type(v) is bytes else v


def _same(of: int) -> tuple[Way, Way]:
    """``client_msg_id``: nil when it is the ``message_id`` (at ``of``), else as ``_hex``."""
    def write(v: Any, vals: list[Any], out: list[Any]) -> Any:
        if type(v) is str and v == vals[of]:
            return None
        if v is None:
            raise Unfit
        return _hex(v, vals, out)

    def read(v: Any, values: list[Any]) -> Any:
        return values[of] if v is None else _read_hex(v, values)
    return write, read


def _gen_id(v: Any, vals: list[Any], out: list[Any]) -> Any:
    """A generated event id ``gen-<16 base64url characters>`` as its 12 bytes."""
    if type(v) is str:
        if len(v) == 20 and v.startswith("gen-"):
            try:
                raw = base64.urlsafe_b64decode(v[4:])
            except ValueError:
                return v
            if base64.urlsafe_b64encode(raw).decode() == v[4:]:
                return raw
        return v
    if isinstance(v, _BYTES):
        raise Unfit
    return v


def _read_gen_id(v: Any, values: list[Any]) -> Any:
    return "gen-" + base64.urlsafe_b64encode(v).decode() if type(v) is bytes else v


def _delta(at: int) -> tuple[Way, Way]:
    """``happened_at`` as an integer of ``_TICKS`` before the ``at`` at ``at`` when that reads back
    bit for bit (3 or 5 bytes, not 9), else as it is (an integer: the entry is written as a map)."""
    def write(v: Any, vals: list[Any], out: list[Any]) -> Any:
        if type(v) is float:
            now = vals[at]
            if type(now) is float and v > 0.0:  # (not -0.0, not NaN: a bit-exact comparison below)
                n = (now - v) * _TICKS
                if -2147483648.0 < n < 2147483648.0 and n == (i := int(n)) and now - i / _TICKS == v:
                    return i
            return v
        if type(v) is int:
            raise Unfit
        return v

    def read(v: Any, values: list[Any]) -> Any:
        return values[at] - v / _TICKS if type(v) is int else v
    return write, read


def _ref(step: int) -> tuple[Way, Way]:
    """A ref ``r<run>:<step>:m<seq>`` of the entry's step (at ``step``) as ``[run, seq]``."""
    def write(v: Any, vals: list[Any], out: list[Any]) -> Any:
        if type(v) is str:
            s = vals[step]
            if type(s) is str and (m := _REF_PARTS.fullmatch(v)) is not None and m[2] == s:
                return [int(m[1]), int(m[3])]
        elif isinstance(v, (list, tuple)):
            raise Unfit
        return v

    def read(v: Any, values: list[Any]) -> Any:
        return f"r{v[0]}:{values[step]}:m{v[1]}" if type(v) is list else v
    return write, read


def _step(ref: int) -> tuple[Way, Way]:
    """A step that its ``ref`` (at ``ref``), written as text, names: nil."""
    def write(v: Any, vals: list[Any], out: list[Any]) -> Any:
        if type(v) is str:
            r = out[ref]
            if type(r) is str and ref_step(r) == v:
                return None
        elif v is None:
            raise Unfit
        return v

    def read(v: Any, values: list[Any]) -> Any:
        return ref_step(values[ref]) if v is None else v
    return write, read


#: A button's payload that the flow gives it (``_flow_payload``), as written: no older version
#: wrote bytes there but the 5 of ``<8 hex digits>.<n>``.
FLOW_PAYLOAD = b""


def _flow_payload(step: Any, number: int) -> str | None:
    """The payload the flow compiler gives a step's button (``builder.validate._payload``:
    ``<crc32 of the step's id, 8 hex digits>.<its index>``), for button ``number`` of an entry
    of that ``step`` (None: no step's). Fixed for ever, whatever the compiler does later: stored
    entries read their payloads by it (pinned: ``tests/store/test_entry_forms.py``, forms 4 and 13)."""
    if type(step) is not str:
        return None
    try:
        return f"{zlib.crc32(step.encode()):08x}.{number - 1}"
    except UnicodeEncodeError:
        return None


def _buttons(step: int | None) -> tuple[Way, Way]:
    """Buttons as the runtime makes them (no url, numbered from 1) as ``[title, payload, …]``: a
    payload the flow gives that button of the entry's step (at ``step``) as 0 bytes (2 B, not 7:
    ``FLOW_PAYLOAD``), another of the form ``<8 hex digits>.<n>`` as 5 bytes; other buttons: the
    entry is written as a map."""
    def write(v: Any, vals: list[Any], out: list[Any]) -> Any:
        if not isinstance(v, list):
            if isinstance(v, tuple):
                raise Unfit
            return v
        flat: list[Any] = []
        for number, b in enumerate(v, 1):
            if type(b) is not dict or tuple(b) != _BUTTON_KEYS:
                raise Unfit
            title, payload, url, n = b.values()
            if url is not None or type(n) is not int or n != number:
                raise Unfit
            if type(payload) is str:
                if len(payload) > 9 and payload[8] == ".":
                    if step is not None and payload == _flow_payload(vals[step], number):
                        payload = FLOW_PAYLOAD
                    else:
                        raw, at = hex_id(payload[:8]), payload[9:]
                        if raw is not None and at.isascii() and at.isdigit() and len(at) < 4 \
                                and (i := int(at)) < 256 and str(i) == at:
                            payload = raw + bytes((i,))
            elif isinstance(payload, _BYTES):
                raise Unfit
            flat += (title, payload)
        return flat

    def read(v: Any, values: list[Any]) -> Any:
        if type(v) is not list:
            return v
        out = []
        for j in range(0, len(v), 2):
            p = v[j + 1]
            if type(p) is bytes:
                p = f"{p[:4].hex()}.{p[4]}" if p else _flow_payload(values[step] if step is not None else None,
                                                                      j // 2 + 1)
            out.append({"title": v[j], "payload": p, "url": None, "number": j // 2 + 1})
        return out
    return write, read


def _data(v: Any, vals: list[Any], out: list[Any]) -> Any:
    if isinstance(v, dict):
        small = {}
        for key, item in v.items():
            if type(key) is not str:
                raise Unfit
            small[_DATA_INDEX.get(key, key)] = item
        return small
    return v


def _read_data(v: Any, values: list[Any]) -> Any:
    if type(v) is dict:
        return {(DATA_NAMES[key] if type(key) is int else key): item for key, item in v.items()}
    return v


def _ways(names: tuple[str, ...], fixed: dict[str, Any]) -> tuple[tuple[int, Way, Way], ...]:
    """Each written value's way in a form with these keys: (its position, write, read), plain
    ones and the form's fixed ones left out."""
    out: list[tuple[int, Way, Way]] = []
    for i, name in enumerate(names):
        if name in fixed:
            continue
        if name in ("role", "kind", "type", "source"):
            out.append((i, _token, _read_token))
        elif name == "message_id":
            out.append((i, _hex, _read_hex))
        elif name == "client_msg_id":
            out.append((i, *_same(names.index("message_id"))))
        elif name == "id":
            out.append((i, _gen_id, _read_gen_id))
        elif name == "happened_at":
            out.append((i, *_delta(names.index("at"))))
        elif name == "ref" and "step" in names[i:]:
            out.append((i, *_ref(names.index("step"))))
        elif name == "step" and "ref" in names[:i]:
            out.append((i, *_step(names.index("ref"))))
        elif name == "buttons":
            out.append((i, *_buttons(names.index("step") if "step" in names else None)))
        elif name == "data":
            out.append((i, _data, _read_data))
    return tuple(out)


#: A form to write: (its prefix, the fixed values' positions and values, the written values'
#: positions, the ways); to read: (its keys, its fixed values in place (None elsewhere), the
#: written values' positions, the ways).
WritePlan = tuple[bytes, tuple[tuple[int, Any], ...], tuple[int, ...], tuple[tuple[int, Way], ...]]
ReadForm = tuple[tuple[str, ...], list[Any], tuple[int, ...], tuple[tuple[int, Way], ...]]


def _form_plans() -> tuple[dict[tuple[str, ...], list[WritePlan]], dict[int, ReadForm]]:
    writes: dict[tuple[str, ...], list[WritePlan]] = {}
    reads: dict[int, ReadForm] = {}
    for number, (names, fixed) in enumerate(FORMS, 1):
        ways = _ways(names, fixed)
        kept = tuple(i for i, name in enumerate(names) if name not in fixed)
        writes.setdefault(names, []).append((
            b"\xc1" + bytes((number,)), tuple((names.index(name), value) for name, value in fixed.items()),
            kept if fixed else (), tuple((i, write) for i, write, _ in ways)))
        reads[number] = (names, [fixed.get(name) for name in names], kept if fixed else (),
                         tuple((i, read) for i, _, read in ways))
    return writes, reads


WRITES, _READS = _form_plans()
#: Each form's array header (msgpack's fixarray of its written values' count), not stored: the
#: blob holds the array's items only, the reader puts the header back (a byte less per entry).
HEADS = {number: bytes((0x90 + (len(kept) if kept else len(names)),))
         for number, (names, _, kept, _) in _READS.items()}
if max(HEADS.values()) >= b"\xa0":
    raise RuntimeError("an entry form of 16 values or more: its array header is longer than a byte")


def write(vals: list[Any], forms: list[WritePlan]) -> tuple[bytes, list[Any]] | None:
    """An entry's values (``list(entry.values())``, its keys one of ``WRITES``') in the first of
    its forms whose fixed values it has: (the blob's first bytes, the values to pack after them);
    None: in none of them."""
    for prefix, fixed, kept, ways in forms:
        for i, value in fixed:
            v = vals[i]
            if type(v) is not type(value) or v != value:
                break
        else:
            out = vals[:]
            try:
                for i, way in ways:
                    out[i] = way(vals[i], vals, out)
            except Unfit:
                return None
            return prefix, [out[i] for i in kept] if kept else out
    return None


def read(number: int, written: Any) -> dict[str, Any]:
    """The entry of form ``number`` from the array its blob holds (unpacked)."""
    names, fixed, kept, ways = _READS[number]
    if type(written) is not list or len(written) != (len(kept) if kept else len(names)):
        raise ValueError("a transcript entry that does not fit its form")
    if kept:
        values = fixed[:]
        for i, v in zip(kept, written, strict=True):
            values[i] = v
    else:
        values = written
    for i, way in ways:
        values[i] = way(values[i], values)
    return dict(zip(names, values, strict=True))
