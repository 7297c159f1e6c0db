"""Prices, by property: an order's total is the sum of its rounded discounted unit prices × qty in
the currency's minor unit (JPY 0 decimals, TRY and EUR 2, KWD 3), and no client value changes a
price. The reference here is exact rational arithmetic, not the code's Decimal."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Iterator
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.errors import ShopRejected
from bot.server.services import Services, open_services
from bot.server.shop_api import _cart
from bot.shop.orders import new_order, price_lines
from bot.shop.prices import MAX_MINOR, digits, format_money, to_major, to_minor, unit_price
from tests.server.conftest import make_config

CURRENCIES = {"JPY": 0, "TRY": 2, "EUR": 2, "KWD": 3}
currencies = st.sampled_from(sorted(CURRENCIES))
bases = st.integers(min_value=0, max_value=MAX_MINOR)
# Discounts as a card holds them: whole percents, or with decimals (12.5 %, 33.33 %).
discounts = st.one_of(st.integers(0, 100), st.decimals(0, 100, places=2, allow_nan=False).map(float))
carts = st.lists(st.tuples(bases, st.integers(1, 999)), min_size=1, max_size=50)


def half_up(value: Fraction) -> int:
    return math.floor(value + Fraction(1, 2))


def reference_unit(base: int, discount: float) -> int:
    return half_up(Fraction(base) * (100 - Fraction(str(discount))) / 100)


def test_the_currencies_have_their_minor_units() -> None:
    assert {c: digits(c) for c in CURRENCIES} == CURRENCIES


@given(currency=currencies, cart=carts, discount=discounts)
def test_the_total_is_the_sum_of_rounded_discounted_unit_prices(currency: str, cart: list[tuple[int, int]],
                                                                discount: float) -> None:
    products = {f"p{i}": {"sku": f"p{i}", "name": {"en": "P"}, "prices": {currency: base}, "active": True}
                for i, (base, _) in enumerate(cart)}
    lines = price_lines([(f"p{i}", qty) for i, (_, qty) in enumerate(cart)], products, currency, discount, "en")
    order = new_order(id_="1", number=1, customer="c", lead=None, lines=lines, currency=currency, discount=discount,
                      source="test", by="test", now=0)
    units = [reference_unit(base, discount) for base, _ in cart]
    assert [line["unit_price"] for line in lines] == units
    assert order["total"] == sum(unit * qty for unit, (_, qty) in zip(units, cart, strict=True))
    assert order["total"] < 2**53  # exact as a JSON number in any client
    assert to_minor(to_major(order["total"], currency), currency, limit=None) == order["total"]


@given(currency=currencies, minor=bases)
def test_major_units_in_the_api_read_back_to_the_same_minor_units(currency: str, minor: int) -> None:
    major = to_major(minor, currency)
    assert to_minor(major, currency) == minor
    assert Fraction(str(major)) == Fraction(minor, 10 ** CURRENCIES[currency])
    assert format_money(minor, currency, "en")  # every amount can be shown


@given(currency=currencies, amount=st.decimals(min_value=0, max_value=10**6, places=4, allow_nan=False))
def test_an_amount_with_more_decimals_than_the_currency_has_is_refused(currency: str, amount: Any) -> None:
    places = CURRENCIES[currency]
    if amount == round(amount, places):
        assert to_minor(float(amount), currency) == int(amount * 10**places)
    else:
        with pytest.raises(ShopRejected, match="decimals"):
            to_minor(float(amount), currency)


@given(base=bases)
def test_no_discount_keeps_the_price_and_a_full_discount_makes_it_free(base: int) -> None:
    assert unit_price(base, 0) == base
    assert unit_price(base, 100) == 0


price_keys = st.sampled_from(["unit_price", "price", "total", "base_price", "unit_price_minor", "price_eur"])


@given(key=price_keys, value=st.one_of(st.integers(), st.floats(allow_nan=False), st.text(max_size=5)))
def test_a_cart_that_names_a_price_is_refused(key: str, value: Any) -> None:
    with pytest.raises(ShopRejected, match="prices come from the catalogue"):
        _cart({"customer": "1", "items": [{"sku": "tea", "qty": 1, key: value}]})


# ---------------------------------------------------------------------------- through the service
@pytest.fixture(scope="module")
def loop_and_services(redis_url: str) -> Iterator[tuple[asyncio.AbstractEventLoop, Services]]:
    """The server's services on a loop of this module's own (hypothesis runs examples in a
    plain function): one set for every example."""
    loop = asyncio.new_event_loop()
    stack = contextlib.AsyncExitStack()
    services = loop.run_until_complete(stack.enter_async_context(
        open_services(make_config(redis_url), start_hub=False, load_flows=False)))  # type: ignore[arg-type]
    try:
        yield loop, services
    finally:
        loop.run_until_complete(stack.aclose())
        loop.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(currency=currencies, cart=st.lists(st.tuples(bases, st.integers(1, 999)), min_size=1, max_size=8),
       discount=discounts)
def test_an_order_placed_through_the_service_is_priced_from_the_catalogue(
        loop_and_services: tuple[asyncio.AbstractEventLoop, Services], currency: str,
        cart: list[tuple[int, int]], discount: float) -> None:
    loop, services = loop_and_services

    async def place() -> dict[str, Any]:
        assert services.directory is not None
        places = CURRENCIES[currency]
        for i, (base, _) in enumerate(cart):
            await services.shop.put_product(f"prop-{i}", {"name": "P", "prices": {currency: to_major(base, currency)}})
        cid = str((await services.directory.create_contact({"name": "Prop", "currency": currency,
                                                             "discount": discount}))["id"])
        assert places == digits(currency)
        return await services.shop.place_order(cid, [(f"prop-{i}", qty) for i, (_, qty) in enumerate(cart)],
                                               source="test")

    order = loop.run_until_complete(place())
    scale = 10 ** CURRENCIES[currency]
    expected = sum(reference_unit(base, discount) * qty for base, qty in cart)
    assert Fraction(str(order["total"])) * scale == expected  # the JSON number, read exactly
    assert [Fraction(str(i["unit_price"])) * scale for i in order["items"]] == [reference_unit(b, discount)
                                                                                 for b, _ in cart]
