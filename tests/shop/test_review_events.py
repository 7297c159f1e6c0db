"""Order events reach the lead exactly once per change: a busy order (history past its cap) and a
keyed retry after an outage between the order's save and its event (review15)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from bot.server.keys import SERVICES
from bot.server.services import Services
from bot.shop import orders as rules
from tests.server.conftest import make_config, running
from tests.shop.test_unsent import fail_once


@pytest.fixture
async def services(redis: Redis, redis_url: str) -> AsyncIterator[Services]:
    async with running(make_config(redis_url)) as srv:
        yield srv.app[SERVICES]


async def _customer(services: Services) -> str:
    assert services.directory is not None
    await services.shop.put_product("tea", {"name": "Tea", "prices": {"EUR": 3.5}})
    return str((await services.directory.create_contact({"name": "Kay", "currency": "EUR"}))["id"])


async def test_every_payment_of_a_busy_order_reaches_the_lead(services: Services) -> None:
    cid = await _customer(services)
    order = await services.shop.place_order(cid, [("tea", 1)], source="api")
    rounds = rules.MAX_HISTORY // 2 + 5  # past the history's cap
    for _ in range(rounds):
        await services.shop.change_order(order["id"], {"payment": "paid"}, by="sam")
        await services.shop.change_order(order["id"], {"payment": "unpaid"}, by="sam")
    await services.leads.idle()
    history = await services.leads.history(order["lead"], limit=2000)
    assert sum(e["type"] == "order.paid" for e in history) == rounds


async def test_a_keyed_retry_after_a_failed_follow_up_makes_no_second_order_and_one_event(
        services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    cid = await _customer(services)
    shop = services.shop
    # The first attempt: the order is saved with its follow-up, which then meets an outage.
    failed = fail_once(monkeypatch, services.leads, "deliver")
    order = await shop.place_order(cid, [("tea", 2)], source="order_link", key="k1")
    assert failed
    # The customer's retry of the same submit: the same order; the follow-up stays in the outbox.
    again = await shop.place_order(cid, [("tea", 2)], source="order_link", key="k1")
    assert order["id"] == again["id"]
    assert await shop.sweep(grace=0) == 1 and await shop.sweep(grace=0) == 0
    await services.leads.idle()
    history = await services.leads.history(order["lead"] or "")
    assert [e["type"] for e in history if e["type"].startswith("order.")] == ["order.created"]
    assert services.directory is not None
    card = await services.directory.get("contact", cid)
    assert card is not None and card["status"] == "current"
