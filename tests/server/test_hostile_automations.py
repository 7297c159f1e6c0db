"""The automations' routes under hostile input, over real HTTP against the real server and Redis:
``POST /api/events`` (token and ``[events]`` signature: bad, missing, for another body, replayed;
control characters, NaN, huge and deep bodies; a flood from one client), ``PUT
/api/automations/{id}`` (every problem named with its pointer), the read routes with odd ids
(``/api/leads/{id}/events``, ``/api/automations/{id}/counts``, ``/jobs``, ``/versions/{n}``) and
``POST /api/outbound``. Always a 4xx or a 429, never a 5xx, no traceback in the log, and the
lead queues keep draining."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import json
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis

from bot.server.keys import SERVICES
from bot.store.keys import ConversationKey
from tests.rawhttp import raw_request
from tests.server.conftest import make_config, running
from tests.server.test_edge_input import DEEP, tracebacks
from tests.waiting import wait_for

SECRET = "hostile-events-secret"
OPERATOR = {"Authorization": "Bearer operator-olga", "Content-Type": "application/json"}
TOKENS = [{"token": "operator-olga", "role": "operator", "name": "Olga"}]
DOC: dict[str, Any] = {"format": "salesbot.automations/1", "id": "sales", "pipeline": "Sales",
                       "rules": [{"id": "hello", "stage": "Incoming", "on": ["created"],
                                  "do": {"actions": [{"do": "tags", "add": ["hello"]}]}}],
                       "triggers": [{"id": "paid", "stage": "Won", "on": "order.paid"}]}


def _soon(seconds: float) -> str:
    return datetime.fromtimestamp(time.time() + seconds, UTC).isoformat()


def _config(redis_url: str, tmp_path: Path, **extra: Any) -> object:
    (tmp_path / "sales.json").write_text(json.dumps(DOC))
    return make_config(redis_url, tokens=TOKENS, events={"secret": SECRET}, automations_dir=str(tmp_path), **extra)


@pytest.fixture
async def server(redis: Redis, redis_url: str, tmp_path: Path) -> AsyncIterator[TestServer]:
    async with running(_config(redis_url, tmp_path)) as srv:
        yield srv


def _signature(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def _lead(server: TestServer) -> str:
    directory = server.app[SERVICES].directory
    assert directory is not None
    lead = str((await directory.create_lead({"name": "Deal"}))["id"])
    await server.app[SERVICES].leads.idle()
    return lead


async def _event_ids(http: ClientSession, lead: str) -> list[str]:
    r = await http.get(f"/api/leads/{lead}/events", headers=OPERATOR)
    assert r.status == 200
    return [e["id"] for e in (await r.json())["events"] if e["role"] == "event" and e["source"] == "api"]


async def _drained(server: TestServer, redis: Redis, lead: str) -> None:
    """The lead's queue is empty and free (nothing stuck, nothing parked)."""
    key = ConversationKey(f"lead:{lead}")

    async def empty() -> bool:
        await server.app[SERVICES].leads.idle()
        return await redis.llen(key.inbox) == 0  # and the lock with it
    await wait_for(empty, what="the lead queue to drain")
    assert "parked" not in await server.app[SERVICES].store.meta(f"lead:{lead}")


async def test_signatures_that_are_wrong_missing_or_for_another_body_are_401_and_store_nothing(
        server: TestServer, http: ClientSession, redis: Redis, caplog: pytest.LogCaptureFixture) -> None:
    lead = await _lead(server)
    body = json.dumps({"id": "evt-s1", "type": "order.paid", "lead": {"id": lead}}).encode()
    other = json.dumps({"id": "evt-s2", "type": "order.paid", "lead": {"id": lead}}).encode()
    json_type = {"Content-Type": "application/json"}
    for signature in (_signature(other), _signature(body, "wrong-secret"), _signature(body).upper(),
                      "sha1=" + hmac.new(SECRET.encode(), body, hashlib.sha1).hexdigest(), "", "sha256=",
                      _signature(body) + "00", "sha256=" + "zz" * 32):
        r = await http.post("/api/events", data=body, headers={**json_type, "X-Salesbot-Signature": signature})
        assert r.status == 401, (signature, await r.text())
        assert (await r.json())["error"]["code"] == "bad_signature"
    status, _ = await raw_request(str(server.make_url("")), "POST", b"/api/events", body=body, headers=[
        (b"Content-Type", b"application/json"), (b"X-Salesbot-Signature", b"sha256=\xff\xfe\x00\x01")])
    assert status in (400, 401)
    r = await http.post("/api/events", data=body, headers=json_type)  # neither a signature nor a token
    assert r.status == 401
    assert await _event_ids(http, lead) == []
    # the right signature: stored once; the same signed body again (a replay) is a duplicate
    for duplicate in (False, True):
        r = await http.post("/api/events", data=body, headers={**json_type, "X-Salesbot-Signature": _signature(body)})
        assert r.status == 202 and (await r.json())["duplicate"] is duplicate
    await _drained(server, redis, lead)
    assert await _event_ids(http, lead) == ["evt-s1"]
    assert tracebacks(caplog) == []


@pytest.mark.parametrize(("data", "status", "pointer"), [
    ({"id": "evt\u0001", "type": "order.paid"}, 422, "/id"),  # control characters anywhere: each place named
    ({"type": "order.paid\u0000"}, 422, "/type"),
    ({"type": "order.paid", "data": {"k\u001f": 1}}, 422, "/data/k\u001f"),
    ({"type": "order.paid", "data": {"list": ["ok", "\u202e\u2028"]}}, 422, "/data/list/1"),
    ({"id": "x" * 201, "type": "order.paid"}, 422, "/id"),
    ({"type": "x" * 101}, 422, "/type"),
    ({"type": "order.paid", "at": "9999-99-99T99:99:99Z"}, 422, "/at"),
    ({"type": "order.paid", "at": "9999-12-31T23:59:59Z"}, 422, "/at"),  # would hold its idle rules for ever
    ({"type": "custom.ping", "at": _soon(60)}, 202, None),  # a sender's clock a minute ahead is fine
    ({"type": "custom.ping", "at": "1999-01-01T00:00:00"}, 202, None),  # an old event (an import)
    ({"type": "order.paid", "data": []}, 422, "/data"),
    ({"type": "order.paid", "data": {"n": 2**64}}, 400, None),  # beyond 64 bits
    ({"type": "order.paid", "lead": {"id": 2**63 - 1}, "data": {}}, 404, None),
    ({"type": "order.paid", "contact": {"phone": "+90 555 111 22 33" * 4}}, 422, "/contact/phone"),
])
async def test_hostile_event_fields_are_4xx_naming_the_field(
        server: TestServer, http: ClientSession, caplog: pytest.LogCaptureFixture,
        data: dict[str, Any], status: int, pointer: str | None) -> None:
    lead = await _lead(server)
    body = {"lead": {"id": lead}, **data}
    r = await http.post("/api/events", data=json.dumps(body).encode(), headers=OPERATOR)
    assert r.status == status, await r.text()
    if pointer is not None:
        assert pointer in {d["pointer"] for d in (await r.json())["error"]["details"]}
    assert tracebacks(caplog) == []


@pytest.mark.parametrize("raw", [
    b'{"type": "order.paid", "lead": {"id": "1"}, "data": {"v": -Infinity}}',
    b'{"type": "order.paid", "lead": {"id": "1"}, "data": {"v": "\\udc00"}}',
    b'{"type": "order.paid", "lead": {"id": "1"}, "data": ' + DEEP + b"}",
    b'{"type": "order.paid", "lead": {"id": "1"}, "data": {"x": "' + b"\xc3\x28" + b'"}}',
    b"\xef\xbb\xbf\xef\xbb\xbf{}",
    b"",
])
async def test_bodies_that_are_not_strict_json_are_400_or_413(http: ClientSession, raw: bytes) -> None:
    r = await http.post("/api/events", data=raw, headers=OPERATOR)
    assert r.status in (400, 413), await r.text()


async def test_a_body_over_two_mebibytes_is_413_and_one_at_the_event_limit_too(http: ClientSession) -> None:
    for size in (64 * 1024 + 1, 3 * 1024 * 1024):
        r = await http.post("/api/events", data=io.BytesIO(b"{" + b" " * size + b"}"), headers=OPERATOR)
        assert r.status == 413, size


async def test_deep_but_allowed_data_is_stored_and_cut_in_the_history(
        server: TestServer, http: ClientSession, redis: Redis) -> None:
    lead = await _lead(server)
    deep: Any = "bottom"
    for _ in range(13):  # the body nests 16 levels: the most an event may
        deep = [deep]
    data = {"deep": deep, "long": "y" * 60_000, **{f"k{n}": n for n in range(100)}}
    r = await http.post("/api/events", json={"id": "evt-deep", "type": "custom.import", "lead": {"id": lead},
                                             "data": data}, headers=OPERATOR)
    assert r.status == 202, await r.text()
    await _drained(server, redis, lead)
    r = await http.get(f"/api/leads/{lead}/events", headers=OPERATOR)
    entry = next(e for e in (await r.json())["events"] if e.get("id") == "evt-deep")
    assert len(entry["data"]) == 50 and len(entry["data"]["long"]) <= 501  # bounded in the history


async def test_a_flood_of_events_from_one_client_is_429_with_retry_after_and_the_queue_drains(
        redis: Redis, redis_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # a token back every ~17 hours: a slow machine's 30 requests cannot see a refill (counted, not timed)
    limits = {"events_per_ip": {"per_minute": 0.001, "burst": 20}}
    async with running(_config(redis_url, tmp_path, limits=limits)) as srv, \
            ClientSession(base_url=str(srv.make_url(""))) as http:
        lead = await _lead(srv)
        statuses: list[int] = []
        for n in range(30):
            body = json.dumps({"id": f"evt-{n}", "type": "custom.ping", "lead": {"id": lead}}).encode()
            r = await http.post("/api/events", data=body,
                                headers={"Content-Type": "application/json", "X-Salesbot-Signature": _signature(body)})
            statuses.append(r.status)
            if r.status == 429:
                assert int(r.headers["Retry-After"]) >= 1
                assert (await r.json())["error"]["code"] == "rate_limited"
        assert statuses == [202] * 20 + [429] * 10
        await _drained(srv, redis, lead)
        assert await _event_ids(http, lead) == [f"evt-{n}" for n in range(20)]  # in order, once each
    limited = [r for r in caplog.records if r.getMessage() == "limits.exceeded"]
    assert len(limited) == 1  # logged once a minute, not once per refusal
    assert tracebacks(caplog) == []


async def test_an_automation_document_with_many_problems_names_each_with_its_pointer(http: ClientSession) -> None:
    doc = {**DOC, "rules": [
        {"id": "bad id!", "stage": "Nowhere", "on": ["created"], "do": {"actions": [{"do": "tags", "add": ["x"]}]}},
        {"id": "r2", "stage": "Incoming", "on": ["teleported"], "do": {"actions": []}},
        {"id": "r3", "stage": "Incoming", "on": ["created"], "delay": "soon", "do": {"start_bot": "\u0000"}}],
        "triggers": [{"id": "t", "stage": "Won", "on": "order.nope"}]}
    r = await http.put("/api/automations/sales", json=doc, headers=OPERATOR)
    assert r.status == 422, await r.text()
    pointers = [d["pointer"] for d in (await r.json())["error"]["details"]]
    for where in ("/rules/0/id", "/rules/1/on/0", "/rules/2/delay", "/triggers/0/on"):
        assert any(p.startswith(where) for p in pointers), (where, pointers)


@pytest.mark.parametrize("raw", [
    b'{"format": "salesbot.automations/1", "id": "sales", "pipeline": "Sales", "rules": [], "x": NaN}',
    b'{"format": "salesbot.automations/1", "id": "sales", "pipeline": "Sales", "rules": ' + DEEP + b"}",
    b'{"format": "salesbot.automations/1", "id": "sales", "pipeline": "Sales", "n": 1e400}',
    b'{"format": "salesbot.automations/1", "id": "sales", "pipeline": "Sales\\u0000"}',
    b"[]", b"null", b'"sales"', b"{",
])
async def test_automation_documents_that_are_not_documents_are_4xx(http: ClientSession, raw: bytes) -> None:
    r = await http.put("/api/automations/sales", data=raw, headers=OPERATOR)
    assert 400 <= r.status < 500, await r.text()


async def test_a_huge_automation_document_is_refused_or_checked_without_a_5xx(http: ClientSession) -> None:
    rule = {"stage": "Incoming", "on": ["created"], "do": {"actions": [{"do": "tags", "add": ["x"]}]}}
    many = {**DOC, "rules": [{**rule, "id": f"r{n}"} for n in range(3000)]}
    r = await http.put("/api/automations/sales", data=io.BytesIO(json.dumps(many).encode()), headers=OPERATOR)
    assert 400 <= r.status < 500, r.status  # a document is bounded (rules and bytes)
    r = await http.put("/api/automations/sales", data=io.BytesIO(b'{"id": "sales", "x": "' + b"a" * 3_000_000 + b'"}'),
                       headers=OPERATOR)
    assert r.status == 413


@pytest.mark.parametrize("path", [
    "/api/leads/%00/events", "/api/leads/{x}/events", "/api/leads/" + "9" * 5000 + "/events",
    "/api/leads/..%2F..%2Fetc/events", "/api/leads/%E2%80%AE1/events", "/api/leads/1/events?limit=nan",
    "/api/leads/1/events?limit=1e400", "/api/leads/1/events?limit=-1",
    "/api/automations/%00/counts", "/api/automations/" + "a" * 5000 + "/counts", "/api/automations/{sales}/counts",
    "/api/automations/%00/jobs", "/api/automations/" + "a" * 5000 + "/jobs", "/api/automations/sa%0Ales/jobs",
    "/api/automations/sales/versions/nan", "/api/automations/sales/versions/1e400",
    "/api/automations/sales/versions/99999999999999999999", "/api/automations/sales/versions/-1",
    "/api/automations/%00", "/api/automations/%00/versions", "/api/automations/" + "a" * 5000,
])
async def test_read_routes_with_odd_ids_are_4xx(http: ClientSession, path: str,
                                               caplog: pytest.LogCaptureFixture) -> None:
    r = await http.get(path, headers=OPERATOR)
    assert 400 <= r.status < 500 or (r.status == 200 and path.startswith("/api/leads/1/")), (path, r.status)
    assert tracebacks(caplog) == []


@pytest.mark.parametrize("body", [
    {"bot": "welcome\u0000", "contact": {"id": "1"}},
    {"bot": "welcome", "contact": {"id": "1"}, "account": ["a"] * 11},
    {"bot": "welcome", "contact": {"id": "1"}, "variables": {"v": "x" * 20_000}},
    {"bot": "welcome", "contact": {"id": "1"}, "variables": [1]},
    {"bot": "welcome", "contact": {"id": "1", "phone": "+1"}},
    {"bot": "welcome", "contact": {"id": 2**63 - 1}},
    {"bot": "welcome", "contact": {"id": "{1}"}},
    {"bot": "welcome", "contact": {"phone": "\u202e+905551112233"}},
    {"bot": "welcome", "contact": {"id": "1"}, "lead": "\u0007"},
    {"bot": "nope", "contact": {"id": "1"}},
    {"bot": "welcome", "contact": {"email": "x" * 300}},
])
async def test_outbound_requests_that_cannot_be_served_are_4xx(
        http: ClientSession, body: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    r = await http.post("/api/outbound", data=json.dumps(body).encode(), headers=OPERATOR)
    assert 400 <= r.status < 500, await r.text()
    assert tracebacks(caplog) == []


@pytest.mark.parametrize("raw", [b'{"bot": "welcome", "contact": {"id": "1"}, "variables": {"v": NaN}}',
                                 b'{"bot": "welcome", "contact": {"id": "1"}, "variables": ' + DEEP + b"}"])
async def test_outbound_bodies_that_are_not_strict_json_are_400(http: ClientSession, raw: bytes) -> None:
    r = await http.post("/api/outbound", data=raw, headers=OPERATOR)
    assert r.status == 400, await r.text()


async def test_no_log_line_of_a_refused_event_carries_the_secret_or_the_signature(
        http: ClientSession, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    body = b'{"type": "order.paid", "lead": {"id": "1"}}'
    forged = _signature(body, "forged")
    r = await http.post("/api/events", data=body, headers={"Content-Type": "application/json",
                                                           "X-Salesbot-Signature": forged})
    assert r.status == 401
    logged = " ".join(f"{r.getMessage()} {vars(r)}" for r in caplog.records)
    assert SECRET not in logged and forged not in logged


class _Held:
    """The rules' effect runner, held until the test releases it (a CRM or webhook that hangs)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.release = asyncio.Event()
        self.started = asyncio.Event()

    async def run(self, lead_id: str, effects: Any) -> Any:
        self.started.set()
        await self.release.wait()
        return await self.inner.run(lead_id, effects)


async def test_a_slow_rule_never_holds_the_sender_of_an_event(
        server: TestServer, http: ClientSession, redis: Redis) -> None:
    services = server.app[SERVICES]
    lead = await _lead(server)
    held = _Held(services.leads.effects)
    services.leads.effects = held
    try:
        for n in range(5):  # the first takes the queue and hangs in its rule; none of them waits for it
            body = {"id": f"evt-slow-{n}", "type": "order.paid", "lead": {"id": lead}}
            r = await asyncio.wait_for(http.post("/api/events", json=body, headers=OPERATOR), 5.0)
            assert r.status == 202, await r.text()
        await asyncio.wait_for(held.started.wait(), 5.0)
    finally:
        held.release.set()
    services.leads.effects = held.inner
    await _drained(server, redis, lead)
    assert await _event_ids(http, lead) == [f"evt-slow-{n}" for n in range(5)]
