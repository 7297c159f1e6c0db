"""Which events an order's change emits (``bot.shop.orders.change``), from the order alone."""

from __future__ import annotations

from typing import Any

import pytest

from bot.shop.orders import change, new_order, price_lines


def _order() -> dict[str, Any]:
    products = {"tea": {"sku": "tea", "name": {"en": "Tea"}, "prices": {"EUR": 500}, "active": True}}
    lines = price_lines([("tea", 2)], products, "EUR", 0.0, "en")
    return new_order(id_="1", number=1, customer="c", lead="l", lines=lines, currency="EUR", discount=0.0,
                     source="test", by="test", now=0)


@pytest.mark.parametrize(("patch", "events"), [
    ({"status": "confirmed"}, ["order.shipment_changed", "order.shipment_approved"]),
    ({"status": "in_production"}, ["order.shipment_changed", "order.shipment_approved"]),  # confirmed skipped
    ({"status": "cancelled"}, ["order.cancelled"]),
    ({"status": "confirmed", "payment": "paid", "tracking": "TR-1"},
     ["order.shipment_changed", "order.shipment_approved", "order.paid", "order.tracking_added"]),
])
def test_each_change_emits_its_events(patch: dict[str, Any], events: list[str]) -> None:
    """``order.shipment_approved`` (an automations event type) used to be emitted by nothing: a
    rule on it never fired. The seller approving the order (it leaves ``new``, not cancelled) emits it."""
    _, emitted = change(_order(), patch, by="test", now=1)
    assert [e.type for e in emitted] == events
    approved = [e for e in emitted if e.type == "order.shipment_approved"]
    assert all(e.data["from"] == "new" and e.data["to"] == patch["status"] and e.data["order"] == "1"
               for e in approved)


def test_approval_is_emitted_once_moving_on_from_confirmed_does_not_repeat_it() -> None:
    confirmed, _ = change(_order(), {"status": "confirmed"}, by="test", now=1)
    _, emitted = change(confirmed, {"status": "shipped"}, by="test", now=2)
    assert [e.type for e in emitted] == ["order.shipment_changed"]
