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
bytes), a bot message's ``step`` that its ``ref`` names as the token ``_STEP_IN_REF``. Most
entries are smaller still, in their *form* (``bot/store/entryforms.py``, issue 14 aim 3): ``0xc1``,
the form's number, then their values only, in their keys' order. ``unpack`` reads every form, so
older blobs stay readable; ``_NAMES`` may only grow at its end (an index names its key for ever).
The maps' names and ``pack`` are in ``compactmaps.py`` (shared with ``statecodec.py``, which writes and
reads states: re-exported here, ``encode_state``, ``decode_state``; neither imports the other's way up).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import msgpack

from ..engine import events as ev
from . import entryforms
from .compactmaps import _ENTRY as _ENTRY
from .compactmaps import _ENTRY_SHAPE as _ENTRY_SHAPE
from .compactmaps import _INDEX as _INDEX
from .compactmaps import _KEY_INDEXES as _KEY_INDEXES
from .compactmaps import _KEY_SETS_MAX as _KEY_SETS_MAX
from .compactmaps import _NAME_OF as _NAME_OF
from .compactmaps import _NAMES as _NAMES
from .compactmaps import _PLANS as _PLANS
from .compactmaps import _SAME_ID as _SAME_ID
from .compactmaps import _SHAPES as _SHAPES
from .compactmaps import _STATE as _STATE
from .compactmaps import COMPACT as COMPACT
from .compactmaps import Plan as Plan
from .compactmaps import Shape as Shape
from .compactmaps import _grow as _grow
from .compactmaps import _nested as _nested
from .compactmaps import _pack_compact as _pack_compact
from .compactmaps import _PlainKey as _PlainKey
from .compactmaps import _shrink as _shrink
from .compactmaps import pack as pack
from .statecodec import _STATE_FIELDS as _STATE_FIELDS
from .statecodec import STATE_TOKENS as STATE_TOKENS
from .statecodec import _check_fields as _check_fields
from .statecodec import _state_from_compact
from .statecodec import decode_state as decode_state
from .statecodec import encode_state as encode_state

_EVENT_TYPES: dict[str, type] = {
    cls.__name__: cls
    for cls in (ev.InboundMessage, ev.TimerFired, ev.DeliveryFailed, ev.WidgetCallback,
                ev.VideoEvent, ev.CrmEvent, ev.Takeover, ev.Release, ev.StopBot, ev.StartBot,
                ev.HumanMessage, ev.Relayed)
}


def unpack(data: bytes) -> Any:
    if data[:1] == COMPACT:
        return _unpack_compact(data)
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


_CLIENT_MSG_ID, _MESSAGE_ID = _INDEX["client_msg_id"], _INDEX["message_id"]
#: Values written as a token, in their place (``pack_entry``): at these keys of a compact entry
#: a negative number from -1 to -32 stands for the value ``_TOKENS`` gives it (-32: the step its
#: ``ref`` names, ``<run>:<step>:m<n>``) and bytes for an id of 32 lower-case hex digits. An entry
#: that holds such a number or bytes there itself is written plain. ``_TOKENS``: append only.
_TOKENS, _TOKEN_OF = entryforms.TOKENS, entryforms.TOKEN_OF
_STEP_IN_REF = -32
_TOKEN_KEYS = tuple(_INDEX[name] for name in ("role", "kind", "source", "type"))
_REF, _STEP = _INDEX["ref"], _INDEX["step"]
_TOKEN_NAMES = ("role", "kind", "source", "type")


#: How ``pack_entry`` writes an entry with a given set of keys (all strings), worked out once per
#: set: (its keys' indexes, the token keys it has, has it a step, has it an id, the plan of its
#: nested engine maps); at most ``_KEY_SETS_MAX`` sets (then forgotten).
EntryPlan = tuple[tuple[int | str, ...], tuple[int, ...], bool, bool, Plan]
_ENTRY_PLANS: dict[tuple[str, ...], EntryPlan] = {}
_ENTRY_PREFIX = COMPACT + _ENTRY


def pack_entry(entry: dict[str, Any]) -> bytes:
    """A transcript entry, compact (read back by ``unpack``): in its form (``entryforms.FORMS``) when its
    keys are one's and its values fit it, else as a compact map (``_pack_entry_map``)."""
    names = tuple(entry)
    forms = entryforms.WRITES.get(names)
    if forms is not None:
        written = entryforms.write(list(entry.values()), forms)
        if written is not None:
            return written[0] + pack(written[1])[1:]  # the items: the form gives the header
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
    ``message_id``'s text once (``_SAME_ID``), an id of 32 hex digits as its 16 bytes (raises
    ``_PlainKey`` for an entry that holds bytes there itself)."""
    ids = small.get(_MESSAGE_ID), small.get(_CLIENT_MSG_ID)
    if type(ids[1]) is str and type(ids[0]) is str and ids[1] == ids[0]:  # (not 0 and False, 1 and 1.0 …)
        del small[_CLIENT_MSG_ID]
        small[_SAME_ID] = None
    for key, value in zip((_MESSAGE_ID, _CLIENT_MSG_ID), ids, strict=True):
        if type(value) is str and len(value) == 32 and key in small:
            raw = _hex_id(value)
            if raw is not None:
                small[key] = raw
        elif isinstance(value, (bytes, bytearray, memoryview)):  # read back as an id's hex
            raise _PlainKey


_hex_id, _ref_step = entryforms.hex_id, entryforms.ref_step


def _unpack_compact(data: bytes) -> Any:
    if data[1] < entryforms.FORMS_END:
        form = data[1]
        items = entryforms.HEADS[form] + data[2:]  # the array's header: the form's
        return entryforms.read(form, msgpack.unpackb(items, raw=False, strict_map_key=False))
    kind = data[1:2]
    value = msgpack.unpackb(data[2:], raw=False, strict_map_key=False)
    if kind == _ENTRY:
        return _entry_from_compact(value)
    if kind == _STATE:  # its dict: what it left out, shortened or nil, as the state has it
        return _state_from_compact(value).to_dict()
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
