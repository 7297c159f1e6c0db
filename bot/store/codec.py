"""msgpack encoding of states, events and transcript entries (the store's only formats).

States and transcript entries are stored *compact* (issue 14): the byte ``0xc1`` (never used by
msgpack), a byte for the kind (``_STATE``, ``_ENTRY``), then msgpack in which the keys of the
maps the engine builds — the entry or state itself and the maps at the paths its ``_SHAPES``
names (a button, a run, its wait …) — are written as their index in ``_NAMES`` when listed there
(one byte instead of the name); the maps below (variables, CRM event data) keep their keys as
they are. An entry's values are smaller too, in their place (``pack_entry``): a customer
message's ``client_msg_id`` that repeats its ``message_id`` is written once, an id of 32 lower-case
hex digits (a live chat id, a uuid4 ``hex``) as its 16 bytes (18 bytes, not 34), the most common
``role``, ``kind``, CRM event ``type`` and ``source`` as a one-byte token (``_TOKENS``: not 4 to 16
bytes), a bot message's ``step`` that its ``ref`` names as the token ``_STEP_IN_REF``.
``unpack`` reads both forms, so blobs written before stay readable; ``_NAMES`` may only grow at
its end (an index, once written, names its key for ever).
"""

from __future__ import annotations

import base64
import dataclasses
import re
import threading
from typing import Any

import msgpack

from ..engine import events as ev
from ..engine.state import ConversationState, Frame, Run, Wait

_EVENT_TYPES: dict[str, type] = {
    cls.__name__: cls
    for cls in (ev.InboundMessage, ev.TimerFired, ev.DeliveryFailed, ev.WidgetCallback,
                ev.VideoEvent, ev.CrmEvent, ev.Takeover, ev.Release, ev.StopBot, ev.StartBot,
                ev.HumanMessage, ev.Relayed)
}


def pack(value: Any) -> bytes:
    """``msgpack.packb(value, use_bin_type=True, default=_default)``, the same bytes, with this
    thread's ``Packer``: ``packb`` makes a new one, and its 256 KiB buffer, for every value (a
    message packs five or six: issue 14 aim 1). One per thread: a packer's buffer is not shared."""
    try:
        packer = _PACKERS.packer
    except AttributeError:
        packer = _PACKERS.packer = msgpack.Packer(use_bin_type=True, default=_default)
    return packer.pack(value)  # type: ignore[no-any-return]


#: Each thread's packer (``pack``); it resets its buffer after each value, and after an error.
_PACKERS = threading.local()


def unpack(data: bytes) -> Any:
    if data[:1] == COMPACT:
        return _unpack_compact(data)
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


COMPACT = b"\xc1"
#: Map keys written as their index: append only (see the module docstring).
_NAMES: tuple[str, ...] = (
    # transcript entries (bot/engine/transcript.py, the lead's history, delivery receipts)
    "role", "text", "at", "kind", "ref", "step", "bot", "buttons", "title", "payload", "url", "number",
    "message_id", "client_msg_id", "attachments", "name", "list", "button", "header", "footer", "sections",
    "rows", "id", "description", "template", "template_params", "to", "event", "status", "type",
    "happened_at", "source", "depth", "data", "relayed_from", "rule", "outcome", "detail", "user",
    # conversation states (bot/engine/state.py)
    "v", "channel", "account", "origin", "owner", "owner_user", "chat_status", "run", "version", "vars",
    "json", "lvr", "wait", "timers", "on", "token", "request", "until", "held", "widget_json", "ai",
    "callers", "error", "last_message", "start_param", "seq", "turn_steps", "crm", "contact_id", "lead_id",
    "company_id", "next",
)
#: A key of its own: "client_msg_id is message_id" (its value is nil). Written as 71 since the
#: start (``len(_NAMES)`` then): a fixed number, which the names appended after it skip.
_SAME_ID = 71
_INDEX = {name: i + (i >= _SAME_ID) for i, name in enumerate(_NAMES)}
_CLIENT_MSG_ID, _MESSAGE_ID = _INDEX["client_msg_id"], _INDEX["message_id"]
#: Values written as a token, in their place (``pack_entry``): at these keys of a compact entry
#: a negative number from -1 to -32 stands for the value ``_TOKENS`` gives it (-32: the step its
#: ``ref`` names, ``<run>:<step>:m<n>``) and bytes for an id of 32 lower-case hex digits. An entry
#: that holds such a number or bytes there itself is written plain. ``_TOKENS``: append only.
_TOKENS = {-1 - i: value for i, value in enumerate((
    "user", "bot", "event", "system", "human", "text", "message", "crm", "lead.created", "contact.created",
    "lead.stage_changed", "lead.field_changed"))}
_STEP_IN_REF = -32
_TOKEN_OF = {value: token for token, value in _TOKENS.items()}
_TOKEN_KEYS = tuple(_INDEX[name] for name in ("role", "kind", "source", "type"))
_REF, _STEP = _INDEX["ref"], _INDEX["step"]
_TOKEN_NAMES = ("role", "kind", "source", "type")

#: Which nested maps are the engine's (their keys compacted): key -> the map's own shape, or a
#: one-item list for a list of such maps. Maps elsewhere (variables, event data) are left alone.
Shape = dict[str, "Shape | list[Shape]"]
_ITEMS: Shape = {}
_ENTRY_SHAPE: Shape = {"buttons": [_ITEMS], "attachments": [_ITEMS],
                       "list": {"sections": [{"rows": [_ITEMS]}]}}
_LAST_MESSAGE_SHAPE: Shape = {"attachments": [_ITEMS]}
#: (``_state_from_compact`` reads the state's maps by this shape: a change here changes it too.)
_STATE_SHAPE: Shape = {"run": {"wait": {}, "callers": [_ITEMS]}, "crm": {}, "last_message": _LAST_MESSAGE_SHAPE}
_STATE, _ENTRY = b"s", b"e"
_SHAPES = {_STATE: _STATE_SHAPE, _ENTRY: _ENTRY_SHAPE}


class _PlainKey(Exception):
    """A key that is not a string where names are compacted: the value is stored plain."""


_STR_KEYS = frozenset({str})
_NAME_OF = {index: name for name, index in _INDEX.items()}


#: The maps the engine builds come with a few sets of keys (an entry of each kind, a button, the
#: CRM ids…): each set's indexes, in its order, by the keys (which are strings: a set with another
#: key is written plain and not kept here), at most ``_KEY_SETS_MAX`` of them (then forgotten).
_KEY_INDEXES: dict[tuple[str, ...], tuple[int | str, ...]] = {}
_KEY_SETS_MAX = 512

#: A shape compiled for ``_shrink``: (the name's index, a list of maps?, the inner plan) per nested map.
Plan = tuple[tuple[int, bool, "Plan"], ...]


def _compile(shape: Shape) -> Plan:
    return tuple((_INDEX[name], isinstance(inner, list), _compile(inner[0] if isinstance(inner, list) else inner))
                 for name, inner in shape.items())


def _shrink(value: dict[str, Any], plan: Plan) -> dict[Any, Any]:
    """``value`` with its keys (and its nested engine maps' keys) written as indexes (per message:
    the shape is compiled once, ``_PLANS``, and the indexes of a set of keys looked up once,
    ``_KEY_INDEXES``)."""
    names = tuple(value)
    indexes = _KEY_INDEXES.get(names)
    if indexes is None:
        if not set(map(type, names)) <= _STR_KEYS:
            raise _PlainKey
        if len(_KEY_INDEXES) >= _KEY_SETS_MAX:
            _KEY_INDEXES.clear()
        index = _INDEX.get
        indexes = _KEY_INDEXES[names] = tuple([index(key, key) for key in names])
    out: dict[Any, Any] = dict(zip(indexes, value.values(), strict=False))  # as long: made of its keys
    for i, many, inner in plan:
        item = out.get(i)
        if item is None:
            continue
        if not many:
            if isinstance(item, dict):
                out[i] = _shrink(item, inner)
        elif isinstance(item, (list, tuple)):
            out[i] = [_shrink(x, inner) if isinstance(x, dict) else x for x in item]
    return out


def _grow(value: dict[Any, Any], shape: Shape) -> dict[str, Any]:
    name_of = _NAME_OF.get
    out: dict[Any, Any] = {name_of(key, key): item for key, item in value.items()}
    for name, inner in shape.items():
        item = out.get(name)
        if item is not None:
            out[name] = _nested(item, inner, _grow)
    return out


def _nested(item: Any, inner: Shape | list[Shape], walk: Any) -> Any:
    if isinstance(inner, list):
        if isinstance(item, (list, tuple)):
            return [walk(x, inner[0]) if isinstance(x, dict) else x for x in item] if item else []
        return item
    return walk(item, inner) if isinstance(item, dict) else item


_PLANS = {kind: _compile(shape) for kind, shape in _SHAPES.items()}


def _pack_compact(value: dict[str, Any], kind: bytes) -> bytes:
    """``value`` compact by its shape alone (a state's ``to_dict``: ``encode_state`` writes the
    same bytes straight from the state; an entry: ``pack_entry``, which compacts its values too)."""
    try:
        small = _shrink(value, _PLANS[kind])
    except _PlainKey:
        return pack(value)
    return COMPACT + kind + pack(small)


#: How ``pack_entry`` writes an entry with a given set of keys (all strings), worked out once per
#: set: (its keys' indexes, the token keys it has, has it a step, has it an id, the plan of its
#: nested engine maps); at most ``_KEY_SETS_MAX`` sets (then forgotten).
EntryPlan = tuple[tuple[int | str, ...], tuple[int, ...], bool, bool, Plan]
_ENTRY_PLANS: dict[tuple[str, ...], EntryPlan] = {}
_ENTRY_PREFIX = COMPACT + _ENTRY


def pack_entry(entry: dict[str, Any]) -> bytes:
    """A transcript entry, compact (read back by ``unpack``): in its form (``_FORMS``) when its
    keys are one's and its values fit it, else as a compact map (``_pack_entry_map``)."""
    names = tuple(entry)
    forms = _FORM_PLANS.get(names)
    if forms is not None:
        blob = _pack_form(list(entry.values()), forms)
        if blob is not None:
            return blob
    return _pack_entry_map(entry, names)


def _pack_entry_map(entry: dict[str, Any], names: tuple[Any, ...]) -> bytes:
    """An entry as a compact map: its keys as indexes, its values smaller in their place
    (``_pack_ids``, ``_TOKENS``, ``_STEP_IN_REF``); written plain when it holds a value a token
    or an id's bytes would be read as, or a key that is not a string.

    Per entry (issue 14 aim 5): one lookup of its key set's plan, one dict built, and only the
    values its keys call for looked at (no per-key loop, no shape walk for an entry without
    buttons, list or attachments)."""
    plan = _ENTRY_PLANS.get(names)
    if plan is None:
        plan = _entry_plan(names)
        if plan is None:
            return pack(entry)
    indexes, tokens, step, ids, nested = plan
    small: dict[Any, Any] = dict(zip(indexes, entry.values(), strict=False))  # as long: made of its keys
    for key in tokens:
        value = small[key]
        if type(value) is str:
            token = _TOKEN_OF.get(value)
            if token is not None:
                small[key] = token
        elif type(value) is int and -32 <= value < 0:
            return pack(entry)
    if step:
        value = small[_STEP]
        if type(value) is str:
            ref = small.get(_REF)
            if type(ref) is str and _ref_step(ref) == value:
                small[_STEP] = _STEP_IN_REF
        elif type(value) is int and -32 <= value < 0:
            return pack(entry)
    try:
        if ids:
            _pack_ids(small)
        for key, many, inner in nested:
            item = small[key]
            if not many:
                if isinstance(item, dict):
                    small[key] = _shrink(item, inner)
            elif isinstance(item, (list, tuple)):
                small[key] = [_shrink(x, inner) if isinstance(x, dict) else x for x in item]
    except _PlainKey:
        return pack(entry)
    return _ENTRY_PREFIX + pack(small)


def _entry_plan(names: tuple[str, ...]) -> EntryPlan | None:
    """``pack_entry``'s plan for entries with these keys (None: a key that is not a string)."""
    for name in names:
        if type(name) is not str:
            return None
    if len(_ENTRY_PLANS) >= _KEY_SETS_MAX:
        _ENTRY_PLANS.clear()
    indexes = tuple([_INDEX.get(name, name) for name in names])
    has = set(indexes)
    plan = _ENTRY_PLANS[names] = (
        indexes, tuple(key for key in _TOKEN_KEYS if key in has), _STEP in has,
        _MESSAGE_ID in has or _CLIENT_MSG_ID in has, tuple(p for p in _PLANS[_ENTRY] if p[0] in has))
    return plan


def _pack_ids(small: dict[Any, Any]) -> None:
    """An entry's ids, smaller, in their place: a ``client_msg_id`` that repeats the
    ``message_id`` once (``_SAME_ID``), an id of 32 hex digits as its 16 bytes (raises
    ``_PlainKey`` for an entry that holds bytes there itself)."""
    ids = small.get(_MESSAGE_ID), small.get(_CLIENT_MSG_ID)
    if ids[1] is not None and ids[1] == ids[0]:
        del small[_CLIENT_MSG_ID]
        small[_SAME_ID] = None
    for key, value in zip((_MESSAGE_ID, _CLIENT_MSG_ID), ids, strict=True):
        if type(value) is str and len(value) == 32 and key in small:
            raw = _hex_id(value)
            if raw is not None:
                small[key] = raw
        elif isinstance(value, (bytes, bytearray, memoryview)):  # read back as an id's hex
            raise _PlainKey


def _hex_id(value: str) -> bytes | None:
    """The 16 bytes of 32 lower-case hex digits (None: not such an id)."""
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        return None
    return raw if raw.hex() == value else None


def _ref_step(ref: str) -> str | None:
    """The step a message's ref ``<run>:<step>:m<n>`` names (None: not of that form)."""
    parts = ref.split(":")
    return parts[1] if len(parts) == 3 else None


# Entry forms (issue 14 aim 3). The common entries' keys come in a few fixed orders (the customer's
# message, the bot's, a CRM event …), most with the same few values at some keys (role "user",
# kind "text" …): ``_FORMS``. Such an entry is written as ``0xc1``, its form's number (1 to 31:
# bytes no other compact kind uses) and a msgpack array of its values in order, no keys, without
# the values its form fixes; the values its keys' ways name (``_ways``) are smaller, each by its
# key's way. A way raises ``_PlainKey`` for a value it could not write so that it reads back as
# written: the entry is then written as a compact map. ``_FORMS`` and ``_DATA_NAMES``: append only
# (a number, once written, names its form or key for ever).
_USER_KEYS = ("role", "text", "at", "kind")
_BOT_KEYS = ("role", "text", "at", "kind", "ref", "step")
_EVENT_KEYS = ("role", "at", "id", "type", "happened_at", "source", "depth", "data")
_SYSTEM_KEYS = ("role", "text", "at")
_RECEIPT_KEYS = ("role", "event", "status", "ref", "text", "at")
_USER_TEXT: dict[str, Any] = {"role": "user", "kind": "text"}
_BOT_MESSAGE: dict[str, Any] = {"role": "bot", "kind": "message"}
Form = tuple[tuple[str, ...], dict[str, Any]]
_FORMS: tuple[Form, ...] = (
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
_FORMS_END = 32
#: Keys of a CRM event's data written as their number (positive: one byte).
_DATA_NAMES = ("pipeline", "stage", "contact", "from", "to", "field", "tag", "task", "text", "responsible", "lead")
_DATA_INDEX = {name: i for i, name in enumerate(_DATA_NAMES)}
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
        return _TOKEN_OF.get(v, v)
    if type(v) is int and -32 <= v < 0:
        raise _PlainKey
    return v


def _read_token(v: Any, values: list[Any]) -> Any:
    return _TOKENS.get(v, v) if type(v) is int and v < 0 else v


def _hex(v: Any, vals: list[Any], out: list[Any]) -> Any:
    if type(v) is str:
        return (_hex_id(v) or v) if len(v) == 32 else v
    if isinstance(v, _BYTES):
        raise _PlainKey
    return v


def _read_hex(v: Any, values: list[Any]) -> Any:
    return v.hex() if type(v) is bytes else v


def _same(of: int) -> tuple[Way, Way]:
    """``client_msg_id``: nil when it is the ``message_id`` (at ``of``), else as ``_hex``."""
    def write(v: Any, vals: list[Any], out: list[Any]) -> Any:
        if type(v) is str and v == vals[of]:
            return None
        if v is None:
            raise _PlainKey
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
        raise _PlainKey
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
            raise _PlainKey
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
            raise _PlainKey
        return v

    def read(v: Any, values: list[Any]) -> Any:
        return f"r{v[0]}:{values[step]}:m{v[1]}" if type(v) is list else v
    return write, read


def _step(ref: int) -> tuple[Way, Way]:
    """A step that its ``ref`` (at ``ref``), written as text, names: nil."""
    def write(v: Any, vals: list[Any], out: list[Any]) -> Any:
        if type(v) is str:
            r = out[ref]
            if type(r) is str and _ref_step(r) == v:
                return None
        elif v is None:
            raise _PlainKey
        return v

    def read(v: Any, values: list[Any]) -> Any:
        return _ref_step(values[ref]) if v is None else v
    return write, read


def _buttons(v: Any, vals: list[Any], out: list[Any]) -> Any:
    """Buttons as the runtime makes them (no url, numbered from 1) as ``[title, payload, …]``, a
    payload ``<8 hex digits>.<n>`` as 5 bytes; other buttons: the entry is written as a map."""
    if not isinstance(v, list):
        if isinstance(v, tuple):
            raise _PlainKey
        return v
    flat: list[Any] = []
    for number, b in enumerate(v, 1):
        if type(b) is not dict or tuple(b) != _BUTTON_KEYS:
            raise _PlainKey
        title, payload, url, n = b.values()
        if url is not None or type(n) is not int or n != number:
            raise _PlainKey
        if type(payload) is str:
            if len(payload) > 9 and payload[8] == ".":
                raw, at = _hex4(payload[:8]), payload[9:]
                if raw is not None and at.isdigit() and len(at) < 4 and (i := int(at)) < 256 and str(i) == at:
                    payload = raw + bytes((i,))
        elif isinstance(payload, _BYTES):
            raise _PlainKey
        flat += (title, payload)
    return flat


def _hex4(value: str) -> bytes | None:
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        return None
    return raw if raw.hex() == value else None


def _read_buttons(v: Any, values: list[Any]) -> Any:
    if type(v) is not list:
        return v
    return [{"title": v[j], "payload": f"{p[:4].hex()}.{p[4]}" if type(p := v[j + 1]) is bytes else p,
             "url": None, "number": j // 2 + 1} for j in range(0, len(v), 2)]


def _data(v: Any, vals: list[Any], out: list[Any]) -> Any:
    if isinstance(v, dict):
        small = {}
        for key, item in v.items():
            if type(key) is not str:
                raise _PlainKey
            small[_DATA_INDEX.get(key, key)] = item
        return small
    return v


def _read_data(v: Any, values: list[Any]) -> Any:
    if type(v) is dict:
        return {(_DATA_NAMES[key] if type(key) is int else key): item for key, item in v.items()}
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
            out.append((i, _buttons, _read_buttons))
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
    for number, (names, fixed) in enumerate(_FORMS, 1):
        ways = _ways(names, fixed)
        kept = tuple(i for i, name in enumerate(names) if name not in fixed)
        writes.setdefault(names, []).append((
            COMPACT + bytes((number,)), tuple((names.index(name), value) for name, value in fixed.items()),
            kept if fixed else (), tuple((i, write) for i, write, _ in ways)))
        reads[number] = (names, [fixed.get(name) for name in names], kept if fixed else (),
                         tuple((i, read) for i, _, read in ways))
    return writes, reads


_FORM_PLANS, _FORM_READS = _form_plans()


def _pack_form(vals: list[Any], forms: list[WritePlan]) -> bytes | None:
    """The entry's values in the first of its forms whose fixed values it has (None: in none)."""
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
            except _PlainKey:
                return None
            return prefix + pack([out[i] for i in kept] if kept else out)
    return None


def _entry_from_form(data: bytes) -> dict[str, Any]:
    names, fixed, kept, ways = _FORM_READS[data[1]]
    read = msgpack.unpackb(data[2:], raw=False, strict_map_key=False)
    if type(read) is not list or len(read) != (len(kept) if kept else len(names)):
        raise ValueError("a transcript entry that does not fit its form")
    if kept:
        values = fixed[:]
        for i, v in zip(kept, read, strict=True):
            values[i] = v
    else:
        values = read
    for i, way in ways:
        values[i] = way(values[i], values)
    return dict(zip(names, values, strict=True))


def _unpack_compact(data: bytes) -> Any:
    if data[1] < _FORMS_END:
        return _entry_from_form(data)
    kind = data[1:2]
    value = msgpack.unpackb(data[2:], raw=False, strict_map_key=False)
    if kind == _ENTRY:
        return _entry_from_compact(value)
    return _grow(value, _SHAPES[kind])


#: How ``_entry_from_compact`` reads an entry with a given set of compact keys, worked out once
#: per set: (the names of its keys, the token names it has, has it a step, the id names it has,
#: has it ``_SAME_ID``, the shapes of its nested engine maps); at most ``_KEY_SETS_MAX`` sets.
ReadPlan = tuple[tuple[Any, ...], tuple[str, ...], bool, tuple[str, ...], bool,
                 tuple[tuple[str, "Shape | list[Shape]"], ...]]
_READ_PLANS: dict[tuple[Any, ...], ReadPlan] = {}


def _entry_from_compact(value: dict[Any, Any]) -> dict[Any, Any]:
    """``_grow(value, _ENTRY_SHAPE)`` with ``pack_entry``'s values undone: one lookup of the key
    set's plan, one dict built, only the values its keys call for looked at."""
    keys = tuple(value)
    plan = _READ_PLANS.get(keys)
    if plan is None:
        plan = _read_plan(keys)
    names, tokens, step, ids, same, nested = plan
    out: dict[Any, Any] = dict(zip(names, value.values(), strict=False))
    for name in tokens:
        item = out[name]
        if type(item) is int and item < 0:
            out[name] = _TOKENS.get(item, item)
    if step and type(item := out["step"]) is int and item == _STEP_IN_REF:  # as written: not -32.0
        out["step"] = _ref_step(out.get("ref") or "")
    for name in ids:
        if type(item := out[name]) is bytes:
            out[name] = item.hex()
    if same:
        del out[_SAME_ID]
        out["client_msg_id"] = out.get("message_id")
    for name, inner in nested:
        item = out[name]
        if item is not None:
            out[name] = _nested(item, inner, _grow)
    return out


def _read_plan(keys: tuple[Any, ...]) -> ReadPlan:
    if len(_READ_PLANS) >= _KEY_SETS_MAX:
        _READ_PLANS.clear()
    name_of = _NAME_OF.get
    names = tuple([name_of(key, key) for key in keys])
    plan = _READ_PLANS[keys] = (
        names, tuple(name for name in _TOKEN_NAMES if name in names), "step" in names,
        tuple(name for name in ("message_id", "client_msg_id") if name in names), _SAME_ID in keys,
        tuple((name, inner) for name, inner in _ENTRY_SHAPE.items() if name in names))
    return plan


def _default(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    raise TypeError(f"cannot encode {type(obj).__name__}")


def encode_state(state: ConversationState) -> bytes:
    """``_pack_compact(state.to_dict(), _STATE)``, the same bytes, built straight from the state:
    its maps are made with their keys' indexes rather than made with names and renamed (the
    renaming walk was most of a save's state CPU, issue 14 aim 1)."""
    try:
        small = _compact_state(state)
    except _PlainKey:
        return pack(state.to_dict())
    return _STATE_PREFIX + pack(small)


_STATE_PREFIX = COMPACT + _STATE
_LAST_MESSAGE_PLAN = _compile(_LAST_MESSAGE_SHAPE)
_NO_PLAN: Plan = ()
(_V, _ID, _CHANNEL, _ACCOUNT, _ORIGIN, _OWNER, _OWNER_USER, _CHAT_STATUS, _RUN, _LAST_MESSAGE, _SEQ, _TURN_STEPS,
 _CRM, _BOT, _VERSION, _STEP, _STATUS, _VARS, _JSON, _LVR, _WAIT, _AI, _CALLERS, _ERROR, _NEXT, _KIND, _TIMERS,
 _ON, _TOKEN, _REQUEST, _UNTIL, _HELD, _WIDGET_JSON) = (_INDEX[name] for name in (
    "v", "id", "channel", "account", "origin", "owner", "owner_user", "chat_status", "run", "last_message", "seq",
    "turn_steps", "crm", "bot", "version", "step", "status", "vars", "json", "lvr", "wait", "ai", "callers", "error",
    "next", "kind", "timers", "on", "token", "request", "until", "held", "widget_json"))
#: The fields ``_compact_state`` writes, per class: a field added to a class and not here stops the
#: import (``_check_fields``) rather than go unsaved.
_STATE_FIELDS = {
    ConversationState: ("id", "channel", "account", "origin", "owner", "owner_user", "chat_status", "run",
                        "last_message", "seq", "turn_steps", "crm", "timers"),
    Run: ("id", "bot", "version", "step", "status", "vars", "json", "last_validation_result", "wait",
          "action_index", "callers", "error", "splits", "goals"),
    Wait: ("kind", "step", "timers", "on", "token", "request", "until", "held", "widget_json"),
    Frame: ("bot", "version", "next", "vars", "json", "last_validation_result"),
}


def _check_fields() -> None:
    for cls, names in _STATE_FIELDS.items():
        fields = tuple(f.name for f in dataclasses.fields(cls))
        if fields != names:
            raise RuntimeError(f"bot.store.codec encodes {cls.__name__} as {names}, it has {fields}")


_check_fields()


def _compact_state(s: ConversationState) -> dict[int | str, Any]:
    """``_shrink(s.to_dict(), _PLANS[_STATE])``, without the dict of names (same keys, same order)."""
    run = s.run
    compact_run: dict[int | str, Any] | None = None
    if run is not None:
        w = run.wait
        compact_run = {
            _ID: run.id, _BOT: run.bot, _VERSION: run.version, _STEP: run.step, _STATUS: run.status,
            _VARS: run.vars, _JSON: run.json, _LVR: run.last_validation_result,
            _WAIT: None if w is None else {
                _KIND: w.kind, _STEP: w.step, _TIMERS: w.timers, _ON: list(w.on), _TOKEN: w.token,
                _REQUEST: w.request, _UNTIL: w.until, _HELD: list(w.held), _WIDGET_JSON: w.widget_json},
            _AI: run.action_index,
            _CALLERS: [{_BOT: f.bot, _VERSION: f.version, _NEXT: f.next, _VARS: f.vars, _JSON: f.json,
                        _LVR: f.last_validation_result} for f in run.callers] if run.callers else [],
            _ERROR: run.error,
        }
        if run.splits or run.goals:  # as ``Run.to_dict``: plain names (not in ``_NAMES``), only when set
            compact_run["sp"], compact_run["gl"] = [list(x) for x in run.splits], list(run.goals)
    last, crm = s.last_message, s.crm
    out: dict[int | str, Any] = {
        _V: 1, _ID: s.id, _CHANNEL: s.channel, _ACCOUNT: s.account, _ORIGIN: s.origin, _OWNER: s.owner,
        _OWNER_USER: s.owner_user, _CHAT_STATUS: s.chat_status, _RUN: compact_run,
        _LAST_MESSAGE: _shrink(last, _LAST_MESSAGE_PLAN) if isinstance(last, dict) else last,
        _SEQ: s.seq, _TURN_STEPS: s.turn_steps,
        _CRM: _shrink(crm, _NO_PLAN) if isinstance(crm, dict) else crm,
    }
    if s.timers:  # as ``ConversationState.to_dict``: a plain name, only when there are timers
        out["tm"] = s.timers_dict()
    return out


def decode_state(data: bytes) -> ConversationState:
    """``ConversationState.from_dict(unpack(data))``, the same state; a compact one is built
    straight from its maps by their keys' indexes rather than renamed first (the renaming walk
    was most of a decode: a timer's fire in a process that did not save the state, issue 14)."""
    if data[:2] == _STATE_PREFIX:
        return _state_from_compact(msgpack.unpackb(data[2:], raw=False, strict_map_key=False))
    return ConversationState.from_dict(unpack(data))


def _state_from_compact(d: dict[Any, Any]) -> ConversationState:
    """``ConversationState.from_dict(_grow(d, _STATE_SHAPE))`` without the dict of names."""
    get = d.get
    sid, run, last, crm = d[_ID], get(_RUN), get(_LAST_MESSAGE), get(_CRM)
    return ConversationState(
        sid, get(_CHANNEL, "livechat"), get(_ACCOUNT, "default"), get(_ORIGIN), get(_OWNER, "bot"),
        get(_OWNER_USER), get(_CHAT_STATUS, "unanswered"), _run_from_compact(run) if run else None,
        _grow(last, _LAST_MESSAGE_SHAPE) if isinstance(last, dict) else last, get(_SEQ, 0), get(_TURN_STEPS, 0),
        _grow(crm, _ITEMS) if isinstance(crm, dict) else crm,
        {(t if ":" in t else f"{sid}:{t}"): float(at) for t, at in tm.items()} if (tm := get("tm")) else {})


def _run_from_compact(r: dict[Any, Any]) -> Run:
    """``Run.from_dict`` of the run's map grown by ``_STATE_SHAPE`` (its wait, its callers)."""
    get = r.get
    w, callers, splits, goals = get(_WAIT), get(_CALLERS), get("sp"), get("gl")
    # (no comprehension for what is empty, as it mostly is: each costs a function's call)
    if not callers:
        callers = []
    elif isinstance(callers, (list, tuple)):
        callers = [_frame_from_compact(f) if isinstance(f, dict) else Frame.from_dict(f) for f in callers]
    else:
        callers = [Frame.from_dict(f) for f in callers]
    return Run(
        r[_ID], r[_BOT], r[_VERSION], get(_STEP), get(_STATUS, "running"), dict(get(_VARS) or {}), get(_JSON),
        get(_LVR), (_wait_from_compact(w) if isinstance(w, dict) else Wait.from_dict(w)) if w else None,
        get(_AI, 0), callers, get(_ERROR),
        tuple([(str(x[0]), str(x[1]), str(x[2]), int(x[3]), str(x[4])) for x in splits]) if splits else (),
        tuple([str(g) for g in goals]) if goals else (),
    )


def _wait_from_compact(w: dict[Any, Any]) -> Wait:
    get = w.get
    return Wait(w[_KIND], w[_STEP], dict(get(_TIMERS) or {}), tuple(get(_ON) or ()), get(_TOKEN), get(_REQUEST),
                get(_UNTIL), tuple(get(_HELD) or ()), get(_WIDGET_JSON))


def _frame_from_compact(f: dict[Any, Any]) -> Frame:
    get = f.get
    return Frame(f[_BOT], f[_VERSION], f[_NEXT], f[_VARS], get(_JSON), get(_LVR))


_FIELDS: dict[type, tuple[str, ...]] = {}


def encode_event(event: ev.Event) -> bytes:
    cls = type(event)
    names = _FIELDS.get(cls)
    if names is None:
        names = _FIELDS[cls] = tuple(f.name for f in dataclasses.fields(event))
    body: dict[str, Any] = {"t": cls.__name__}
    for name in names:
        body[name] = getattr(event, name)
    return pack(body)


def decode_event_extra(data: bytes) -> tuple[ev.Event, dict[str, Any]]:
    """An inbox entry: a bare event, or the envelope ``{"event": bytes, "extra": {…}}`` of an
    event with what its transcript entry should also record (the widget's ``client_msg_id``)."""
    d = unpack(data)
    if "t" not in d and "event" in d:
        return decode_event(d["event"]), dict(d.get("extra") or {})
    return _event_from(d), {}


def decode_event(data: bytes) -> ev.Event:
    return _event_from(unpack(data))


def _event_from(d: dict[str, Any]) -> ev.Event:
    cls = _EVENT_TYPES[d.pop("t")]
    if cls is ev.InboundMessage:
        d["attachments"] = tuple(ev.Attachment(**a) for a in d.get("attachments") or ())
    return cls(**d)  # type: ignore[no-any-return]
