"""Transcript entries planned as Bot API calls: inline keyboards, captions, file references.

A call's parameters are plain JSON (the Bot API's own shapes: ``InlineKeyboardMarkup`` is
``{"inline_keyboard": [[{"text", "callback_data" | "url"}]]}``), sent as they are."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from ..base import Capabilities
from ..render import ListMenu, Rendered, render
from .updates import FILE_SCHEME, NUMBER_TOKEN

CALLBACK_DATA_MAX = 64  # bytes
CAPTION_MAX = 1024

CAPABILITIES = Capabilities(
    max_buttons=10, button_title_max=64, payload_max_bytes=CALLBACK_DATA_MAX,
    lists=True, max_list_rows=100, list_title_max=64, list_description_max=120, list_button_max=64,
    url_buttons=True, quick_replies=False, text_max=4096,
    attachments=frozenset({"image", "video", "audio", "voice", "document"}), templates=False, mixed_buttons=True,
)

_SEND_METHOD = {"image": "sendPhoto", "video": "sendVideo", "audio": "sendAudio", "voice": "sendVoice",
                "document": "sendDocument"}
_FILE_FIELD = {"sendPhoto": "photo", "sendVideo": "video", "sendAudio": "audio", "sendVoice": "voice",
               "sendDocument": "document"}


def _fits(data: str) -> bool:
    return 0 < len(data.encode("utf-8")) <= CALLBACK_DATA_MAX and not NUMBER_TOKEN.match(data)


def _numbers(entry: Mapping[str, Any]) -> dict[str, int]:
    """payload / row id -> the number the interpreter answers to."""
    out: dict[str, int] = {}
    replies = [b for b in entry.get("buttons") or () if b.get("payload")]
    for i, b in enumerate(replies, 1):
        out.setdefault(str(b["payload"]), int(b.get("number") or i))
    rows = [r for s in (entry.get("list") or {}).get("sections") or () for r in s.get("rows") or ()]
    for i, r in enumerate(rows, 1):
        out.setdefault(str(r["id"]), int(r.get("number") or i))
    return out


def _callback(token: str, numbers: Mapping[str, int], position: int) -> str:
    return token if _fits(token) else f"~{numbers.get(token, position)}"


Button = dict[str, str]  # an InlineKeyboardButton: {"text", "callback_data"} or {"text", "url"}


def _keyboard(part: Rendered, numbers: Mapping[str, int]) -> dict[str, list[list[Button]]] | None:
    """The part's ``InlineKeyboardMarkup``, or None."""
    rows: list[list[Button]] = []
    if part.menu is not None:
        n = 0
        for _title, section in part.menu.sections:
            for row in section:
                n += 1
                rows.append([{"text": row.title, "callback_data": _callback(row.id, numbers, n)}])
    elif part.buttons:
        buttons = [{"text": b.title, "callback_data": _callback(b.payload, numbers, i)}
                   for i, b in enumerate(part.buttons, 1)]
        if len(buttons) <= 3 and sum(len(b.title) for b in part.buttons) <= 30:
            rows.append(buttons)
        else:
            rows.extend([b] for b in buttons)
    for link in part.links:
        rows.append([{"text": link.title, "url": link.url}])
    return {"inline_keyboard": rows} if rows else None


def _menu_text(text: str, menu: ListMenu) -> str:
    lines = [menu.header] if menu.header else []
    if text:
        lines.append(text)
    described = [(t, r) for t, rows in menu.sections for r in rows if r.description]
    if described:
        detail = []
        for title, rows in menu.sections:
            if title and len(menu.sections) > 1:
                detail.append(title)
            detail.extend(f"• {r.title} — {r.description}" if r.description else f"• {r.title}" for r in rows)
        lines.append("\n".join(detail))
    if menu.footer:
        lines.append(menu.footer)
    return "\n\n".join(lines) or menu.button


def _file_ref(url: str) -> str | None:
    """What ``sendPhoto`` & co. may be given: an http(s) URL or a Telegram file id, never a path."""
    if url.startswith(FILE_SCHEME):
        ref = url[len(FILE_SCHEME):]
    elif urlsplit(url).scheme in ("http", "https") and urlsplit(url).netloc:
        ref = url
    else:
        return None
    return None if os.path.exists(ref) else ref  # PTB would upload a local file of that name


def chat_param(external_id: str) -> int | str:
    """``chat_id`` for the Bot API: a number, or a channel's @username."""
    try:
        return int(external_id)
    except ValueError:
        return external_id  # @channelusername


Call = tuple[str, dict[str, Any]]


def plan(message: Mapping[str, Any], caps: Capabilities = CAPABILITIES) -> list[Call]:
    """The Bot API calls (method, parameters without chat_id) that deliver one transcript entry."""
    entry = dict(message)
    numbers = _numbers(entry)
    calls: list[Call] = []
    parts = render(entry, caps)
    for part in parts:
        markup = _keyboard(part, numbers)
        text = _menu_text(part.text, part.menu) if part.menu is not None else part.text
        media: list[Call] = []
        for a in part.attachments:
            ref = _file_ref(str(a.get("url") or ""))
            if ref is None:  # not something Telegram may fetch: a link in the text instead
                text = (text + f"\n{a.get('name') or a.get('kind')}: {a.get('url')}").strip()
                continue
            method = _SEND_METHOD[a["kind"]]
            media.append((method, {_FILE_FIELD[method]: ref}))
        text = text[: caps.text_max]
        if len(media) == 1 and len(text) <= CAPTION_MAX:
            method, params = media[0]
            if text:
                params["caption"] = text
            if markup is not None:
                params["reply_markup"] = markup
            calls.append((method, params))
            continue
        calls.extend(media)
        if text or markup is not None:
            params = {"text": text or "⬇"}
            if markup is not None:
                params["reply_markup"] = markup
            calls.append(("sendMessage", params))
    return calls

