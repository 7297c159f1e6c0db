"""``GET /api/automations/{id}/counts`` over real HTTP against a real Redis: the counters the lead
loop writes (``sb:automations:{<id>}:counts``), grouped per rule; roles; hostile ids are 404s."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from aiohttp import ClientSession
from redis.asyncio import Redis

from tests.server.conftest import ADMIN, AUTOMATIONS, client, make_config

AUTH = {"Authorization": f"Bearer {ADMIN}"}
SUPPORT = {"Authorization": "Bearer support-token-123"}
OPERATOR = {"Authorization": "Bearer operator-token-123"}
TOKENS = [{"token": "support-token-123", "role": "support", "name": "sam"},
          {"token": "operator-token-123", "role": "operator", "name": "olga"}]


async def _validate(http: ClientSession, status: int, body: Any) -> None:
    doc = await (await http.get("/api/openapi.json")).json()
    op = doc["paths"]["/api/automations/{id}/counts"]["get"]
    assert set(op["x-roles"]) == {"operator", "support"}
    schema = op["responses"][str(status)]["content"]["application/json"]["schema"]
    jsonschema.validate(body, {**schema, "components": doc["components"]}, cls=jsonschema.Draft202012Validator)


async def test_counts_are_zero_until_counted_then_grouped_per_rule(redis: Redis, redis_url: str) -> None:
    async with client(make_config(redis_url, tokens=TOKENS, automations_dir=str(AUTOMATIONS))) as http:
        r = await http.get("/api/automations/sales/counts", headers=SUPPORT)
        body = await r.json()
        assert (r.status, body) == (200, {"id": "sales", "version": 1, "counts": {}})
        await _validate(http, 200, body)
        await redis.hset("sb:automations:{sales}:counts", mapping={
            "welcome_new:fired": 3, "welcome_new:acted": 2, "welcome_new:delayed": 1, "paid:acted": 5,
            "garbage": "x"})
        r = await http.get("/api/automations/sales/counts", headers=OPERATOR)
        body = await r.json()
        assert r.status == 200
        assert body["counts"] == {"welcome_new": {"fired": 3, "acted": 2, "delayed": 1}, "paid": {"acted": 5}}
        await _validate(http, 200, body)
        r = await http.get("/api/automations/sales/counts", headers=AUTH)
        assert r.status == 200


@pytest.mark.parametrize("path", [
    "/api/automations/nope/counts",
    "/api/automations/..%2F..%2Fetc/counts",
    "/api/automations/-sales/counts",
    "/api/automations/" + "a" * 300 + "/counts",
    "/api/automations/sa%00les/counts",
])
async def test_unknown_or_hostile_ids_are_404(redis: Redis, redis_url: str, path: str,
                                             caplog: pytest.LogCaptureFixture) -> None:
    async with client(make_config(redis_url, tokens=TOKENS)) as http:
        r = await http.get(path, headers=SUPPORT)
        body = await r.json()
        assert r.status == 404, body
        assert body["error"]["code"] == "not_found"
        await _validate(http, 404, body)
    assert not [rec for rec in caplog.records if rec.exc_info]


async def test_roles(redis: Redis, redis_url: str) -> None:
    async with client(make_config(redis_url, tokens=TOKENS)) as http:
        r = await http.get("/api/automations/sales/counts")
        assert r.status == 401
        r = await http.get("/api/automations/sales/counts", headers={"Authorization": "Bearer wrong"})
        assert r.status == 401
        assert json.loads(await r.text())["error"]["code"] == "unauthorized"


async def test_the_pipeline_script_is_served_and_other_names_are_404(redis: Redis, redis_url: str) -> None:
    async with client(make_config(redis_url)) as http:
        r = await http.get("/live/static/pipeline.js")
        assert (r.status, r.content_type) == (200, "application/javascript")
        assert "salesbotPipeline" in await r.text()
        for name in ("pipeline.css", "pipeline.json", "..%2Fdashboard.py", "pipeline.js.bak"):
            r = await http.get(f"/live/static/{name}")
            assert r.status == 404, name
            assert (await r.json())["error"]["code"] == "not_found"
