"""An outage between an order's write and what follows it delays the follow-up, never drops it:
the write records it (``sb:shop:{shop}:unsent``), a crash or a CRM/Redis error leaves it there,
and the worker's sweep does it once its grace has passed, so ``order.paid`` still reaches the
automations, once, and the customer still becomes current. A normal change leaves nothing."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis

from bot.server.keys import SERVICES
from bot.server.services import Services
from tests.shop.conftest import AS_ADMIN, AS_SUPPORT, customer, product
from tests.shop.test_events_end_to_end import DOC, _lead, _order_events, server  # noqa: F401 - the fixture
from tests.waiting import wait_for

Call = Callable[..., Awaitable[Any]]
#: The outbox's keys (``bot.store.shop``), spelled out: the test runs against code without them too.
UNSENT, UNSENT_AT = "sb:shop:{shop}:unsent", "sb:shop:{shop}:unsent:at"


class Outage(Exception):
    """What the crash seam raises (a CRM or Redis error between the order's write and its follow-up)."""


def fail_once(monkeypatch: pytest.MonkeyPatch, target: object, name: str) -> list[int]:
    """``target.name`` raises once, then works; the list counts the calls that failed."""
    real: Call = getattr(target, name)
    failed: list[int] = []

    async def seam(*args: Any, **kwargs: Any) -> Any:
        if not failed:
            failed.append(1)
            raise Outage(name)
        return await real(*args, **kwargs)
    monkeypatch.setattr(target, name, seam)
    return failed


async def _pending(redis: Redis) -> tuple[int, int]:
    return int(await redis.hlen(UNSENT)), int(await redis.zcard(UNSENT_AT))


async def _setup(api: ClientSession) -> str:
    r = await api.put("/api/automations/sales", json=DOC, headers=AS_ADMIN)
    assert r.status in (200, 201), await r.text()
    await product(api, "tea", prices={"EUR": 3.5})
    return await customer(api, name="Ada", currency="EUR")


async def _tea_order(api: ClientSession) -> dict[str, Any]:
    """A customer set up (``_setup``) and their order of one tea."""
    cid = await _setup(api)
    r = await api.post("/api/orders", json={"customer": cid, "items": [{"sku": "tea"}]}, headers=AS_SUPPORT)
    assert r.status == 201, await r.text()
    order: dict[str, Any] = await r.json()
    return order


async def test_a_crm_error_before_the_events_delays_them_and_the_customer_becoming_current(
        server: TestServer, redis: Redis, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    svc: Services = server.app[SERVICES]
    async with ClientSession(base_url=str(server.make_url(""))) as api:
        cid = await _setup(api)
        assert svc.shop.directory is not None
        failed = fail_once(monkeypatch, svc.shop.directory, "update_contact")
        r = await api.post("/api/orders", json={"customer": cid, "items": [{"sku": "tea"}]}, headers=AS_SUPPORT)
        assert r.status == 201, await r.text()  # the order is made: its follow-up waits
        order = await r.json()
        assert failed and await _pending(redis) == (1, 1)
        await svc.leads.idle()
        assert await _order_events(api, order["lead"]) == []
        assert (await (await api.get(f"/api/crm/contacts/{cid}", headers=AS_ADMIN)).json())["status"] != "current"
        assert await svc.shop.sweep() == 0  # within its grace: the writer may still be at it
        assert await svc.shop.sweep(grace=0) == 1
        await svc.leads.idle()
        assert await _order_events(api, order["lead"]) == ["order.created"]
        assert (await (await api.get(f"/api/crm/contacts/{cid}", headers=AS_ADMIN)).json())["status"] == "current"
        assert await _pending(redis) == (0, 0)
        assert await svc.shop.sweep(grace=0) == 0


async def test_order_paid_lost_to_a_crash_is_delivered_by_the_sweep_once(
        server: TestServer, redis: Redis, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    svc: Services = server.app[SERVICES]
    async with ClientSession(base_url=str(server.make_url(""))) as api:
        order = await _tea_order(api)
        lead = order["lead"]
        assert await _pending(redis) == (0, 0)  # a normal order leaves nothing behind
        failed = fail_once(monkeypatch, svc.leads, "deliver")
        r = await api.patch(f"/api/orders/{order['id']}", json={"payment": "paid"}, headers=AS_SUPPORT)
        assert r.status == 200, await r.text()
        assert failed and await _pending(redis) == (1, 1)
        await svc.leads.idle()
        assert await _order_events(api, lead) == ["order.created"]
        assert (await _lead(api, lead))["stage"] != "Won"
        assert await svc.shop.sweep(grace=0) == 1
        await svc.leads.idle()
        assert await _order_events(api, lead) == ["order.created", "order.paid"]
        found = await _lead(api, lead)
        assert found["stage"] == "Won" and "paid" in found["tags"] and found["contacts"][0].get("score") == 20
        assert await _pending(redis) == (0, 0)


async def test_a_follow_up_done_but_not_cleared_is_redone_and_its_events_count_once(
        server: TestServer, redis: Redis, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    svc: Services = server.app[SERVICES]
    async with ClientSession(base_url=str(server.make_url(""))) as api:
        order = await _tea_order(api)
        failed = fail_once(monkeypatch, svc.shop.store, "sent")  # Redis went away after the events left
        r = await api.patch(f"/api/orders/{order['id']}", json={"payment": "paid", "status": "confirmed"},
                            headers=AS_SUPPORT)
        assert r.status == 200, await r.text()
        assert failed and await _pending(redis) == (1, 1)
        assert await svc.shop.sweep(grace=0) == 1
        await svc.leads.idle()
        assert await _order_events(api, order["lead"]) == ["order.created", "order.shipment_changed",
                                                                "order.shipment_approved", "order.paid"]
        assert (await _lead(api, order["lead"]))["contacts"][0].get("score") == 20  # paid once, counted once
        assert await _pending(redis) == (0, 0)


async def test_a_sweep_that_fails_again_keeps_the_follow_up_for_a_later_round(
        server: TestServer, redis: Redis, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    svc: Services = server.app[SERVICES]
    async with ClientSession(base_url=str(server.make_url(""))) as api:
        order = await _tea_order(api)
        fail_once(monkeypatch, svc.leads, "deliver")
        await api.patch(f"/api/orders/{order['id']}", json={"payment": "paid"}, headers=AS_SUPPORT)
        fail_once(monkeypatch, svc.leads, "deliver")  # still away at the first sweep
        assert await svc.shop.sweep(grace=0) == 0
        assert await _pending(redis) == (1, 1)
        assert await svc.shop.sweep() == 0  # claimed just now: the next round waits a grace
        assert await svc.shop.sweep(grace=0) == 1
        await svc.leads.idle()
        assert await _order_events(api, order["lead"]) == ["order.created", "order.paid"]
        assert await _pending(redis) == (0, 0)


async def test_the_workers_loop_sweeps_once_the_grace_has_passed(
        server: TestServer, redis: Redis, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    svc: Services = server.app[SERVICES]
    async with ClientSession(base_url=str(server.make_url(""))) as api:
        order = await _tea_order(api)
        fail_once(monkeypatch, svc.leads, "deliver")
        await api.patch(f"/api/orders/{order['id']}", json={"payment": "paid"}, headers=AS_SUPPORT)
        assert await _pending(redis) == (1, 1)
        monkeypatch.setattr(svc.shop, "clock", lambda: time.time() + 60)  # the grace has passed

        async def swept() -> bool:
            await svc.leads.idle()
            return await _pending(redis) == (0, 0) and await _order_events(api, order["lead"]) == [
                "order.created", "order.paid"]
        await wait_for(swept, what="the running worker's sweeper to deliver order.paid")
