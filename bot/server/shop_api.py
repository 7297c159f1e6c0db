"""``/api/products`` and ``/api/orders``: the seller's catalogue and orders (docs/customers.md).

Roles: everyone with a token reads; admin and operator write products; support and up make and
change orders. Money is in major units as JSON numbers (``35.5`` EUR); a client never sets a
price: an order's prices are the catalogue's, computed by the server (``bot.runtime.shop``).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from aiohttp import web

from ..automations.events import ID_PATTERN
from ..errors import ShopNotFound, ShopRejected
from ..inputs import control_pointers, header_bytes, holds_control
from ..runtime.shop import Shop
from ..shop.orders import PAYMENTS, STATUSES
from ..shop.products import is_sku
from .http import MAX_INDEX, HttpError, error, json_answer, json_body, query_number, require
from .keys import LIMITS, SERVICES
from .ratelimit import CLIENT

log = logging.getLogger("salesbot.shop")
routes = web.RouteTableDef()
READERS = ("support", "operator")  # and admin
#: A product (thirty translations of a long description) fits; an order is a few lines.
MAX_PRODUCT_BODY = 256 * 1024
MAX_ORDER_BODY = 64 * 1024
ITEM_FIELDS = frozenset({"sku", "qty"})
ORDER_FIELDS = frozenset({"customer", "items", "lead"})
MAX_KEY = 200
_ID = re.compile(ID_PATTERN)


def _shop(request: web.Request) -> Shop:
    return request.app[SERVICES].shop


def _refused(request: web.Request, exc: ShopRejected) -> web.Response:
    """ShopNotFound → 404, any other refusal → 422; one log line either way."""
    if isinstance(exc, ShopNotFound):
        log.warning("shop.not_found", extra={"path": request.path, "reason": str(exc)[:300]})
        return error(404, "not_found", str(exc))
    log.warning("shop.rejected", extra={"path": request.path, "reason": str(exc)[:300]})
    return error(422, "invalid", str(exc))


def _bad_query(request: web.Request, name: str, message: str) -> web.Response:
    log.warning("shop.bad_query", extra={"path": request.path, "parameter": name})
    return error(400, "bad_query", message, [{"parameter": name}])


async def _body(request: web.Request, limit: int) -> Any:
    """The JSON body: at most ``limit`` bytes, strictly parsed, no control characters in any string
    (line breaks and tabs are text)."""
    if (request.content_length or 0) > limit or len(await request.read()) > limit:
        log.warning("shop.too_large", extra={"path": request.path, "limit": limit})
        raise HttpError(413, "too_large", f"the body is at most {limit} bytes")
    body = await json_body(request)
    if holds_control(body):
        log.warning("shop.invalid", extra={"path": request.path, "reason": "control characters"})
        raise HttpError(422, "invalid", "the body holds control characters",
                        [{"pointer": p, "message": "holds a control character"} for p in control_pointers(body)])
    return body


def _limited(request: web.Request) -> web.Response | None:
    limits = request.app[LIMITS]
    found = limits.take("orders_per_ip", request.get(CLIENT) or limits.client(request))
    return None if found is None else found.response()


def _sku(request: web.Request) -> str:
    sku = request.match_info["sku"]
    if not is_sku(sku):
        log.warning("shop.not_found", extra={"path": request.path, "reason": "not a sku"})
        raise HttpError(404, "not_found", "no such product (a sku is 1 to 64 letters, digits, '_', '.' or '-')")
    return sku


# ---------------------------------------------------------------------------- products
@routes.get("/api/products")
async def list_products(request: web.Request) -> web.Response:
    require(request, *READERS)
    raw = request.query.get("active", "")
    if raw not in ("", "true", "false"):
        return _bad_query(request, "active", "active is true or false")
    return json_answer({"products": await _shop(request).products(active=None if raw == "" else raw == "true")})


@routes.get("/api/products/{sku}")
async def get_product(request: web.Request) -> web.Response:
    require(request, *READERS)
    try:
        return json_answer(await _shop(request).product(_sku(request)))
    except ShopRejected as exc:
        return _refused(request, exc)


@routes.put("/api/products/{sku}")
async def put_product(request: web.Request) -> web.Response:
    require(request, "operator")
    sku = request.match_info["sku"]
    body = await _body(request, MAX_PRODUCT_BODY)
    try:
        product, created = await _shop(request).put_product(sku, body)
    except ShopRejected as exc:
        return _refused(request, exc)
    return json_answer(product, status=201 if created else 200)


@routes.delete("/api/products/{sku}")
async def delete_product(request: web.Request) -> web.Response:
    require(request, "operator")
    try:
        await _shop(request).delete_product(_sku(request))
    except ShopRejected as exc:
        return _refused(request, exc)
    return web.Response(status=204)


# ---------------------------------------------------------------------------- orders
def _cart(body: Any) -> tuple[str, list[tuple[str, int]], str | None]:
    """(customer, [(sku, qty)], lead) of a ``POST /api/orders`` body; a price in it is refused."""
    if not isinstance(body, dict):
        raise ShopRejected('the body is an object: {"customer": …, "items": [{"sku": …, "qty": …}]}')
    unknown = sorted(set(body) - ORDER_FIELDS)
    if unknown:
        raise ShopRejected(f"unknown order field {unknown[0]!r} (fields: customer, items, lead)")
    customer, lead, items = body.get("customer"), body.get("lead"), body.get("items")
    if isinstance(customer, int) and not isinstance(customer, bool):
        customer = str(customer)
    if isinstance(lead, int) and not isinstance(lead, bool):
        lead = str(lead)
    if not isinstance(customer, str) or not customer:
        raise ShopRejected("customer is the customer's contact id")
    if lead is not None and not isinstance(lead, str):
        raise ShopRejected("lead is a lead id of the customer")
    if not isinstance(items, list) or not items:
        raise ShopRejected('items is a list of {"sku": …, "qty": …}, at least one')
    cart: list[tuple[str, int]] = []
    for n, item in enumerate(items):  # as many as 64 KiB hold; the rules refuse more than 50 lines
        if not isinstance(item, dict):
            raise ShopRejected(f'items/{n} is an object {{"sku": …, "qty": …}}')
        extra = sorted(set(item) - ITEM_FIELDS)
        if extra:
            if any("price" in k or k == "total" for k in extra):
                raise ShopRejected(f"items/{n}: {extra[0]} cannot be set: prices come from the catalogue")
            raise ShopRejected(f"items/{n}: unknown field {extra[0]!r} (fields: sku, qty)")
        sku: Any = item.get("sku")
        qty: Any = item.get("qty", 1)
        cart.append((sku, qty))  # checked by the rules (bot.shop.orders.check_items)
    return customer, cart, lead


def _idempotency_key(request: web.Request) -> str | None:
    raw = request.headers.get("Idempotency-Key")
    if raw is None:
        return None
    key = header_bytes(raw)
    if not key or len(key) > MAX_KEY or not key.isascii() or not key.decode().isprintable():
        log.warning("shop.bad_header", extra={"path": request.path, "header": "Idempotency-Key"})
        raise HttpError(400, "bad_header", f"Idempotency-Key is 1 to {MAX_KEY} printable ASCII characters")
    return key.decode()


@routes.post("/api/orders")
async def post_order(request: web.Request) -> web.Response:
    principal = require(request, *READERS)
    if (limited := _limited(request)) is not None:
        return limited
    key = _idempotency_key(request)
    body = await _body(request, MAX_ORDER_BODY)
    try:
        customer, cart, lead = _cart(body)
        order = await _shop(request).place_order(customer, cart, source="api", lead_id=lead, key=key,
                                                 by=principal.name)
    except ShopRejected as exc:
        return _refused(request, exc)
    return json_answer(order, status=201)


@routes.get("/api/orders")
async def list_orders(request: web.Request) -> web.Response:
    principal = require(request, *READERS)
    q = request.query
    status, payment, customer = q.get("status") or None, q.get("payment") or None, q.get("customer") or None
    if status is not None and status not in STATUSES:
        return _bad_query(request, "status", f"status is one of {', '.join(STATUSES)}")
    if payment is not None and payment not in PAYMENTS:
        return _bad_query(request, "payment", "payment is unpaid or paid")
    if customer is not None and not _ID.match(customer):
        return _bad_query(request, "customer", "customer is a contact id")
    limit = int(query_number(request, "limit", 50, minimum=1, maximum=200, integer=True, clamp=True))
    before = query_number(request, "before", None, minimum=1, maximum=MAX_INDEX, integer=True)
    orders, next_before = await _shop(request).list_orders(
        status=status, payment=payment, customer=customer, before=None if before is None else int(before), limit=limit)
    answer: dict[str, object] = {"orders": orders, "next_before": next_before}
    if request.app[SERVICES].auth.allows(principal, "support"):  # names are the CRM's: closed to operators
        answer["customers"] = await _shop(request).customer_names([str(o["customer"]) for o in orders])
    return json_answer(answer)


@routes.get("/api/orders/{id}")
async def get_order(request: web.Request) -> web.Response:
    require(request, *READERS)
    try:
        return json_answer(await _shop(request).order(request.match_info["id"]))
    except ShopRejected as exc:
        return _refused(request, exc)


@routes.patch("/api/orders/{id}")
async def patch_order(request: web.Request) -> web.Response:
    principal = require(request, *READERS)
    if (limited := _limited(request)) is not None:
        return limited
    body = await _body(request, MAX_ORDER_BODY)
    try:
        return json_answer(await _shop(request).change_order(request.match_info["id"], body, by=principal.name))
    except ShopRejected as exc:
        return _refused(request, exc)
