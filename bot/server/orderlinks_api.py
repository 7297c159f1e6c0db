"""Quick-order links over HTTP (role ``support`` and up; docs/customers.md).

- ``POST /api/customers/{id}/order-link`` ``{"expires"?: "7d" | seconds}`` → 201 ``{"id", "url",
  "expires_at"}``: a new link for the embedded CRM's contact ``id``.
- ``GET /api/customers/{id}/order-links``: the customer's links, newest first, with their status
  (``active`` with its URL, ``expired``, ``revoked``).
- ``DELETE /api/customers/{id}/order-links/{link}``: revokes the link (the page refuses it at
  once); revoking twice keeps the first time.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from ..builder.durations import DurationError, parse_duration
from ..errors import OrderLinkRejected
from ..runtime.orderlinks import ID, OrderLinks
from .http import HttpError, error, json_body, require
from .keys import SERVICES

log = logging.getLogger("salesbot.server.orderlinks")
routes = web.RouteTableDef()
_USAGE = 'the body is empty or {"expires": "7d" | seconds} (1 hour to 365 days)'


def _links(request: web.Request) -> OrderLinks:
    links = request.app[SERVICES].order_links
    if links is None:  # pragma: no cover - every server builds it
        raise HttpError(409, "order_links_disabled", "this server has no quick-order links")
    return links


async def _customer(request: web.Request) -> str:
    """The path's customer id, once it is known to be a contact of the embedded CRM."""
    customer = request.match_info["id"]
    directory = request.app[SERVICES].directory
    if directory is None:
        raise HttpError(409, "embedded_crm_disabled", "quick-order links need the embedded CRM")
    if not ID.match(customer) or await directory.get("contact", customer) is None:
        raise HttpError(404, "not_found", "no such customer")
    return customer


async def _expires(request: web.Request) -> int | None:
    if not await request.read():
        return None
    body = await json_body(request)
    if not isinstance(body, dict) or set(body) - {"expires"}:
        log.warning("order_link.bad_request", extra={"reason": "shape"})
        raise HttpError(400, "bad_request", _USAGE)
    raw: Any = body.get("expires")
    if raw is None:
        return None
    try:
        if isinstance(raw, float) and not raw.is_integer():
            raise DurationError("whole seconds")
        return parse_duration(raw)
    except DurationError:
        log.warning("order_link.bad_request", extra={"reason": "expires"})
        raise HttpError(400, "bad_request", _USAGE, [{"field": "expires"}]) from None


@routes.post("/api/customers/{id}/order-link")
async def create(request: web.Request) -> web.Response:
    who = require(request, "support", "operator")
    customer = await _customer(request)
    expires = await _expires(request)
    try:
        link = await _links(request).create(customer, expires=expires, by=who.name, source="api")
    except OrderLinkRejected as exc:
        log.warning("order_link.rejected", extra={"customer": customer, "error": str(exc)})
        return error(422, "invalid", str(exc))
    log.info("order_link.created", extra={"customer": customer, "link": link["id"]})
    return web.json_response(link, status=201)


@routes.get("/api/customers/{id}/order-links")
async def listing(request: web.Request) -> web.Response:
    require(request, "support", "operator")
    customer = await _customer(request)
    return web.json_response({"links": await _links(request).list(customer)})


@routes.delete("/api/customers/{id}/order-links/{link}")
async def revoke(request: web.Request) -> web.Response:
    who = require(request, "support", "operator")
    customer = await _customer(request)
    link = await _links(request).revoke(customer, request.match_info["link"], by=who.name)
    if link is None:
        return error(404, "not_found", "this customer has no such link")
    log.info("order_link.revoked", extra={"customer": customer, "link": link["id"]})
    return web.json_response(link)
