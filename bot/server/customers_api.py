"""``/api/customers``: the customers list of ``/live`` (roles ``support`` and ``admin``).

The embedded CRM's contacts as a seller sees them: in two sections (``status=current`` has
ordered, ``potential`` has not), searched by name, phone or e-mail (``q``), filtered by
``temperature``, ``tag`` (repeatable: every tag) and ``responsible`` through the CRM's indexes
(``crm_bridge/indexes.py``: no scan of every contact), newest first (one time: by id), paged with
``before`` and ``before_id`` (the ``next_before`` and ``next_before_id`` of the previous page: its
last row's time and id, a cursor that stays put while customers change). Each row carries the
contact's first note (highest priority, then newest) and how many orders it has
(``Shop.order_counts``). The card is edited
through ``/api/crm/contacts/{id}``; ``GET /api/customers/{id}/conversations`` lists the chats of
the contact's channel identities.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from crm_bridge.card import STATUSES

from ..errors import CrmRejected
from ..inputs import holds_control
from ..store.indexes import ConversationIndex
from ..store.keys import ID_FIELDS, conversation_id
from .crm_api import embedded_directory
from .http import MAX_TIMESTAMP, HttpError, error, json_answer, query_number, require
from .keys import SERVICES
from .views import summary

log = logging.getLogger("salesbot.server.customers")
routes = web.RouteTableDef()
#: The largest page of customers (each row costs a note and an order count).
MAX_LIMIT = 100
#: Limits of the query's texts: a search, a tag, a user id.
MAX_Q, MAX_TAG, MAX_TAGS, MAX_USER = 200, 100, 10, 64
#: At most this many conversations of one contact are listed (a contact has a few channels).
MAX_CONVERSATIONS = 50


def _bad(request: web.Request, name: str, message: str) -> HttpError:
    log.warning("customers.bad_query", extra={"path": request.path, "parameter": name})
    return HttpError(400, "bad_query", message, [{"parameter": name}])


def _text(request: web.Request, name: str, value: str, max_len: int, *, strip: bool = True) -> str:
    if len(value) > max_len or holds_control(value):
        raise _bad(request, name, f"{name} is at most {max_len} characters, without control characters")
    return value.strip() if strip else value


def _filters(request: web.Request) -> dict[str, Any]:
    q = request.query
    status = q.get("status") or None
    if status is not None and status not in STATUSES:
        raise _bad(request, "status", f"status is one of {', '.join(STATUSES)}")
    tags = [_text(request, "tag", t, MAX_TAG) for t in q.getall("tag", []) if t.strip()]
    if len(tags) > MAX_TAGS:
        raise _bad(request, "tag", f"at most {MAX_TAGS} tags")
    return {"status": status, "temperature": _text(request, "temperature", q.get("temperature", ""), 32) or None,
            "tag": tags, "responsible": _text(request, "responsible", q.get("responsible", ""), MAX_USER) or None}


@routes.get("/api/customers")
async def list_customers(request: web.Request) -> web.Response:
    require(request, "support")
    directory = embedded_directory(request)
    filters = _filters(request)
    search = _text(request, "q", request.query.get("q", ""), MAX_Q) or None
    limit = int(query_number(request, "limit", 50, minimum=1, maximum=MAX_LIMIT, integer=True, clamp=True))
    before = query_number(request, "before", None, minimum=0, maximum=MAX_TIMESTAMP)
    # the previous page's last id, as it gave it (not stripped): the customers of its time after
    # that one (without it, an older client's cursor: only those written earlier)
    before_id = _text(request, "before_id", request.query.get("before_id", ""), MAX_USER, strip=False) or None
    try:
        rows, total = await directory.search("contact", q=search, filters=filters, limit=limit + 1, before=before,
                                             before_id=before_id)
    except CrmRejected as exc:
        log.warning("customers.bad_filter", extra={"path": request.path, "reason": str(exc)})
        return error(400, "bad_query", str(exc))
    more = len(rows) > limit
    rows = rows[:limit]
    last = rows[-1] if more and rows else None  # a row no recency index knows: listed as written at 0
    next_before = (last.get("updated_at") or 0.0) if last is not None else None
    next_before_id = str(last["id"]) if last is not None else None
    if filters["responsible"]:  # a write racing the upgrade may leave a stale member: not shown
        rows = [r for r in rows if str(r.get("responsible") or "") == filters["responsible"]]
    ids = [str(r["id"]) for r in rows]
    notes = await directory.crm.notes.firsts("contact", ids)
    counts = await request.app[SERVICES].shop.order_counts(ids) if ids else {}
    for row in rows:
        row["last_note"] = notes.get(str(row["id"]))
        row["orders"] = int(counts.get(str(row["id"]), 0))
    return json_answer({"customers": rows, "total": total, "next_before": next_before,
                        "next_before_id": next_before_id})


@routes.get("/api/customers/{id}/conversations")
async def customer_conversations(request: web.Request) -> web.Response:
    """The conversations of the contact's channel identities, most recent activity first."""
    require(request, "support")
    directory = embedded_directory(request)
    cid = request.match_info["id"]
    if len(cid) > MAX_USER or not await directory.exists("contact", cid):
        return error(404, "not_found", f"no customer {cid[:MAX_USER]!r}")
    identities = (await directory.crm.identities(cid))[:MAX_CONVERSATIONS]
    ids = [conversation_id(channel, account, external) for channel, account, external in identities]
    metas = await ConversationIndex(directory.redis).metas(ids)
    found = [summary(c, m) for c, m in zip(ids, metas, strict=True) if set(m) - set(ID_FIELDS)]  # gone: id only
    found.sort(key=lambda s: -(s["last_activity"] or 0))
    return json_answer({"conversations": found})


def setup(app: web.Application) -> None:
    app.add_routes(routes)
