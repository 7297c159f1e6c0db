"""Orders: their lines and prices, statuses and the moves between them, payment, tracking, and
the events each change emits (``order.created``, ``order.paid``, ``order.tracking_added``,
``order.shipment_changed``, ``order.shipment_approved``, ``order.cancelled``).

An order keeps the prices it was made with: its lines hold the base and unit prices of that
moment, in minor units. Statuses go forward (``new`` → ``confirmed`` → ``in_production`` →
``shipped`` → ``delivered``; steps may be skipped) or to ``cancelled`` before delivery; a
delivered or cancelled order's status is final. Payment is ``unpaid`` or ``paid`` (back to
unpaid is allowed, for a refund or a mistake, and emits nothing).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import PricesChanged, ShopNotFound, ShopRejected
from .prices import to_major, total, unit_price
from .products import is_sku, localised

FLOW = ("new", "confirmed", "in_production", "shipped", "delivered")
CANCELLED = "cancelled"
STATUSES = (*FLOW, CANCELLED)
PAYMENTS = ("unpaid", "paid")
PATCH_FIELDS = frozenset({"status", "payment", "tracking"})
MAX_LINES = 50
MAX_QTY = 999
MAX_TRACKING = 200
#: Entries an order's history keeps (the oldest go first): a busy order stays a small record.
MAX_HISTORY = 100


@dataclass(frozen=True, slots=True)
class OrderEvent:
    """An event a change of an order emits onto the lead's queue (``data``: what rules read)."""

    type: str
    data: dict[str, Any] = field(default_factory=dict)


def check_items(items: object) -> list[tuple[str, int]]:
    """``[(sku, qty)]`` of a cart: 1 to ``MAX_LINES`` lines, each qty 1 to ``MAX_QTY`` (the same
    sku twice is one line of both quantities)."""
    if not isinstance(items, Sequence) or isinstance(items, (str, bytes)) or not items:
        raise ShopRejected("an order has at least one item")
    merged: dict[str, int] = {}
    for item in items:
        if not isinstance(item, Sequence) or isinstance(item, (str, bytes)) or len(item) != 2:
            raise ShopRejected("an item is a sku and a quantity")
        sku, qty = item
        if not is_sku(sku):
            raise ShopRejected(f"{str(sku)[:80]!r} is not a sku")
        if isinstance(qty, bool) or not isinstance(qty, int) or not 1 <= qty <= MAX_QTY:
            raise ShopRejected(f"the quantity of {sku} is a whole number from 1 to {MAX_QTY}")
        merged[sku] = merged.get(sku, 0) + qty
        if merged[sku] > MAX_QTY:
            raise ShopRejected(f"the quantity of {sku} is at most {MAX_QTY}")
    if len(merged) > MAX_LINES:
        raise ShopRejected(f"an order has at most {MAX_LINES} lines")
    return list(merged.items())


def price_lines(items: Sequence[tuple[str, int]], products: Mapping[str, Mapping[str, Any] | None],
                currency: str, discount: float, language: str | None) -> list[dict[str, Any]]:
    """The order's lines at the customer's prices now (minor units); only the catalogue's prices
    count, whatever a client sent."""
    lines = []
    for sku, qty in items:
        product = products.get(sku)
        if product is None or not product.get("active"):
            raise ShopRejected(f"{sku} is not a product on sale")
        base = product["prices"].get(currency)
        if base is None:
            raise ShopRejected(f"{sku} has no price in {currency}")
        unit = unit_price(base, discount)
        lines.append({"sku": sku, "name": localised(product["name"], language) or sku, "qty": qty,
                      "base_price": base, "unit_price": unit, "total": unit * qty})
    return lines


def check_shown(lines: Sequence[Mapping[str, Any]], currency: str, shown_currency: str,
                shown: Mapping[str, int]) -> None:
    """``PricesChanged`` unless every line's unit price is the one the customer was shown (minor
    units of ``shown_currency``): a price, a discount or the currency changed since the page was
    read must not be ordered unseen. A line the customer was shown no price of is not checked."""
    if shown_currency != currency:
        raise PricesChanged(f"prices are now in {currency}, not {shown_currency}")
    for line in lines:
        seen = shown.get(line["sku"])
        if seen is not None and seen != line["unit_price"]:
            raise PricesChanged(f"the price of {line['sku']} has changed")


def new_order(*, id_: str, number: int, customer: str, lead: str | None, lines: list[dict[str, Any]],
              currency: str, discount: float, source: str, by: str, now: float) -> dict[str, Any]:
    return {"id": id_, "number": number, "customer": customer, "lead": lead, "items": lines,
            "currency": currency, "discount": discount,
            "total": total((line["unit_price"], line["qty"]) for line in lines),
            "status": "new", "payment": "unpaid", "tracking": None, "source": source,
            "created_at": now, "updated_at": now, "revision": 1,
            "history": [{"at": now, "by": by, "field": "status", "from": None, "to": "new"}]}


def can_move(old: str, new: str) -> bool:
    """Forward along ``FLOW`` (skipping allowed), or to cancelled before delivery."""
    if old in ("delivered", CANCELLED):
        return False
    if new == CANCELLED:
        return True
    return new in FLOW and FLOW.index(new) > FLOW.index(old)


def check_patch(patch: object) -> dict[str, Any]:
    """A ``PATCH /api/orders/{id}`` body: status, payment, tracking (null removes it); nothing else
    (prices and lines are never changed after the order is made)."""
    if not isinstance(patch, Mapping) or not patch:
        raise ShopRejected("the body is an object of status, payment and/or tracking")
    unknown = sorted(set(patch) - PATCH_FIELDS)
    if unknown:
        raise ShopRejected(f"{unknown[0]!r} cannot be changed (an order's status, payment and tracking can)")
    if "status" in patch and patch["status"] not in STATUSES:
        raise ShopRejected(f"status is one of {', '.join(STATUSES)}")
    if "payment" in patch and patch["payment"] not in PAYMENTS:
        raise ShopRejected("payment is unpaid or paid")
    tracking = patch.get("tracking")
    if tracking is not None and (not isinstance(tracking, str) or len(tracking.strip()) > MAX_TRACKING):
        raise ShopRejected(f"tracking is text of at most {MAX_TRACKING} characters, or null")
    out = dict(patch)
    if "tracking" in out:
        out["tracking"] = (tracking or "").strip() or None
    return out


def change(order: Mapping[str, Any], patch: Mapping[str, Any], *, by: str,
           now: float) -> tuple[dict[str, Any], list[OrderEvent]]:
    """The order after ``patch`` (checked by ``check_patch``) and the events it emits; a field
    set to what it already is changes nothing."""
    new = copy.deepcopy(dict(order))
    events: list[OrderEvent] = []
    history: list[dict[str, Any]] = []
    status = patch.get("status", order["status"])
    if status != order["status"]:
        if not can_move(order["status"], status):
            raise ShopRejected(f"an order {order['status']} cannot become {status}")
        new["status"] = status
        moved = {"from": order["status"], "to": status}
        events.append(OrderEvent("order.cancelled" if status == CANCELLED else "order.shipment_changed", moved))
        if order["status"] == FLOW[0] and status != CANCELLED:  # the seller approved it (Kommo's
            events.append(OrderEvent("order.shipment_approved", moved))  # "shipment approved"): once
        history.append({"field": "status", "from": order["status"], "to": status})
    payment = patch.get("payment", order["payment"])
    if payment != order["payment"]:
        new["payment"] = payment
        if payment == "paid":
            events.append(OrderEvent("order.paid"))
        history.append({"field": "payment", "from": order["payment"], "to": payment})
    tracking = patch.get("tracking", order["tracking"])
    if tracking != order["tracking"]:
        new["tracking"] = tracking
        if tracking is not None:
            events.append(OrderEvent("order.tracking_added", {"tracking": tracking}))
        history.append({"field": "tracking", "from": order["tracking"], "to": tracking})
    if history:
        new["updated_at"] = now
        new["revision"] = revision(order) + 1
        new["history"] = [*order["history"], *({"at": now, "by": by, **h} for h in history)][-MAX_HISTORY:]
    return new, [OrderEvent(e.type, {**event_data(new), **e.data}) for e in events]


def revision(order: Mapping[str, Any]) -> int:
    """How many times the order was made or changed: its events' ids (the history is capped, so its
    length stops growing; orders from before the field: the history's length, exact below the cap)."""
    return int(order.get("revision") or len(order["history"]))


def event_data(order: Mapping[str, Any]) -> dict[str, Any]:
    """What an order event tells rules and flows (``event.data.total`` in major units)."""
    currency = order["currency"]
    return {"order": order["id"], "number": order["number"], "total": to_major(order["total"], currency),
            "currency": currency, "status": order["status"], "payment": order["payment"],
            "tracking": order["tracking"], "items": [{"sku": i["sku"], "qty": i["qty"]} for i in order["items"]]}


def order_json(order: Mapping[str, Any]) -> dict[str, Any]:
    """A stored order as the API shows it: amounts in major units."""
    currency = order["currency"]
    items = [{**line, **{k: to_major(line[k], currency) for k in ("base_price", "unit_price", "total")}}
             for line in order["items"]]
    return {**order, "items": items, "total": to_major(order["total"], currency)}


def missing(what: str, ident: str) -> ShopNotFound:
    return ShopNotFound(f"no {what} {ident[:80]!r}")


def load(raw: bytes | str) -> dict[str, Any]:
    """A stored order (JSON) as a dict."""
    value: dict[str, Any] = json.loads(raw)
    return value
