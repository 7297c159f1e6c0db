"""Order events reach the automations, end to end: a person marks an order paid with ``PATCH
/api/orders/{id}`` and the document's ``order.paid`` trigger moves the order's lead to Won (and
its scoring counts it), with the real server, its lead queues and Redis. Nothing fires on the
order's making; each change emits its own event once, in order, in the lead's history."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis

from bot.server.keys import SERVICES
from tests.server.conftest import make_config, running
from tests.shop.conftest import AS_ADMIN, AS_SUPPORT, TOKENS, customer, product
from tests.waiting import wait_for

DOC = {"format": "salesbot.automations/1", "id": "sales", "pipeline": "Sales",
       "rules": [{"id": "thank", "stage": "Won", "on": ["moved_in"],
                  "do": {"actions": [{"do": "tags", "add": ["paid"]}]}}],
       "triggers": [{"id": "paid", "stage": "Won", "on": "order.paid"}],
       "scoring": [{"on": "order.paid", "add": 20}]}


@pytest.fixture
async def server(redis: Redis, redis_url: str, tmp_path: Path) -> AsyncIterator[TestServer]:
    async with running(make_config(redis_url, automations_dir=str(tmp_path), tokens=TOKENS)) as srv:
        yield srv


async def _lead(api: ClientSession, lead: str) -> dict[str, Any]:
    found: dict[str, Any] = await (await api.get(f"/api/crm/leads/{lead}", headers=AS_ADMIN)).json()
    return found


async def _order_events(api: ClientSession, lead: str) -> list[str]:
    events = (await (await api.get(f"/api/leads/{lead}/events", headers=AS_ADMIN)).json())["events"]
    return [e["type"] for e in events if e.get("role") == "event" and e["type"].startswith("order.")]


async def test_marking_an_order_paid_fires_the_order_paid_trigger(server: TestServer) -> None:
    async with ClientSession(base_url=str(server.make_url(""))) as api:
        r = await api.put("/api/automations/sales", json=DOC, headers=AS_ADMIN)
        assert r.status in (200, 201), await r.text()
        await product(api, "tea", prices={"EUR": 3.5})
        cid = await customer(api, name="Ada", currency="EUR")
        order = await (await api.post("/api/orders", json={"customer": cid, "items": [{"sku": "tea", "qty": 2}]},
                                      headers=AS_SUPPORT)).json()
        lead = order["lead"]
        assert lead is not None and (await _lead(api, lead))["contacts"][0]["id"] == cid
        await server.app[SERVICES].leads.idle()
        assert (await _lead(api, lead))["stage"] != "Won"  # made, not paid: the trigger waits
        r = await api.patch(f"/api/orders/{order['id']}", json={"payment": "paid"}, headers=AS_SUPPORT)
        assert r.status == 200

        async def won() -> bool:
            found = await _lead(api, lead)
            return found["stage"] == "Won" and "paid" in found["tags"] and found["contacts"][0].get("score") == 20
        await wait_for(won, what="the order.paid trigger's move, the Won rule's tag and the score")
        r = await api.patch(f"/api/orders/{order['id']}", json={"status": "shipped", "tracking": "TR-1"},
                            headers=AS_SUPPORT)
        assert r.status == 200
        await api.patch(f"/api/orders/{order['id']}", json={"payment": "paid"}, headers=AS_SUPPORT)  # no change
        await api.patch(f"/api/orders/{order['id']}", json={"status": "cancelled"}, headers=AS_SUPPORT)
        await server.app[SERVICES].leads.idle()
        expected = ["order.created", "order.paid", "order.shipment_changed", "order.shipment_approved",
                    "order.tracking_added", "order.cancelled"]  # approved: it left new (for shipped)
        await wait_for(lambda: _same(api, lead, expected), what="every order event once, in order")
        assert (await _lead(api, lead))["contacts"][0].get("score") == 20  # paid once, counted once


async def _same(api: ClientSession, lead: str, expected: list[str]) -> bool:
    return await _order_events(api, lead) == expected



#: A split test that ends at once: an order paid later counts as its goal for the path taken.
OFFER: dict[str, Any] = {
    "format": "salesbot.flow/1", "id": "offer", "start": "split",
    "goals": {"purchased": {"on": "order.paid", "next": "thanks"}},
    "steps": {"split": {"type": "split", "goal": "purchased",
                        "paths": [{"id": "a", "weight": 50, "next": "done"},
                                  {"id": "b", "weight": 50, "next": "done"}]},
              "done": {"type": "stop"}, "thanks": {"type": "stop"}},
}


async def test_marking_an_order_paid_counts_as_a_flows_goal(server: TestServer) -> None:
    async with ClientSession(base_url=str(server.make_url(""))) as api:
        assert (await api.put("/api/bots/offer", json=OFFER, headers=AS_ADMIN)).status == 201
        await product(api, "tea", prices={"EUR": 3.5})
        cid = await customer(api, name="Bea", currency="EUR")
        r = await api.post("/api/processes/offer/contacts", json={"contact": {"id": cid}}, headers=AS_ADMIN)
        assert r.status == 202, await r.text()

        async def goals() -> int:
            (split,) = (await (await api.get("/api/bots/offer/splits", headers=AS_ADMIN)).json())["splits"]
            return sum(int(p["goals"]) for p in split["paths"])
        order = await (await api.post("/api/orders", json={"customer": cid, "items": [{"sku": "tea"}]},
                                      headers=AS_SUPPORT)).json()
        await server.app[SERVICES].leads.idle()
        assert await goals() == 0  # made, not paid
        await api.patch(f"/api/orders/{order['id']}", json={"payment": "paid"}, headers=AS_SUPPORT)
        await server.app[SERVICES].leads.idle()
        assert await wait_for(goals, what="the goal counted") == 1
