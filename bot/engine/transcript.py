"""Transcript entries: what the live chat, the dashboard and the API show of a conversation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import events as ev

if TYPE_CHECKING:
    from . import effects as fx


def inbound_entry(e: ev.InboundMessage, at: float, *, client_msg_id: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"role": "user", "text": e.text, "at": at, "kind": e.kind}
    if e.payload is not None:
        entry["payload"] = e.payload
    if e.attachments:
        entry["attachments"] = [{"kind": a.kind, "url": a.url, "name": a.name} for a in e.attachments]
    if e.message_id:
        entry["message_id"] = e.message_id
    if client_msg_id:
        entry["client_msg_id"] = client_msg_id
    return entry


def outbound_entry(m: fx.SendMessage, at: float, *, bot: str | None, role: str = "bot") -> dict[str, Any]:
    entry: dict[str, Any] = {"role": role, "text": m.text, "at": at, "kind": m.kind, "ref": m.ref,
                             "step": m.step}
    if bot:
        entry["bot"] = bot
    if m.buttons:
        entry["buttons"] = [{"title": b.title, "payload": b.payload, "url": b.url, "number": b.number}
                            for b in m.buttons]
    if m.list is not None:
        entry["list"] = {
            "button": m.list.button, "header": m.list.header, "footer": m.list.footer,
            "sections": [{"title": t, "rows": [{"id": r.id, "title": r.title, "description": r.description,
                                                "number": r.number} for r in rows]}
                         for t, rows in m.list.sections],
        }
    if m.attachments:
        entry["attachments"] = [{"kind": a.kind, "url": a.url, "name": a.name} for a in m.attachments]
    if m.template:
        entry["template"] = m.template
        if m.params is not None:
            entry["template_params"] = m.params
    return entry


def internal_entry(m: fx.InternalMessage, at: float) -> dict[str, Any]:
    return {"role": "internal", "text": m.text, "to": list(m.to), "at": at}


def system_entry(text: str, at: float, **data: Any) -> dict[str, Any]:
    return {"role": "system", "text": text, "at": at, **data}
