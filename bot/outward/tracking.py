"""E-mail tracking for ``send_email``: an open pixel and click redirects, signed.

An HTML e-mail sent for a lead gets a 1×1 image (``GET /t/o/<token>.gif``) before ``</body>``,
and the ``href`` of every ``<a>`` / ``<area>`` pointing to an ``http(s)`` address goes through
``GET /t/c/<token>``, which redirects there. Not rewritten: ``mailto:``, ``tel:``, anchors and
other schemes, the unsubscribe link and tracking links, addresses longer than
``URL_MAX``. Text parts are left as written: a reader sees the real address (a long redirect
looks like phishing), so a click in a text-only client is not counted.

The tokens are the unsubscribe links' (``SignedTokens``, HMAC-SHA256 with the ``[actions]
secret``), of kinds ``o`` (open) and ``c`` (click): lead, contact, a random message id and, for
a click, the address. The redirect goes only where a genuine token says (no open redirect) and
nobody can make one up for another lead. The routes (``bot.server.tracking``) turn a hit into
the lead's ``email.opened`` / ``email.link_clicked`` with an id derived from the message (and
the address), so the lead queue's 7-day dedupe makes every later open of one e-mail, and every
later click of one of its links, a duplicate.
"""

from __future__ import annotations

import hashlib
import html as htmllib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from yarl import URL

from .email import SignedTokens

OPEN, CLICK = "o", "c"
#: Longer addresses stay as written (the token would carry them whole).
URL_MAX = 2048
#: A token longer than this is not ours (a click token holds at most ``URL_MAX`` characters).
TOKEN_MAX = 4096
_TAG = re.compile(r"<(?:a|area)(?=[\s/>])(?:[^>\"']|\"[^\"]*\"|'[^']*')*>", re.IGNORECASE)
#: One attribute of a tag: its name and (quoted or not) value, as an HTML tokenizer reads them.
_ATTRIBUTE = re.compile(r"""[\s/]*([^\s"'>/=]+)(?:\s*=\s*("[^"]*"|'[^']*'|[^\s"'>]+))?""")
_HTTP = re.compile(r"^https?://[^\s/?#]", re.IGNORECASE)
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class Hit:
    """A genuine pixel or link token: whose e-mail, and where a click goes."""

    kind: str  # OPEN or CLICK
    lead_id: str
    contact_id: str
    message: str
    url: str = ""

    @property
    def event_type(self) -> str:
        return "email.opened" if self.kind == OPEN else "email.link_clicked"

    @property
    def event_id(self) -> str:
        """One per e-mail (open) or per e-mail and address (click): repeats are duplicates."""
        if self.kind == OPEN:
            return f"email:{self.message}:opened"
        return f"email:{self.message}:clicked:{hashlib.sha256(self.url.encode()).hexdigest()[:16]}"

    @property
    def data(self) -> dict[str, Any]:
        return {"url": self.url} if self.kind == CLICK else {}

    def opened(self) -> Hit:
        """The open a click implies (the pixel is often blocked): same message, same event id."""
        return Hit(OPEN, self.lead_id, self.contact_id, self.message)


def location(url: str) -> str | None:
    """The address as a ``Location`` header (ASCII: IDNA host, percent-encoded path), or None
    when it is not an ``http(s)`` address with a host that a link may be rewritten for."""
    if len(url) > URL_MAX or _HTTP.match(url) is None or _CONTROL.search(url) is not None:
        return None
    try:
        parsed = URL(url)
    except ValueError:
        return None
    return str(parsed) if parsed.host else None


def trackable(url: str) -> bool:
    return location(url) is not None


class EmailTracking:
    """Makes and reads the pixel and link tokens; rewrites an HTML body (see the module docstring)."""

    def __init__(self, tokens: SignedTokens, public_url: str, *, enabled: bool = True) -> None:
        self.tokens = tokens
        self.public_url = public_url.rstrip("/")
        #: ``[actions] email_tracking``: off, new e-mails are not rewritten and hits queue no
        #: event, but the links of e-mails already sent still redirect.
        self.enabled = enabled

    def pixel_url(self, lead_id: str, contact_id: str, message: str) -> str:
        token = self.tokens.dump({"k": OPEN, "l": lead_id, "c": contact_id, "m": message})
        return f"{self.public_url}/t/o/{token}.gif"

    def click_url(self, lead_id: str, contact_id: str, message: str, url: str) -> str:
        token = self.tokens.dump({"k": CLICK, "l": lead_id, "c": contact_id, "m": message, "u": url})
        return f"{self.public_url}/t/c/{token}"

    def instrument(self, body: str, *, lead_id: str, contact_id: str, message: str,
                   keep: Sequence[str] = ()) -> str:
        """The HTML with its links rewritten and the pixel added; ``keep``: address prefixes
        left alone (the unsubscribe link); tracking links are never wrapped twice."""
        from markupsafe import escape  # with the first e-mail (jinja2's own escaper), not at start

        own = (f"{self.public_url}/t/", *keep)

        def link(tag: re.Match[str]) -> str:
            text = tag.group(0)
            at = min(i for i in (text.find(c, 1) for c in " \t\n\r\f/>") if i > 0)
            for attribute in _ATTRIBUTE.finditer(text, at, len(text) - 1):
                raw = attribute.group(2)
                if attribute.group(1).lower() != "href" or raw is None:
                    continue
                url = htmllib.unescape(raw[1:-1] if raw[:1] in "\"'" else raw).strip()
                if not trackable(url) or url.startswith(own):
                    return text
                new = f'"{escape(self.click_url(lead_id, contact_id, message, url))}"'
                return text[:attribute.start(2)] + new + text[attribute.end(2):]
            return text

        body = _TAG.sub(link, body)
        pixel = (f'<img src="{escape(self.pixel_url(lead_id, contact_id, message))}" width="1" height="1" alt="" '
                 'style="display:block;width:1px;height:1px;border:0">')
        ends = list(_BODY_END.finditer(body))
        if not ends:
            return body + pixel
        at = ends[-1].start()
        return body[:at] + pixel + body[at:]

    def read(self, kind: str, token: str) -> Hit | None:
        """The hit of a genuine token of ``kind``; None for anything else."""
        if len(token) > TOKEN_MAX:
            return None
        data = self.tokens.load(token, kind)
        if data is None:
            return None
        lead, contact, message, url = data.get("l"), data.get("c"), data.get("m"), data.get("u", "")
        if not all(isinstance(v, str) for v in (lead, contact, message, url)) or not lead or not message:
            return None
        if kind == CLICK and not trackable(str(url)):
            return None
        return Hit(kind, str(lead), str(contact), str(message), str(url) if kind == CLICK else "")
