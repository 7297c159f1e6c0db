"""The live chat channel: what a visitor sees of a transcript, how a visitor's message becomes a
conversation event, and the widget's files. Its HTTP routes (the widget page, ``POST``, long
poll, WebSocket) are in ``bot.server.livechat``: they are the server's, like every route.

A browser session (an id the widget keeps in localStorage) is one conversation:
``livechat:<account>:<session>``. Customer messages carry a ``client_msg_id`` that dedupes
retries. Bot messages reach the widget through the conversation's transcript, whose entries
have increasing numbers ``n``: a client that reconnects sends the last ``n`` it saw and gets
everything after it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from importlib import resources
from typing import Any

from ..engine import events as ev
from ..inputs import BadInput, clean_optional
from ..store import codec
from ..store.conversations import ConversationStore
from ..store.keys import conversation_id
from .host import ChannelHost, Delivered

CHANNEL = "livechat"
_SESSION = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
#: Transcript roles a customer sees (never internal notes or system lines).
VISIBLE_ROLES = frozenset({"user", "bot", "human"})
MAX_TEXT = 4096
MAX_NAME = 100
#: Rows read from the transcript per round trip.
_PAGE = 500


def widget_file(name: str) -> str:
    """A file of the widget (``static/``); ``FileNotFoundError`` if there is none."""
    return resources.files("bot.channels").joinpath("static", name).read_text(encoding="utf-8")


def valid_session(session: object) -> bool:
    """A session id names a conversation: 8-64 letters, digits, ``_`` or ``-``."""
    return isinstance(session, str) and _SESSION.match(session) is not None


def conversation(account: str, session: str) -> str:
    return conversation_id(CHANNEL, account, session)


def public_entry(n: int, entry: dict[str, Any]) -> dict[str, Any] | None:
    """What the widget may see of a transcript entry (None: not for the customer)."""
    if entry.get("role") not in VISIBLE_ROLES:
        return None
    out = {"n": n, "role": entry["role"], "text": entry.get("text", ""), "at": entry.get("at")}
    for key in ("buttons", "list", "attachments", "client_msg_id", "kind"):
        if entry.get(key) is not None:
            out[key] = entry[key]
    return out


async def read_after(store: ConversationStore, cid: str, after: int) -> tuple[list[dict[str, Any]], int]:
    """Every customer-visible entry after ``after`` (read in pages until the log is exhausted)."""
    out = []
    last = after
    while True:
        rows = await store.read_log(cid, last, _PAGE)
        for n, blob in rows:
            last = n
            entry = public_entry(n, codec.unpack(blob))
            if entry is not None:
                out.append(entry)
        if len(rows) < _PAGE:
            return out, last


def visitor_fields(body: Mapping[str, Any]) -> dict[str, str | None]:
    """The visitor's strings, cleaned by ``bot.inputs.clean_text`` (control characters out,
    NFC, length capped); ``BadInput`` names the field that is not a string or is too long."""
    limits = {"text": MAX_TEXT, "payload": 256, "client_msg_id": 128}
    out: dict[str, str | None] = {}
    for name, limit in limits.items():
        value = body.get(name)
        if isinstance(value, str) and len(value) > limit:
            raise BadInput(name, f"a string of at most {limit} characters")
        out[name] = clean_optional(value, name, limit=limit)
    if body.get("text") is not None and out["text"] is None:
        out["text"] = ""  # nothing but control characters: an empty text, as "" would be
    out["name"] = clean_optional(body.get("name"), "name", limit=MAX_NAME, line=True)
    return out


async def deliver(host: ChannelHost, account: str, session: str, fields: Mapping[str, str | None]) -> Delivered:
    """Deliver a visitor's message (``visitor_fields``) to the session's conversation."""
    text, payload, client_msg_id = fields["text"], fields["payload"], fields["client_msg_id"]
    meta = {"channel": CHANNEL, "account": account, "external_id": session}
    if fields["name"]:
        meta["name"] = fields["name"]
    event = ev.InboundMessage(text=text or "", payload=payload, message_id=client_msg_id,
                              kind="button" if payload else "text", greeting=host.greeting_bot(account))
    return await host.conversations.deliver(
        conversation(account, session), event, dedupe_id=f"lc:{client_msg_id}" if client_msg_id else None,
        meta=meta, entry_extra={"client_msg_id": client_msg_id} if client_msg_id else None)
