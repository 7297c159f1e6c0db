"""The shop's routes under hostile input, over real HTTP against the real server and Redis:
control characters, NaN and infinities, huge and deep bodies, wrong types, odd ids and query
values, wrong roles, a flood. Always a 4xx (a 429 for the flood) with the JSON error shape, never a
5xx, no traceback in the log, and nothing stored by a refused request."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import ClientSession
from redis.asyncio import Redis

from tests.rawhttp import raw_request
from tests.server.conftest import make_config, running
from tests.server.test_edge_input import DEEP, tracebacks
from tests.shop.conftest import AS_ADMIN, AS_OPERATOR, AS_SUPPORT, TOKENS, customer, product

JSON = {"Content-Type": "application/json"}
STABLE = {"http.bad_json", "shop.invalid", "shop.rejected", "shop.too_large", "shop.not_found"}
BAD_PRODUCTS: list[bytes] = [
    b"", b"null", b"[]", b'"x"', b"{", DEEP, b'{"name": "T", "prices": {"EUR": NaN}}',
    b'{"name": "T", "prices": {"EUR": Infinity}}', b'{"name": "T", "prices": {"EUR": 1e400}}',
    b'{"name": "T", "prices": {"EUR": -1}}', b'{"name": "T", "prices": {"EUR": 1.234}}',
    b'{"name": "T", "prices": {"EUR": "1"}}', b'{"name": "T", "prices": {"EUR": true}}',
    b'{"name": "T", "prices": {"eur": 1}}', b'{"name": "T", "prices": {"XYZ": 1}}', b'{"name": "T", "prices": {}}',
    b'{"name": "T", "prices": {"EUR": 99999999999999999999999}}', b'{"name": "T\\u0000", "prices": {"EUR": 1}}',
    b'{"name": "\\ud800", "prices": {"EUR": 1}}', b'{"name": "T", "prices": {"EUR": 1}, "x\\u001b": 1}',
    b'{"name": {"en": 5}, "prices": {"EUR": 1}}', b'{"name": {"<b>": "x"}, "prices": {"EUR": 1}}',
    b'{"name": "", "prices": {"EUR": 1}}', b'{"name": "T", "prices": {"EUR": 1}, "active": "yes"}',
    b'{"name": "T", "prices": {"EUR": 1}, "image_url": "javascript:alert(1)"}',
    b'{"name": "T", "prices": {"EUR": 1}, "sku": "other"}', b'\xff\xfe{}',
    json.dumps({"name": "T" * 201, "prices": {"EUR": 1}}).encode(),
    json.dumps({"name": "T", "prices": {"EUR": 1}, "description": "d" * 300_000}).encode(),
]
BAD_ORDERS: list[Any] = [
    None, [], "x", {}, {"customer": "C"}, {"customer": "C", "items": []}, {"customer": "C", "items": "tea"},
    {"customer": "C", "items": [["tea", 1]]}, {"customer": "C", "items": [{"sku": "tea", "qty": 0}]},
    {"customer": "C", "items": [{"sku": "tea", "qty": -1}]}, {"customer": "C", "items": [{"sku": "tea", "qty": 1.5}]},
    {"customer": "C", "items": [{"sku": "tea", "qty": "2"}]}, {"customer": "C", "items": [{"sku": "tea", "qty": True}]},
    {"customer": "C", "items": [{"sku": "tea", "qty": 2**63 - 1}]}, {"customer": "C", "items": [{"sku": None}]},
    {"customer": "C", "items": [{"sku": "../../x"}]}, {"customer": "C", "items": [{"sku": "tea\u0000"}]},
    {"customer": "C", "items": [{"sku": "tea"}] * 1000},
    {"customer": "C", "items": [{"sku": f"s{i}"} for i in range(60)]},
    {"customer": None, "items": [{"sku": "tea"}]}, {"customer": ["C"], "items": [{"sku": "tea"}]},
    {"customer": "C", "lead": {"id": 1}, "items": [{"sku": "tea"}]},
    {"customer": "C", "items": [{"sku": "tea"}], "x": 1},
    {"customer": "../etc", "items": [{"sku": "tea"}]}, {"customer": "C" * 100, "items": [{"sku": "tea"}]},
    {"customer": "C", "lead": "no-such-lead", "items": [{"sku": "tea"}]},
]
BAD_PATCHES: list[Any] = [None, [], {}, {"status": "lost"}, {"status": None}, {"payment": "half"}, {"payment": True},
                          {"tracking": 5}, {"tracking": "x" * 201}, {"tracking": "a\u0007b"}, {"note": "x"},
                          {"status": "NEW"}, {"status": ["new"]}]


def _shape(body: Any) -> bool:
    return isinstance(body, dict) and isinstance(body.get("error"), dict) and "code" in body["error"]


async def _check(r: Any, *allowed: int) -> None:
    text = await r.text()
    assert r.status in allowed, f"{r.method} {r.url}: {r.status} {text[:300]}"
    if r.status != 204:
        assert r.content_type == "application/json" and _shape(json.loads(text)), f"{r.url}: {text[:300]}"


async def test_bad_products_are_refused_and_nothing_is_stored(api: ClientSession, redis: Redis,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    for body in BAD_PRODUCTS:
        caplog.clear()
        r = await api.put("/api/products/tea", data=body, headers={**AS_OPERATOR, **JSON})
        await _check(r, 400, 413, 422)
        logged = [rec.getMessage() for rec in caplog.records]  # one line, with a stable event name
        assert len(logged) == 1 and logged[0] in STABLE, (body[:80], logged)
    for sku in ("a b", "x" * 65, "tea%00", "-tea", "%F0%9F%8D%B5", "t%0Aa"):
        r = await api.put(f"/api/products/{sku}", json={"name": "T", "prices": {"EUR": 1}}, headers=AS_OPERATOR)
        await _check(r, 404, 422)
        await _check(await api.get(f"/api/products/{sku}", headers=AS_SUPPORT), 404)
        await _check(await api.delete(f"/api/products/{sku}", headers=AS_OPERATOR), 404)
    assert (await (await api.get("/api/products", headers=AS_SUPPORT)).json())["products"] == []
    await _check(await api.get("/api/products", params={"active": "maybe"}, headers=AS_SUPPORT), 400)
    assert tracebacks(caplog) == []


async def test_bad_orders_are_refused_and_nothing_is_made(api: ClientSession, redis: Redis,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    await product(api, "tea", prices={"EUR": 1})
    cid = await customer(api)
    for body in BAD_ORDERS:
        doc = json.loads(json.dumps(body).replace('"C"', json.dumps(cid)))
        r = await api.post("/api/orders", json=doc, headers=AS_SUPPORT)
        await _check(r, 400, 404, 413, 422)
    padded = json.dumps({"customer": cid, "items": [{"sku": "tea"}], "pad": "x" * 70_000}).encode()
    for raw in (b"", b"{", DEEP, b'{"customer": NaN}', b"\xff", b'{"customer": "1", "items": [{"qty": 1e999}]}',
                padded, b"[" * 3_000_000):
        await _check(await api.post("/api/orders", data=io.BytesIO(raw), headers={**AS_SUPPORT, **JSON}),
                     400, 413, 422)
    for key in ("", "k" * 201, "a\tb"):
        r = await api.post("/api/orders", json={"customer": cid, "items": [{"sku": "tea"}]},
                           headers={**AS_SUPPORT, "Idempotency-Key": key})
        await _check(r, 400)
    status, body = await raw_request(str(api._base_url), "POST", b"/api/orders",
                                     [(b"Authorization", AS_SUPPORT["Authorization"].encode()),
                                      (b"Idempotency-Key", b"\xff\xfe")],
                                     body=json.dumps({"customer": cid, "items": [{"sku": "tea"}]}).encode())
    assert status == 400 and _shape(json.loads(body))
    listing = await (await api.get("/api/orders", headers=AS_SUPPORT)).json()
    assert listing["orders"] == []
    assert await redis.get("sb:shop:{shop}:seq") is None  # no order number spent either
    assert tracebacks(caplog) == []


async def test_bad_changes_and_odd_ids_and_queries_are_refused(api: ClientSession,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    await product(api, "tea", prices={"EUR": 1})
    cid = await customer(api)
    order = await (await api.post("/api/orders", json={"customer": cid, "items": [{"sku": "tea"}]},
                                  headers=AS_SUPPORT)).json()
    for patch in BAD_PATCHES:
        await _check(await api.patch(f"/api/orders/{order['id']}", json=patch, headers=AS_SUPPORT), 400, 422)
    for raw in (b"{", DEEP, b'{"tracking": NaN}', b"\xff"):
        await _check(await api.patch(f"/api/orders/{order['id']}", data=raw, headers={**AS_SUPPORT, **JSON}), 400)
    for oid in ("0", "999999", "a%00b", "x" * 100, "%F0%9F%8D%B5"):
        await _check(await api.get(f"/api/orders/{oid}", headers=AS_SUPPORT), 404)
        await _check(await api.patch(f"/api/orders/{oid}", json={"payment": "paid"}, headers=AS_SUPPORT), 404)
    for query in ({"status": "lost"}, {"payment": "x"}, {"customer": "a b"}, {"limit": "NaN"}, {"limit": "1e9999"},
                  {"before": "-1"}, {"before": "x"}, {"before": str(2**80)}, {"customer": "\u0000"}):
        await _check(await api.get("/api/orders", params=query, headers=AS_SUPPORT), 400)
    again = await (await api.get(f"/api/orders/{order['id']}", headers=AS_SUPPORT)).json()
    assert again["history"] == order["history"]  # nothing refused was applied
    assert tracebacks(caplog) == []


@pytest.fixture
async def lenient(redis: Redis, redis_url: str) -> AsyncIterator[ClientSession]:
    """A server whose auth-failure limit lets every refusal of the role test through."""
    limits = {"auth_failures_per_ip": {"per_minute": 6000, "burst": 1000}}
    async with running(make_config(redis_url, tokens=TOKENS, limits=limits)) as srv, \
            ClientSession(base_url=str(srv.make_url(""))) as api:
        yield api


async def test_no_token_or_a_wrong_one_is_refused_on_every_route(lenient: ClientSession) -> None:
    api = lenient
    routes = [("GET", "/api/products"), ("GET", "/api/products/tea"), ("PUT", "/api/products/tea"),
              ("DELETE", "/api/products/tea"), ("GET", "/api/orders"), ("POST", "/api/orders"),
              ("GET", "/api/orders/1"), ("PATCH", "/api/orders/1")]
    for method, path in routes:
        await _check(await api.request(method, path, json={}), 401)
        await _check(await api.request(method, path, json={}, headers={"Authorization": "Bearer wrong-token"}), 401)
    for method, path in routes[2:4]:
        await _check(await api.request(method, path, json={"name": "T", "prices": {"EUR": 1}}, headers=AS_SUPPORT),
                     403)
    await product(api, "tea", prices={"EUR": 1})
    r = await api.put("/api/products/tea", json={"name": "T", "prices": {"EUR": 2}}, headers=AS_ADMIN)
    assert r.status == 200


async def test_a_flood_of_orders_from_one_client_is_429_with_retry_after(
        redis: Redis, redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    # a token back every ~17 hours: a slow machine's requests cannot see a refill (counted, not timed)
    limits = {"orders_per_ip": {"per_minute": 0.001, "burst": 5}}
    async with running(make_config(redis_url, tokens=TOKENS, limits=limits)) as srv, \
            ClientSession(base_url=str(srv.make_url(""))) as api:
        await product(api, "tea", prices={"EUR": 1})
        cid = await customer(api)
        statuses = []
        for _ in range(8):
            r = await api.post("/api/orders", json={"customer": cid, "items": [{"sku": "tea"}]}, headers=AS_SUPPORT)
            statuses.append(r.status)
            if r.status == 429:
                assert int(r.headers["Retry-After"]) >= 1 and (await r.json())["error"]["code"] == "rate_limited"
        assert statuses == [201] * 5 + [429] * 3
        r = await api.patch("/api/orders/1", json={"payment": "paid"}, headers=AS_SUPPORT)
        assert r.status == 429
        assert (await api.get("/api/orders/1", headers=AS_SUPPORT)).status == 200  # reading is not limited
    assert tracebacks(caplog) == []
