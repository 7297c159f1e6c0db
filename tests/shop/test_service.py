"""The shop service against a real Redis through the server's services: the contract others call
(``catalogue_for``, ``place_order``, ``order_counts``, the ``sb:orders:changed`` publish)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from bot.errors import ShopNotFound, ShopRejected
from bot.runtime.shop import ORDERS_CHANNEL, Shop
from bot.server.keys import SERVICES
from bot.server.services import Services
from tests.server.conftest import make_config, running


@pytest.fixture
async def services(redis: Redis, redis_url: str) -> AsyncIterator[Services]:
    async with running(make_config(redis_url)) as srv:
        yield srv.app[SERVICES]


async def _catalogue(shop: Shop) -> None:
    await shop.put_product("tea", {"name": {"en": "Tea", "tr": "Çay"}, "prices": {"TRY": 120, "EUR": 3.5}})
    await shop.put_product("cup", {"name": "Cup", "description": "Blue", "prices": {"EUR": 9.99}})
    await shop.put_product("old", {"name": "Old", "prices": {"TRY": 1, "EUR": 1}, "active": False})


async def test_the_catalogue_is_in_the_customers_currency_language_and_discount(services: Services) -> None:
    assert services.directory is not None
    await _catalogue(services.shop)
    turk = await services.directory.create_contact({"name": "Ayşe", "currency": "TRY", "language": "tr",
                                                    "discount": 10})
    catalogue = await services.shop.catalogue_for(str(turk["id"]))
    assert (catalogue.currency, catalogue.language, catalogue.discount) == ("TRY", "tr", 10)
    assert [(p.sku, p.name, p.base_price, p.unit_price) for p in catalogue.products] == [("tea", "Çay", 12000, 10800)]
    assert catalogue.as_json()["products"][0]["unit_price"] == 108


async def test_a_card_without_a_currency_takes_the_first_currency_a_product_has(services: Services) -> None:
    assert services.directory is not None
    await _catalogue(services.shop)
    plain = await services.directory.create_contact({"name": "Bob"})
    catalogue = await services.shop.catalogue_for(str(plain["id"]))
    assert (catalogue.currency, catalogue.language) == ("EUR", "en")
    assert [(p.sku, p.unit_price) for p in catalogue.products] == [("cup", 999), ("tea", 350)]


async def test_an_order_is_priced_on_the_server_makes_the_customer_current_and_is_published(
        services: Services, redis: Redis) -> None:
    assert services.directory is not None
    await _catalogue(services.shop)
    contact = await services.directory.create_contact({"name": "Eve", "currency": "EUR", "discount": 25})
    cid = str(contact["id"])
    async with redis.pubsub() as pubsub:
        await pubsub.subscribe(ORDERS_CHANNEL)
        await pubsub.get_message(timeout=1)  # the subscription's confirmation
        order = await services.shop.place_order(cid, [("cup", 3), ("tea", 1)], source="api")
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
    assert message is not None and message["data"] == order["id"].encode()
    # 9.99 × 0.75 = 7.4925 → 7.49; 3.50 × 0.75 = 2.625 → 2.63 (half up); 3 × 7.49 + 2.63 = 25.10
    assert [(i["sku"], i["qty"], i["unit_price"]) for i in order["items"]] == [("cup", 3, 7.49), ("tea", 1, 2.63)]
    assert (order["total"], order["currency"], order["status"], order["payment"]) == (25.1, "EUR", "new", "unpaid")
    assert order["lead"] is not None
    card = await services.directory.get("contact", cid)
    assert card is not None and card["status"] == "current"
    assert await services.shop.order_counts([cid, "999999"]) == {cid: 1, "999999": 0}
    await services.leads.idle()
    history = await services.leads.history(order["lead"])
    assert [e["type"] for e in history if e["type"].startswith("order.")] == ["order.created"]


async def test_a_retry_with_the_same_key_returns_the_same_order(services: Services) -> None:
    assert services.directory is not None
    await _catalogue(services.shop)
    cid = str((await services.directory.create_contact({"name": "Kay"}))["id"])
    orders = await asyncio.gather(*(services.shop.place_order(cid, [("tea", 2)], source="order_link", key="k1")
                                    for _ in range(5)))
    assert len({o["id"] for o in orders}) == 1
    assert await services.shop.order_counts([cid]) == {cid: 1}
    other = await services.shop.place_order(cid, [("tea", 2)], source="order_link", key="k2")
    assert other["id"] != orders[0]["id"]


@pytest.mark.parametrize("items, message", [
    ([], "at least one item"),
    ([("nope", 1)], "not a product on sale"),
    ([("old", 1)], "not a product on sale"),
    ([("tea", 0)], "from 1 to 999"),
    ([("tea", 1000)], "from 1 to 999"),
    ([("tea", 500), ("tea", 500)], "at most 999"),
    ([(f"s{i}", 1) for i in range(51)], "at most 50 lines"),
])
async def test_a_bad_cart_is_refused_with_what_to_fix(services: Services, items: list[tuple[str, int]],
                                                      message: str) -> None:
    assert services.directory is not None
    await _catalogue(services.shop)
    for i in range(51):
        await services.shop.put_product(f"s{i}", {"name": "S", "prices": {"EUR": 1}})
    cid = str((await services.directory.create_contact({"name": "Zed", "currency": "EUR"}))["id"])
    with pytest.raises(ShopRejected, match=message):
        await services.shop.place_order(cid, items, source="api")
    assert await services.shop.order_counts([cid]) == {cid: 0}


async def test_a_product_without_a_price_in_the_customers_currency_cannot_be_ordered(services: Services) -> None:
    assert services.directory is not None
    await _catalogue(services.shop)
    cid = str((await services.directory.create_contact({"name": "Yen", "currency": "JPY"}))["id"])
    with pytest.raises(ShopRejected, match="no price in JPY"):
        await services.shop.place_order(cid, [("tea", 1)], source="api")
    with pytest.raises(ShopNotFound):
        await services.shop.place_order("424242", [("tea", 1)], source="api")


async def test_changes_of_one_order_at_once_are_all_applied(services: Services) -> None:
    assert services.directory is not None
    await _catalogue(services.shop)
    cid = str((await services.directory.create_contact({"name": "Ann", "currency": "EUR"}))["id"])
    order = await services.shop.place_order(cid, [("tea", 1)], source="api")
    patches: list[dict[str, object]] = [{"status": "confirmed"}, {"payment": "paid"}, {"tracking": "TR-9"}]
    await asyncio.gather(*(services.shop.change_order(order["id"], p, by=f"p{n}") for n, p in enumerate(patches)))
    final = await services.shop.order(order["id"])
    assert (final["status"], final["payment"], final["tracking"]) == ("confirmed", "paid", "TR-9")
    assert sorted(h["field"] for h in final["history"][1:]) == ["payment", "status", "tracking"]
    listed, _ = await services.shop.list_orders(status="confirmed", payment="paid")
    assert [o["id"] for o in listed] == [order["id"]]  # the indexes moved with each change
    assert (await services.shop.list_orders(status="new"))[0] == []


async def test_two_first_orders_at_once_make_one_lead(services: Services) -> None:
    """A customer without an open lead ordering twice at once: both orders go to one new lead
    (the contact's lead is claimed while it is made; the other order reads it)."""
    assert services.directory is not None
    await _catalogue(services.shop)
    cid = str((await services.directory.create_contact({"name": "Twin", "currency": "EUR"}))["id"])
    first, second = await asyncio.gather(services.shop.place_order(cid, [("tea", 1)], source="api"),
                                         services.shop.place_order(cid, [("cup", 1)], source="api"))
    contact = await services.directory.contact(cid)
    assert contact is not None and [lead["id"] for lead in contact["leads"]] == [first["lead"]]
    assert second["lead"] == first["lead"]
