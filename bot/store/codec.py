"""msgpack encoding of states, events and transcript entries (the store's only formats)."""

from __future__ import annotations

import dataclasses
from typing import Any

import msgpack

from ..engine import events as ev
from ..engine.state import ConversationState

_EVENT_TYPES: dict[str, type] = {
    cls.__name__: cls
    for cls in (ev.InboundMessage, ev.TimerFired, ev.DeliveryFailed, ev.WidgetCallback,
                ev.VideoEvent, ev.CrmEvent, ev.Takeover, ev.Release, ev.StopBot, ev.StartBot,
                ev.HumanMessage, ev.Relayed)
}


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True, default=_default)  # type: ignore[no-any-return]


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def _default(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    raise TypeError(f"cannot encode {type(obj).__name__}")


def encode_state(state: ConversationState) -> bytes:
    return pack(state.to_dict())


def decode_state(data: bytes) -> ConversationState:
    return ConversationState.from_dict(unpack(data))


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
