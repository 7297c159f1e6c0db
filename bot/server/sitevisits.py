"""``site.visit`` and ``site.returning_visitor``: the live chat widget says it was opened.

The widget posts the page it is on when it loads (``POST /chat/<account>/visits``). Only a
visitor the CRM knows counts: the session's conversation has a lead (the visitor chatted
before). An anonymous page view stores nothing and creates no contact or lead, so a crawler
or a flood of page views cannot fill the CRM.

For a known visitor:

- ``site.visit`` (``url``) once per page and visit: a reload of the same page within the
  visit is a duplicate on the lead queue (the event id is the visit and the page).
- A *visit* ends after ``VISIT_GAP`` (30 minutes) without the widget opening; the next open
  starts a new one, and that visitor is returning: ``site.returning_visitor`` (``url``: the
  page it came back to), once per visit. The visit (a random id) and its last open are kept
  per session (``sb:lc:seen:<account>:<session>``, ``SEEN_TTL``); before the first open, the
  conversation's last message stands in for the last open.

The event ids hold a hash of the session, never the session (a credential of the visitor).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections.abc import Callable

from yarl import URL

from ..channels.livechat import conversation
from ..inputs import BadInput
from ..runtime.leads import LeadService
from ..store import codec
from ..store.conversations import ConversationStore

VISIT_GAP = 30 * 60
SEEN_TTL = 90 * 86400
URL_MAX = 2048
_HTTP = re.compile(r"^https?://", re.IGNORECASE)
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def page_url(value: object) -> str:
    """The page's address: an ``http(s)`` URL with a host, at most ``URL_MAX`` characters, no
    control characters; ``BadInput`` (field ``url``) otherwise."""
    if not isinstance(value, str) or not value:
        raise BadInput("url", "the page's address (a string) is required")
    if len(value) > URL_MAX:
        raise BadInput("url", f"at most {URL_MAX} characters")
    if _CONTROL.search(value):
        raise BadInput("url", "control characters are not allowed")
    if not _HTTP.match(value):
        raise BadInput("url", "an http or https address")
    try:
        host = URL(value).host
    except ValueError:
        host = None
    if not host:
        raise BadInput("url", "an http or https address with a host")
    return value


def seen_key(account: str, session: str) -> str:
    return f"sb:lc:seen:{account}:{session}"


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class SiteVisits:
    """Turns a widget opening into the lead's site events (see the module docstring)."""

    def __init__(self, store: ConversationStore, leads: LeadService, *, clock: Callable[[], float] = time.time,
                 gap: float = VISIT_GAP) -> None:
        self.store = store
        self.leads = leads
        self.clock = clock
        self.gap = gap

    async def visit(self, account: str, session: str, url: str) -> list[str]:
        """Queue the events of this opening; returns the types queued (not duplicates)."""
        cid = conversation(account, session)
        meta = await self.store.meta(cid)
        lead = meta.get("lead_id")
        if not lead:
            return []
        now = self.clock()
        redis = self.store.redis
        key = seen_key(account, session)
        found, seen = await redis.hmget(key, ["visit", "last"])
        last = _number(seen)
        if last is None:
            last = await self._last_message(cid)
        new_visit = last is None or now - last >= self.gap
        known = found.decode() if isinstance(found, bytes) else found if isinstance(found, str) else None
        visit = known if known and not new_visit else secrets.token_hex(8)
        pipe = redis.pipeline(transaction=True)
        pipe.hset(key, mapping={"visit": visit, "last": repr(now)})
        pipe.expire(key, SEEN_TTL)
        await pipe.execute()
        visit = f"visit:{_hash(f'{account}:{session}')}:{visit}"
        contact = meta.get("contact_id") or None
        events = [self.leads.event("site.visit", lead, data={"url": url}, id_=f"{visit}:{_hash(url)}",
                                   contact_id=contact, source="site")]
        if new_visit and last is not None:
            events.append(self.leads.event("site.returning_visitor", lead, data={"url": url},
                                           id_=f"{visit}:returning", contact_id=contact, source="site"))
        queued = []
        for event in events:
            accepted = await self.leads.deliver(event, background=True)
            if not accepted.duplicate:
                queued.append(event.type)
        return queued

    async def _last_message(self, cid: str) -> float | None:
        """When the conversation last had a message (None: never)."""
        rows = await self.store.tail_log(cid, 1)
        if not rows:
            return None
        entry = codec.unpack(rows[-1][1])
        return _number(entry.get("at")) if isinstance(entry, dict) else None


def _number(value: object) -> float | None:
    if isinstance(value, bytes):
        value = value.decode()
    try:
        number = float(value) if isinstance(value, (str, int, float)) else None
    except ValueError:
        return None
    return number if number is not None and number == number and abs(number) != float("inf") else None
