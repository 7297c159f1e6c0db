"""msgpack encoding of states, events and transcript entries (the store's only formats).

States and transcript entries are stored *compact* (issue 14): the byte ``0xc1`` (never used by
msgpack), a byte for the kind (``_STATE``, ``_ENTRY``), then msgpack in which the keys of the
maps the engine builds — the entry or state itself and the maps at the paths its ``_SHAPES``
names (a button, a run, its wait …) — are written as their index in ``_NAMES`` when listed there
(one byte instead of the name); the maps below (variables, CRM event data) keep their keys as
they are. A customer message's ``client_msg_id`` that repeats its ``message_id`` is written once,
and an entry's ``message_id`` or ``client_msg_id`` of 32 lower-case hex digits (a live chat id,
a uuid4 ``hex``) is written as its 16 bytes under a key of its own (``_RAW_IDS``: 18 bytes, not 34),
and an entry's most common ``role``, ``kind``, CRM event ``type`` and ``source`` (``_PAIRS``: "role
is user" …) as one key of its own with no value (2 bytes, not 5 to 17), and a bot message's ``step``
that its ``ref`` names (``<run>:<step>:m<n>``) as such a key (``_STEP_IN_REF``).
``unpack`` reads both forms, so blobs written before stay readable; ``_NAMES`` may only grow at
its end (an index, once written, names its key for ever).
"""

from __future__ import annotations

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
_INDEX = {name: i for i, name in enumerate(_NAMES)}
#: A key of its own: "client_msg_id is message_id" (its value is nil). Written as 71 since the
#: start (``len(_NAMES)`` then): a fixed number, so ``_NAMES`` can grow past it.
_SAME_ID = 71
_CLIENT_MSG_ID, _MESSAGE_ID = _INDEX["client_msg_id"], _INDEX["message_id"]
#: Keys of their own (negative: never an index in ``_NAMES``, and a compact map's other keys are
#: indexes or strings): the entry's id of 32 lower-case hex digits, as its 16 bytes.
_RAW_IDS = {_MESSAGE_ID: -1, _CLIENT_MSG_ID: -2}
_HEX_ID = re.compile(r"[0-9a-f]{32}")
#: An entry's name and value written as one key of its own, -3, -4 … in this order (nil for value):
#: append only, as ``_NAMES``.
_PAIRS = (("role", "user"), ("role", "bot"), ("role", "event"), ("role", "system"), ("role", "human"),
          ("kind", "text"), ("kind", "message"), ("source", "crm"), ("type", "lead.created"),
          ("type", "contact.created"), ("type", "lead.stage_changed"), ("type", "lead.field_changed"))
_PAIR_KEYS = {(_INDEX[name], value): -3 - i for i, (name, value) in enumerate(_PAIRS)}
#: A key of its own: "the step is the ref's middle part" (the last one-byte negative number: the
#: pairs count down from -3 towards it).
_STEP_IN_REF = -32
_REF, _STEP = _INDEX["ref"], _INDEX["step"]
#: The keys of their own read back: the name, and the value (``_HEX``: the id's bytes as hex;
#: ``_FROM_REF``: the ref's step).
_HEX, _FROM_REF = object(), object()
_SPECIAL: dict[Any, tuple[str, object]] = {
    **{raw: (_NAMES[key], _HEX) for key, raw in _RAW_IDS.items()},
    **{key: (_NAMES[index], value) for (index, value), key in _PAIR_KEYS.items()},
    _STEP_IN_REF: ("step", _FROM_REF),
}

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
_NAME_OF = dict(enumerate(_NAMES))


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
            return [walk(x, inner[0]) if isinstance(x, dict) else x for x in item]
        return item
    return walk(item, inner) if isinstance(item, dict) else item


_PLANS = {kind: _compile(shape) for kind, shape in _SHAPES.items()}


def _pack_compact(value: dict[str, Any], kind: bytes) -> bytes:
    try:
        small = _shrink(value, _PLANS[kind])
    except _PlainKey:
        return pack(value)
    if kind == _ENTRY:
        small = _pack_values(small)
    return COMPACT + kind + pack(small)


def _pack_values(small: dict[Any, Any]) -> dict[Any, Any]:
    """An entry's values, smaller, each in its place: a ``client_msg_id`` that repeats the
    ``message_id`` once (``_SAME_ID``), an id of 32 hex digits as its 16 bytes (``_RAW_IDS``), a
    common role or kind as a key of its own (``_PAIRS``)."""
    if _CLIENT_MSG_ID in small and small[_CLIENT_MSG_ID] == small.get(_MESSAGE_ID):
        del small[_CLIENT_MSG_ID]
        small[_SAME_ID] = None
    out: dict[Any, Any] = {}
    for key, value in small.items():
        if type(value) is not str:
            out[key] = value
        elif (pair := _PAIR_KEYS.get((key, value))) is not None:
            out[pair] = None
        elif key in _RAW_IDS and len(value) == 32 and _HEX_ID.fullmatch(value):
            out[_RAW_IDS[key]] = bytes.fromhex(value)
        elif key == _STEP and type(ref := small.get(_REF)) is str and _ref_step(ref) == value:
            out[_STEP_IN_REF] = None
        else:
            out[key] = value
    return out


def _ref_step(ref: str) -> str | None:
    """The step a message's ref ``<run>:<step>:m<n>`` names (None: not of that form)."""
    parts = ref.split(":")
    return parts[1] if len(parts) == 3 else None


def pack_entry(entry: dict[str, Any]) -> bytes:
    """A transcript entry, compact (read back by ``unpack``)."""
    return _pack_compact(entry, _ENTRY)


def _unpack_compact(data: bytes) -> Any:
    kind = data[1:2]
    value = msgpack.unpackb(data[2:], raw=False, strict_map_key=False)
    out: dict[Any, Any] = _grow(value, _SHAPES[kind])
    if kind == _ENTRY:
        out = _grow_values(out)
    if _SAME_ID in value:
        del out[_SAME_ID]
        out["client_msg_id"] = out.get("message_id")
    return out


def _grow_values(entry: dict[Any, Any]) -> dict[Any, Any]:
    """``_pack_values`` undone (but ``_SAME_ID``): each key of its own as its name and value."""
    out: dict[Any, Any] = {}
    special = _SPECIAL.get
    for key, item in entry.items():
        found = special(key) if type(key) is int else None
        if found is None:
            out[key] = item
        elif found[1] is _HEX:
            out[found[0]] = item.hex()
        elif found[1] is _FROM_REF:
            out[found[0]] = _ref_step(entry["ref"])
        else:
            out[found[0]] = found[1]
    return out


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
                        _LVR: f.last_validation_result} for f in run.callers],
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
        {(t if ":" in t else f"{sid}:{t}"): float(at) for t, at in (get("tm") or {}).items()})


def _run_from_compact(r: dict[Any, Any]) -> Run:
    """``Run.from_dict`` of the run's map grown by ``_STATE_SHAPE`` (its wait, its callers)."""
    get = r.get
    w, callers = get(_WAIT), get(_CALLERS)
    if isinstance(callers, (list, tuple)):
        callers = [_frame_from_compact(f) if isinstance(f, dict) else Frame.from_dict(f) for f in callers]
    else:
        callers = [Frame.from_dict(f) for f in callers or ()]
    return Run(
        r[_ID], r[_BOT], r[_VERSION], get(_STEP), get(_STATUS, "running"), dict(get(_VARS) or {}), get(_JSON),
        get(_LVR), (_wait_from_compact(w) if isinstance(w, dict) else Wait.from_dict(w)) if w else None,
        get(_AI, 0), callers, get(_ERROR),
        tuple((str(x[0]), str(x[1]), str(x[2]), int(x[3]), str(x[4])) for x in get("sp") or ()),
        tuple(str(g) for g in get("gl") or ()),
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
