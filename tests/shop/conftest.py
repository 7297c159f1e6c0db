"""A running app with a token per role, and helpers to fill the catalogue and make customers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis

from tests.server.conftest import ADMIN, make_config, running

TOKENS = [{"token": "support-sam-token", "role": "support", "name": "Sam"},
          {"token": "operator-olga-token", "role": "operator", "name": "Olga"}]
AS_ADMIN = {"Authorization": f"Bearer {ADMIN}"}
AS_SUPPORT = {"Authorization": "Bearer support-sam-token"}
AS_OPERATOR = {"Authorization": "Bearer operator-olga-token"}


@pytest.fixture
async def shop_server(redis: Redis, redis_url: str) -> AsyncIterator[TestServer]:
    async with running(make_config(redis_url, tokens=TOKENS)) as srv:
        yield srv


@pytest.fixture
async def api(shop_server: TestServer) -> AsyncIterator[ClientSession]:
    async with ClientSession(base_url=str(shop_server.make_url(""))) as session:
        yield session


async def customer(api: ClientSession, **card: Any) -> str:
    """A new contact of the embedded CRM with these card fields; its id."""
    r = await api.post("/api/crm/contacts", json={"name": card.pop("name", "Customer"), **card}, headers=AS_ADMIN)
    assert r.status == 201, await r.text()
    return str((await r.json())["id"])


async def product(api: ClientSession, sku: str, **body: Any) -> dict[str, Any]:
    r = await api.put(f"/api/products/{sku}", json={"name": sku.title(), **body}, headers=AS_OPERATOR)
    assert r.status in (200, 201), await r.text()
    found: dict[str, Any] = await r.json()
    return found
