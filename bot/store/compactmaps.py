"""Compact maps (issue 14): the codec's lowest layer, shared by entries (``codec``) and states
(``statecodec``), which both import it (neither imports the other's way up: no import cycle).

``pack`` (a thread's packer), the names written as their index (``_NAMES``: append only, see
``codec``'s docstring), the engine's shapes, and ``_shrink``/``_grow``, which write and read a
map's keys (and its nested engine maps' keys) as those indexes. ``codec`` re-exports them.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

import msgpack

from . import entryforms


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


def _default(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    raise TypeError(f"cannot encode {type(obj).__name__}")


COMPACT: bytes = b"\xc1"
#: Map keys written as their index: append only (see ``codec``'s docstring).
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
_INDEX: dict[str, int] = {name: i + (i >= _SAME_ID) for i, name in enumerate(_NAMES)}

#: Which nested maps are the engine's (their keys compacted): key -> the map's own shape, or a
#: one-item list for a list of such maps. Maps elsewhere (variables, event data) are left alone.
Shape = dict[str, "Shape | list[Shape]"]
_ITEMS: Shape = {}
_ENTRY_SHAPE: Shape = {"buttons": [_ITEMS], "attachments": [_ITEMS],
                       "list": {"sections": [{"rows": [_ITEMS]}]}}
_LAST_MESSAGE_SHAPE: Shape = {"attachments": [_ITEMS]}
#: (``_state_from_compact`` reads the state's maps by this shape: a change here changes it too.)
_STATE_SHAPE: Shape = {"run": {"wait": {}, "callers": [_ITEMS]}, "crm": {}, "last_message": _LAST_MESSAGE_SHAPE}
_STATE: bytes = b"s"
_ENTRY: bytes = b"e"
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


_hex_id = entryforms.hex_id
