"""One renderer for every channel: a transcript entry -> the messages a channel can show.

Rules (``Capabilities`` decide):

* up to ``max_buttons`` reply buttons are sent as buttons (titles cut to ``button_title_max``);
* more options than that become a native list when the channel has one and they fit
  (WhatsApp: 4–10 options), otherwise a numbered menu appended to the text — the customer may
  answer with the number, the title or a synonym, which the interpreter matches;
* URL buttons become link buttons where supported, else "title: url" lines;
* a ``list`` step is a native list where supported, else a numbered menu;
* text longer than ``text_max`` is split at paragraph, line, sentence or word boundaries; the
  buttons go with the last part.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .base import Capabilities


@dataclass(frozen=True, slots=True)
class Button:
    title: str
    payload: str


@dataclass(frozen=True, slots=True)
class Link:
    title: str
    url: str


@dataclass(frozen=True, slots=True)
class ListRow:
    id: str
    title: str
    description: str | None = None


@dataclass(frozen=True, slots=True)
class ListMenu:
    button: str
    sections: tuple[tuple[str, tuple[ListRow, ...]], ...]
    header: str | None = None
    footer: str | None = None


@dataclass(frozen=True, slots=True)
class Rendered:
    """One platform message: text plus at most one kind of interactive part."""

    text: str
    buttons: tuple[Button, ...] = ()
    links: tuple[Link, ...] = ()
    menu: ListMenu | None = None
    attachments: tuple[dict[str, Any], ...] = ()
    template: str | None = None
    template_params: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(1, limit - 1)] + "…"


def split_text(text: str, limit: int) -> list[str]:
    """Split ``text`` into parts of at most ``limit`` characters at natural boundaries."""
    if len(text) <= limit:
        return [text]
    parts: list[str] = []
    rest = text
    while len(rest) > limit:
        window = rest[:limit]
        cut = -1
        for sep in ("\n\n", "\n", ". ", "! ", "? ", " "):
            pos = window.rfind(sep)
            if pos > limit // 3:
                cut = pos + len(sep)
                break
        if cut <= 0:
            cut = limit
        parts.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    if rest:
        parts.append(rest)
    return parts


def _numbered(titles: list[str]) -> str:
    return "\n".join(f"{i}. {t}" for i, t in enumerate(titles, 1))


def render(entry: dict[str, Any], caps: Capabilities) -> list[Rendered]:
    """The platform messages for one transcript entry (a bot's or a person's message)."""
    text = entry.get("text") or ""
    attachments = tuple(a for a in entry.get("attachments") or () if a.get("kind") in caps.attachments)
    dropped = [a for a in entry.get("attachments") or () if a.get("kind") not in caps.attachments]
    for a in dropped:  # an attachment the channel cannot carry becomes a link in the text
        text += f"\n{a.get('name') or a.get('kind')}: {a.get('url')}"
    buttons_in = entry.get("buttons") or []
    replies = [b for b in buttons_in if b.get("payload")]
    links = [Link(b["title"], b["url"]) for b in buttons_in if b.get("url")]
    menu: ListMenu | None = None
    buttons: tuple[Button, ...] = ()
    suffix = ""
    list_in = entry.get("list")
    if list_in:
        rows = [r for s in list_in["sections"] for r in s["rows"]]
        if caps.lists and len(rows) <= caps.max_list_rows:
            menu = ListMenu(
                _cut(list_in["button"], caps.list_button_max),
                tuple((_cut(s["title"], caps.list_title_max),
                       tuple(ListRow(r["id"], _cut(r["title"], caps.list_title_max),
                                     _cut(r["description"], caps.list_description_max)
                                     if r.get("description") else None)
                             for r in s["rows"]))
                      for s in list_in["sections"]),
                list_in.get("header"), list_in.get("footer"))
        else:
            suffix = "\n\n" + _numbered([r["title"] for r in rows])
            if list_in.get("footer"):
                suffix += f"\n\n{list_in['footer']}"
    elif replies:
        fits = len(replies) <= caps.max_buttons  # links that cannot join them become text below
        if fits:
            buttons = tuple(Button(_cut(b["title"], caps.button_title_max), b["payload"]) for b in replies)
        elif caps.lists and len(replies) <= caps.max_list_rows:
            menu = ListMenu("Options", (("", tuple(ListRow(b["payload"], _cut(b["title"], caps.list_title_max))
                                                   for b in replies)),))
        else:
            suffix = "\n\n" + _numbered([b["title"] for b in replies])
    if links and not (caps.url_buttons and (caps.mixed_buttons or not (buttons or menu))):
        suffix += "\n" + "\n".join(f"{link.title}: {link.url}" for link in links)
        links = []
    full = (text + suffix).strip() if suffix else text
    parts = split_text(full, caps.text_max) if full else [""]
    out = [Rendered(p) for p in parts[:-1]]
    out.append(Rendered(parts[-1], buttons, tuple(links), menu, attachments,
                        entry.get("template"), entry.get("template_params")))
    return out
