"""Bot API updates (webhook bodies and ``getUpdates`` results) parsed into ``Inbound`` items."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from ..base import Inbound, InboundAttachment, MalformedWebhook

#: ``callback_data`` of an option whose payload did not fit: its number.
NUMBER_TOKEN = re.compile(r"^~(\d{1,4})$")
FILE_SCHEME = "tg-file:"  # an inbound file's reference: tg-file:<file_id> (resolve with getFile)
#: A ``Message``'s fields that say where and how it came, not what it holds: the first other
#: field of an ignored message names its type in the log.
_ENVELOPE = frozenset({
    "message_id", "message_thread_id", "date", "chat", "from", "sender_chat", "sender_boost_count",
    "sender_business_bot", "business_connection_id", "forward_origin", "is_topic_message", "is_automatic_forward",
    "reply_to_message", "external_reply", "quote", "reply_to_story", "via_bot", "edit_date", "has_protected_content",
    "is_from_offline", "media_group_id", "author_signature", "entities", "link_preview_options", "effect_id",
    "reply_markup", "has_media_spoiler", "show_caption_above_media", "caption_entities"})

log = logging.getLogger("salesbot.channels.telegram")


def _name(user: Mapping[str, Any] | None) -> str | None:
    if not user:
        return None
    name = " ".join(p for p in (user.get("first_name"), user.get("last_name")) if p)
    return name or user.get("username") or None


def _button_title(message: Mapping[str, Any] | None, data: str) -> str | None:
    markup = (message or {}).get("reply_markup") or {}
    for row in markup.get("inline_keyboard") or ():
        for button in row:
            if isinstance(button, dict) and button.get("callback_data") == data:
                return str(button.get("text") or "") or None
    return None


def _attachments(message: Mapping[str, Any]) -> tuple[InboundAttachment, ...]:
    def ref(obj: Mapping[str, Any]) -> str:
        return f"{FILE_SCHEME}{obj['file_id']}"

    out: list[InboundAttachment] = []
    if message.get("photo"):
        sizes = [p for p in message["photo"] if isinstance(p, dict) and p.get("file_id")]
        if sizes:
            best = max(sizes, key=lambda p: (p.get("width", 0) * p.get("height", 0), p.get("file_size", 0)))
            out.append(InboundAttachment("image", ref(best), None, "image/jpeg", best["file_id"]))
    for field_, kind in (("animation", "video"), ("video", "video"), ("video_note", "video"), ("audio", "audio"),
                         ("voice", "voice"), ("sticker", "sticker")):
        obj = message.get(field_)
        if isinstance(obj, dict) and obj.get("file_id"):
            out.append(InboundAttachment(kind, ref(obj), obj.get("file_name"), obj.get("mime_type"), obj["file_id"]))
    doc = message.get("document")
    if isinstance(doc, dict) and doc.get("file_id") and not message.get("animation"):
        out.append(InboundAttachment("document", ref(doc), doc.get("file_name"), doc.get("mime_type"), doc["file_id"]))
    loc = message.get("location")
    if isinstance(loc, dict) and "latitude" in loc and "longitude" in loc:
        out.append(InboundAttachment("location", f"geo:{loc['latitude']},{loc['longitude']}"))
    return tuple(out)


def parse_update(update: Any) -> list[Inbound]:
    """The normalised items of one Bot API ``Update`` (a JSON object)."""
    number = update.get("update_id") if isinstance(update, dict) else None
    if not isinstance(number, int) or isinstance(number, bool):
        raise MalformedWebhook("not a Telegram update (no integer update_id)")
    uid = str(number)
    try:
        if "message" in update:
            return _message_item(uid, update["message"])
        if "callback_query" in update:
            return _callback_item(uid, update["callback_query"])
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise MalformedWebhook(f"unreadable Telegram update: {type(exc).__name__}") from exc
    return []  # edited messages, channel posts, member updates, …: acknowledged, not for the flow


def _message_item(uid: str, message: Mapping[str, Any]) -> list[Inbound]:
    chat = message["chat"]
    chat_id = _chat_id(chat)
    user = message.get("from")
    text = message.get("text")
    if text is None:
        text = message.get("caption") or ""
    if not isinstance(text, str):
        raise TypeError("text")
    phone = None
    contact = message.get("contact")
    if isinstance(contact, dict) and contact.get("phone_number"):
        phone = str(contact["phone_number"])
        text = text or phone
    attachments = _attachments(message)
    if not text and not attachments:  # a service message (members, pins, timers) or content we do not
        _ignored(message)             # read (dice, poll, story): acknowledged, not a customer's words
        return []
    start = None
    if message.get("text"):
        head, _, rest = text.partition(" ")
        if head == "/start" or head.startswith("/start@"):
            start = rest.strip() or None
    return [Inbound("message", chat_id, dedupe_id=uid,
                    sender_id=str(user["id"]) if isinstance(user, dict) and "id" in user else None,
                    profile_name=_name(user) or _name(chat), phone=phone, text=text,
                    attachments=attachments, start_param=start)]


def _chat_id(chat: Mapping[str, Any]) -> str:
    """A chat's id: an integer in the Bot API, never a float, a bool or a string (``int(0.5)``
    and ``int(True)`` would answer chat 0 or 1)."""
    value = chat["id"]
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError("chat.id")
    return str(value)


def _ignored(message: Mapping[str, Any]) -> None:
    kind = next((key for key in message if key not in _ENVELOPE), "empty")
    log.info("webhook.ignored_message_type", extra={"channel": "telegram", "type": str(kind)[:40]})


def _callback_item(uid: str, query: Mapping[str, Any]) -> list[Inbound]:
    user = query.get("from") or {}
    message = query.get("message")
    chat = message["chat"] if isinstance(message, dict) and message.get("chat") else user
    chat_id = _chat_id(chat)
    data = query.get("data")
    if not isinstance(data, str):  # a game button (we send none): nothing for the flow
        return []
    title = _button_title(message, data)
    number = NUMBER_TOKEN.match(data)
    if number:  # the payload did not fit in callback_data: the option's number stands for it
        text, payload = number.group(1), None
    else:
        text, payload = title or data, data
    return [Inbound("message", chat_id, dedupe_id=uid, sender_id=str(user.get("id")) if user.get("id") else None,
                    profile_name=_name(user), text=text, payload=payload,
                    reply={"callback_query_id": str(query["id"])})]

