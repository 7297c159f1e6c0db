"""``GET /api/automations/{id}/counts``: how often each rule and trigger of an automation document
fired, acted, waits… — the counters the lead loop keeps (``sb:automations:{<doc id>}:counts``,
fields ``<rule or trigger id>:<outcome>``). Read by the pipeline view of ``/live``
(docs/dashboard.md, "Pipeline"); every count is 0 until the lead loop has recorded one.
"""

from __future__ import annotations

import logging
import re

from aiohttp import web

from ..store import replies
from ..store.versions import DocumentNotFound
from .automation_docs import AutomationDocuments
from .http import HttpError, require
from .keys import SERVICES

log = logging.getLogger("salesbot.automations")
routes = web.RouteTableDef()
#: A document id as documents are named; anything else cannot be one (404 without a lookup).
DOC_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
#: The most counter fields answered (a document has at most a few hundred rules and triggers).
MAX_FIELDS = 10_000


async def active_version(request: web.Request, doc_id: str, *, event: str) -> int:
    """The active version of automation document ``doc_id``; a 404 (``HttpError``) for an id that
    cannot be one (logged as ``event``) or no such document."""
    if not DOC_ID.fullmatch(doc_id):
        log.warning(event, extra={"automation": doc_id[:80]})
        raise HttpError(404, "not_found", "no such automation document")
    services = request.app[SERVICES]
    try:
        version, _doc = await AutomationDocuments.of(services.redis, services.crm, services.bots).documents.document(
            doc_id)
    except DocumentNotFound as exc:
        raise HttpError(404, "not_found", str(exc)) from None
    return version


def counts_key(doc_id: str) -> str:
    """The counters hash of a document (ISSUE12 "Counters"), in the document's own hash tag."""
    return f"sb:automations:{{{doc_id}}}:counts"


@routes.get("/api/automations/{id}/counts")
async def automation_counts(request: web.Request) -> web.Response:
    require(request, "support", "operator")
    doc_id = request.match_info["id"]
    version = await active_version(request, doc_id, event="automations.counts_bad_id")
    services = request.app[SERVICES]
    raw = await services.redis.hgetall(counts_key(doc_id))
    counts: dict[str, dict[str, int]] = {}
    for name, value in list(raw.items())[:MAX_FIELDS]:
        rule, sep, outcome = replies.text(name).rpartition(":")
        try:
            n = int(value)
        except ValueError:
            continue  # not a counter: nothing the lead loop wrote
        if sep and rule:
            counts.setdefault(rule, {})[outcome] = n
    return web.json_response({"id": doc_id, "version": version, "counts": counts})
