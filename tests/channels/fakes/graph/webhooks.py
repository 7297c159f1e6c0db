"""Builders of the webhook payloads Meta posts (WhatsApp messages and statuses, Instagram and
Messenger messaging events, comments), shaped as the documentation shows them."""

from __future__ import annotations

import itertools
import time
from typing import Any

from .api import GraphFake
from .meta import DISPLAY_NUMBER, IG_ID, PAGE_ID, PHONE_NUMBER_ID, WABA_ID

_mids = itertools.count(1)


def wa_webhook(*, messages: list[dict[str, Any]] | None = None, statuses: list[dict[str, Any]] | None = None,
               contacts: list[dict[str, Any]] | None = None, phone_number_id: str = PHONE_NUMBER_ID) -> dict[str, Any]:
    value: dict[str, Any] = {"messaging_product": "whatsapp",
                             "metadata": {"display_phone_number": DISPLAY_NUMBER, "phone_number_id": phone_number_id}}
    if contacts:
        value["contacts"] = contacts
    if messages:
        value["messages"] = messages
    if statuses:
        value["statuses"] = statuses
    return {"object": "whatsapp_business_account",
            "entry": [{"id": WABA_ID, "changes": [{"value": value, "field": "messages"}]}]}


def wa_message(sender: str, kind: str, content: dict[str, Any], *, name: str = "Sheena Nelson",
               mid: str | None = None, context: str | None = None) -> dict[str, Any]:
    msg: dict[str, Any] = {"from": sender, "id": mid or f"wamid.IN{next(_mids):010d}",
                           "timestamp": str(int(time.time())), "type": kind, kind: content}
    if context:
        msg["context"] = {"from": DISPLAY_NUMBER, "id": context}
    return wa_webhook(messages=[msg], contacts=[{"profile": {"name": name}, "wa_id": sender}])


def wa_text(sender: str, text: str, **kw: Any) -> dict[str, Any]:
    return wa_message(sender, "text", {"body": text}, **kw)


def wa_button_reply(sender: str, payload: str, title: str, **kw: Any) -> dict[str, Any]:
    return wa_message(sender, "interactive", {"type": "button_reply", "button_reply": {"id": payload, "title": title}},
                      **kw)


def wa_list_reply(sender: str, row_id: str, title: str, description: str = "", **kw: Any) -> dict[str, Any]:
    reply = {"id": row_id, "title": title, **({"description": description} if description else {})}
    return wa_message(sender, "interactive", {"type": "list_reply", "list_reply": reply}, **kw)


def wa_template_button(sender: str, payload: str, text: str, **kw: Any) -> dict[str, Any]:
    return wa_message(sender, "button", {"payload": payload, "text": text}, **kw)


def wa_image(sender: str, media_id: str, caption: str = "", **kw: Any) -> dict[str, Any]:
    content = {"mime_type": "image/jpeg", "sha256": "c2hhMjU2", "id": media_id}
    if caption:
        content["caption"] = caption
    return wa_message(sender, "image", content, **kw)


def wa_status(wamid: str, recipient: str, status: str, errors: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return wa_webhook(statuses=[GraphFake.wa_status_value(wamid, recipient, status, errors)])


def messaging_webhook(obj: str, events: list[dict[str, Any]], entry_id: str) -> dict[str, Any]:
    return {"object": obj, "entry": [{"id": entry_id, "time": int(time.time() * 1000), "messaging": events}]}


def dm(sender: str, recipient: str, *, text: str | None = None, quick_reply: str | None = None,
       attachments: list[dict[str, Any]] | None = None, mid: str | None = None, echo: bool = False) -> dict[str, Any]:
    message: dict[str, Any] = {"mid": mid or f"aWdfZAG1{next(_mids):010d}"}
    if text is not None:
        message["text"] = text
    if quick_reply is not None:
        message["quick_reply"] = {"payload": quick_reply}
    if attachments:
        message["attachments"] = attachments
    if echo:
        message["is_echo"] = True
    return {"sender": {"id": sender}, "recipient": {"id": recipient}, "timestamp": int(time.time() * 1000),
            "message": message}


def ig_dm(sender: str, **kw: Any) -> dict[str, Any]:
    return messaging_webhook("instagram", [dm(sender, IG_ID, **kw)], IG_ID)


def ig_echo(customer: str, text: str) -> dict[str, Any]:
    return messaging_webhook("instagram", [dm(IG_ID, customer, text=text, echo=True)], IG_ID)


def ig_story_mention(sender: str,
                     url: str = "https://lookaside.fbsbx.com/ig_messaging_cdn/?asset_id=1") -> dict[str, Any]:
    return ig_dm(sender, attachments=[{"type": "story_mention", "payload": {"url": url}}])


def ig_comment(author: str, comment_id: str, text: str, *, username: str = "ana",
               media_id: str = "17900000000000001") -> dict[str, Any]:
    return {"object": "instagram", "entry": [{"id": IG_ID, "time": int(time.time()), "changes": [{
        "field": "comments", "value": {"id": comment_id, "from": {"id": author, "username": username},
                                       "text": text, "media": {"id": media_id, "media_product_type": "FEED"}}}]}]}


def ig_read(sender: str, mid: str) -> dict[str, Any]:
    return messaging_webhook("instagram", [{"sender": {"id": sender}, "recipient": {"id": IG_ID},
                                            "timestamp": int(time.time() * 1000), "read": {"mid": mid}}], IG_ID)


def fb_dm(sender: str, **kw: Any) -> dict[str, Any]:
    return messaging_webhook("page", [dm(sender, PAGE_ID, **kw)], PAGE_ID)


def fb_postback(sender: str, payload: str, title: str, mid: str | None = None) -> dict[str, Any]:
    return messaging_webhook("page", [{"sender": {"id": sender}, "recipient": {"id": PAGE_ID},
                                       "timestamp": int(time.time() * 1000),
                                       "postback": {"mid": mid or f"m_pb{next(_mids):010d}", "title": title,
                                                    "payload": payload}}], PAGE_ID)


def fb_delivery(sender: str, mids: list[str]) -> dict[str, Any]:
    return messaging_webhook("page", [{"sender": {"id": sender}, "recipient": {"id": PAGE_ID},
                                       "timestamp": int(time.time() * 1000),
                                       "delivery": {"mids": mids, "watermark": int(time.time() * 1000)}}], PAGE_ID)

