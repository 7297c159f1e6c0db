"""``GET``/``POST /order/<token>``: the quick-order page (docs/customers.md).

No login: the signed token names the customer and the link (``bot.runtime.orderlinks``). The
page shows the active products at the customer's own prices in their language; the form posts
quantities and a submit key, the order is placed by ``Shop.place_order`` (prices and totals on
the server; the same submit key places one order however often it is sent) and the customer sees
the order number. A bad token is a 404 page, an expired or revoked one a 410 page, in the
browser's language: they show nobody's data. Limits: every request counts against the client's
``public_per_ip`` (the middleware); a link's views against ``order_views_per_link``; submits
against ``order_submits_per_ip`` and ``order_submits_per_link``.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from typing import Any

from aiohttp import web
from multidict import MultiDictProxy

from ..errors import PricesChanged, ShopError, ShopRejected
from ..runtime.orderlinks import OrderLinks, Resolved
from ..runtime.shop import CustomerCatalogue, Shop
from ..shop.prices import digits, format_money, is_currency, to_minor
from ..shop.products import is_sku
from .keys import LIMITS, SERVICES
from .orderpage_text import TEXT, accepted_language, language_of
from .orderpage_view import render
from .ratelimit import CLIENT

log = logging.getLogger("salesbot.server.orderpage")
routes = web.RouteTableDef()

_TOKEN = re.compile(r"^[A-Za-z0-9_=.-]{1,512}$")
_KEY = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
#: Form fields a submit may carry beyond one per product of the catalogue (a browser posts every
#: quantity field, the empty ones too, and the key): more is not one of our forms.
MAX_FIELDS = 1000
MAX_QTY = 999
#: What a form is posted as (a body of any other type is not one of our forms: a 400 page).
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data", "")


def _services(request: web.Request) -> tuple[OrderLinks, Shop]:
    svc = request.app[SERVICES]
    if svc.order_links is None:  # pragma: no cover - every server builds it
        raise web.HTTPNotFound()
    return svc.order_links, svc.shop


def _message(request: web.Request, status: int, what: str, *, lang: str | None = None,
             headers: dict[str, str] | None = None) -> web.Response:
    lang = lang or accepted_language(request.headers.get("Accept-Language"))
    t = TEXT[lang]
    return render(status, headers, kind="message", lang=lang, title=t[f"{what}_title"], message=t[what])


def _limited(request: web.Request, *checks: tuple[str, str]) -> web.Response | None:
    limits = request.app[LIMITS]
    ip = request.get(CLIENT) or limits.client(request)
    for kind, key in checks:
        limited = limits.take(kind, key, ip)
        if limited is not None:
            return _message(request, 429, "busy", headers={"Retry-After": str(limited.seconds)})
    return None


def _digest(token: str) -> str:
    """The token as a rate-limit key and in logs: a token is a credential, never logged."""
    return hashlib.sha256(token.encode()).hexdigest()[:24]


async def _opened(request: web.Request) -> tuple[Resolved, CustomerCatalogue] | web.Response:
    """The token's valid link and its customer's catalogue, else the refusal page (the same for
    a view and a submit)."""
    links, shop = _services(request)
    token = request.match_info["token"]
    found = await links.resolve(token) if _TOKEN.match(token) else Resolved("bad")
    if found.status != "valid":
        log.warning("order_page.refused", extra={"status": found.status, "link": found.link_id or _digest(token)})
        return _message(request, 404 if found.status == "bad" else 410, found.status)
    try:
        return found, await shop.catalogue_for(found.customer_id)
    except ShopError as exc:  # the customer is gone: the link names nobody any more
        log.warning("order_page.no_customer", extra={"link": found.link_id, "error": str(exc)})
        return _message(request, 404, "bad")


def _products(catalogue: CustomerCatalogue) -> list[dict[str, Any]]:
    cur, lang = catalogue.currency or "XXX", catalogue.language
    return [{"sku": p.sku, "name": p.name, "description": p.description,
             "image_url": p.image_url if (p.image_url or "").startswith("https://") else None,
             "base": format_money(p.base_price, cur, lang), "unit": format_money(p.unit_price, cur, lang),
             "unit_minor": p.unit_price} for p in catalogue.products]


def _discount(catalogue: CustomerCatalogue, lang: str) -> str:
    if not catalogue.discount:
        return ""
    shown = f"{catalogue.discount:g}"
    return TEXT[lang]["discount"].format(discount=shown)


def _shown_field(catalogue: CustomerCatalogue) -> str:
    """The prices the page shows, sent back with the form (``EUR tea=3195 cup=5``): an order is
    placed only at the prices the customer saw (``Shop.place_order(shown=…)``)."""
    if not catalogue.currency:
        return ""
    return " ".join([catalogue.currency, *(f"{p.sku}={p.unit_price}" for p in catalogue.products)])


def _shown(raw: object) -> tuple[str, dict[str, int]] | None:
    """The form's ``shown`` field read back; None when it is missing or not ours (an old or
    hand-made form: its order is priced by the server, unchecked)."""
    parts = raw.split() if isinstance(raw, str) else []
    if not parts or not is_currency(parts[0]):
        return None
    prices: dict[str, int] = {}
    for part in parts[1:]:
        sku, _, minor = part.partition("=")
        if not is_sku(sku) or not (minor.isascii() and minor.isdigit()) or len(minor) > 18:
            return None
        prices[sku] = int(minor)
    return parts[0], prices


def _form(request: web.Request, catalogue: CustomerCatalogue, *, status: int = 200, error: str = "",
          values: dict[str, str] | None = None, key: str | None = None) -> web.Response:
    lang = language_of(catalogue.language)
    return render(status, kind="form", lang=lang, title=TEXT[lang]["title"], t=TEXT[lang], error=error,
                  shown=_shown_field(catalogue), products=_products(catalogue) if catalogue.currency else [],
                  discount=_discount(catalogue, lang), values=values or {}, key=key or secrets.token_urlsafe(12),
                  currency=catalogue.currency or "", digits=digits(catalogue.currency) if catalogue.currency else 0)


@routes.get("/order/{token}")
async def show(request: web.Request) -> web.Response:
    if (busy := _limited(request, ("order_views_per_link", _digest(request.match_info["token"])))) is not None:
        return busy
    opened = await _opened(request)
    return opened if isinstance(opened, web.Response) else _form(request, opened[1])


def _quantities(posted: MultiDictProxy[Any]) -> tuple[list[tuple[str, int]], dict[str, str]] | None:
    """The cart (sku, qty > 0) and the values as typed; None when a quantity is not 0 to 999."""
    items: list[tuple[str, int]] = []
    values: dict[str, str] = {}
    bad = False
    for name, raw in posted.items():
        if not name.startswith("q:") or not isinstance(raw, str):
            continue
        sku, text = name[2:], raw.strip()[:10]
        values[sku] = text
        if not text:
            continue
        if not (text.isascii() and text.isdigit()) or int(text) > MAX_QTY:
            bad = True
        elif int(text) > 0:
            items.append((sku, int(text)))
    return None if bad else (items, values)


async def _form_of(request: web.Request, fields: int) -> MultiDictProxy[Any]:
    """The posted form, up to ``fields`` fields: aiohttp's own cap (1,000 fields, since 3.13)
    would refuse the form of a catalogue of a thousand products, which posts a field for each."""
    if request.content_type not in FORM_TYPES:  # aiohttp reads any other body as an empty form
        raise ValueError(f"not a form: {request.content_type[:80]}")
    if hasattr(request, "client_max_fields"):
        request = request.clone(client_max_fields=fields)  # type: ignore[call-arg,unused-ignore]
    return await request.post()


@routes.post("/order/{token}")
async def submit(request: web.Request) -> web.Response:
    limits = request.app[LIMITS]
    ip = request.get(CLIENT) or limits.client(request)
    digest = _digest(request.match_info["token"])
    if (busy := _limited(request, ("order_submits_per_ip", ip), ("order_submits_per_link", digest))) is not None:
        return busy
    opened = await _opened(request)
    if isinstance(opened, web.Response):
        return opened
    found, catalogue = opened
    t = TEXT[language_of(catalogue.language)]
    fields = MAX_FIELDS + len(catalogue.products)
    try:
        posted = await _form_of(request, fields)
    except ValueError:  # not a form (a wrong content type, a broken body)
        log.warning("order_page.bad_form", extra={"link": found.link_id})
        return _form(request, catalogue, status=400, error=t["bad_qty"])
    except web.HTTPRequestEntityTooLarge:  # over the body's size or the fields a form of ours has
        log.warning("order_page.bad_form", extra={"link": found.link_id, "reason": "too_large"})
        return _form(request, catalogue, status=413, error=t["bad_qty"])
    key = str(posted.get("key") or "")
    parsed = _quantities(posted) if len(posted) <= fields else None
    if parsed is None:
        log.warning("order_page.bad_quantity", extra={"link": found.link_id})
        return _form(request, catalogue, status=422, error=t["bad_qty"], key=key if _KEY.match(key) else None)
    items, values = parsed
    if not items:
        return _form(request, catalogue, status=422, error=t["empty_cart"], values=values,
                     key=key if _KEY.match(key) else None)
    if not _KEY.match(key):  # an old or hand-made form: a new key, nothing placed twice by a retry
        key = secrets.token_urlsafe(12)
    try:
        order = await request.app[SERVICES].shop.place_order(found.customer_id, items, source="order_link",
                                       key=f"link:{found.link_id}:{key}", shown=_shown(posted.get("shown")))
    except PricesChanged as exc:  # the page again with today's prices; the same key orders it once
        log.warning("order_page.prices_changed", extra={"link": found.link_id, "error": str(exc)})
        fresh = await _services(request)[1].catalogue_for(found.customer_id)
        return _form(request, fresh, status=409, error=t["changed"], values=values, key=key)
    except ShopRejected as exc:
        log.warning("order_page.rejected", extra={"link": found.link_id, "error": str(exc)})
        return _form(request, catalogue, status=422, error=f"{t['refused']} {exc}", values=values, key=key)
    log.info("order_page.ordered", extra={"link": found.link_id, "order": order["id"]})
    return _done(order, language_of(catalogue.language))


def _done(order: dict[str, Any], lang: str) -> web.Response:
    t, cur = TEXT[lang], str(order["currency"])

    def money(major: Any) -> str:  # a line's or the order's total may pass one unit price's bound
        return format_money(to_minor(major, cur, limit=None), cur, lang)

    lines = [{"name": line.get("name") or line["sku"], "qty": line["qty"], "unit": money(line["unit_price"]),
              "total": money(line.get("total", 0))} for line in order["items"]]
    number = order.get("number", order["id"])
    return render(200, kind="done", lang=lang, title=t["thanks"], t=t, placed=t["placed"].format(number=number),
                  lines=lines, total=money(order["total"]))
