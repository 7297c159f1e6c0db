"""``POST /api/events`` and ``GET /api/leads/{id}/events`` over real HTTP and Redis: who may send
(a token, or the ``[events]`` HMAC), whom an event concerns (lead, or a contact found or
created), dedupe by id, and a clear 4xx for everything malformed."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis

from bot.server.keys import SERVICES
from tests.server.conftest import make_config, running

SECRET = "events-shared-secret"
OPERATOR = {"Authorization": "Bearer operator-olga"}
SUPPORT = {"Authorization": "Bearer support-ayse"}
TOKENS = [{"token": "operator-olga", "role": "operator", "name": "Olga"},
          {"token": "support-ayse", "role": "support", "name": "Ayşe"}]


@pytest.fixture
async def server(redis: Redis, redis_url: str) -> AsyncIterator[TestServer]:
    async with running(make_config(redis_url, tokens=TOKENS, events={"secret": SECRET})) as srv:
        yield srv


def _signed(body: bytes, secret: str = SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Salesbot-Signature": f"sha256={digest}", "Content-Type": "application/json"}


async def _lead(server: TestServer, name: str = "Deal") -> str:
    directory = server.app[SERVICES].directory
    assert directory is not None
    return str((await directory.create_lead({"name": name}))["id"])


async def _history(http: ClientSession, lead: str) -> list[dict[str, Any]]:
    r = await http.get(f"/api/leads/{lead}/events", headers=SUPPORT)
    assert r.status == 200
    events: list[dict[str, Any]] = (await r.json())["events"]
    return [e for e in events if e["role"] == "event"]


async def test_an_operator_token_stores_the_event_once_and_the_lead_card_shows_it(
        server: TestServer, http: ClientSession) -> None:
    lead = await _lead(server)
    body = {"id": "evt-8f2c", "type": "order.paid", "at": "2026-12-05T10:00:00Z", "lead": {"id": lead},
            "data": {"order": "A-1001", "amount": 1200, "currency": "TRY"}}
    r = await http.post("/api/events", json=body, headers=OPERATOR)
    assert r.status == 202 and await r.json() == {"id": "evt-8f2c", "lead": lead, "duplicate": False}
    r = await http.post("/api/events", json=body, headers=OPERATOR)  # the same id again: accepted, ignored
    assert r.status == 202 and (await r.json())["duplicate"] is True
    await server.app[SERVICES].leads.idle()  # the lead.created of ``_lead`` may hold the queue: it handles both
    paid = [e for e in await _history(http, lead) if e["type"] == "order.paid"]
    assert len(paid) == 1
    assert paid[0]["data"] == body["data"] and paid[0]["source"] == "api"
    assert paid[0]["happened_at"] == 1796464800.0  # "at", as epoch seconds
    r = await http.post("/api/events", json={"type": "custom.anything", "lead": {"id": int(lead)}}, headers=OPERATOR)
    assert r.status == 202 and (await r.json())["id"].startswith("gen-")  # no id: one is generated
    assert (await http.get(f"/api/leads/{lead}/events")).status == 401


async def test_an_id_is_one_event_whichever_lead_it_is_sent_for(server: TestServer, http: ClientSession) -> None:
    first, other = await _lead(server, "First"), await _lead(server, "Other")
    body = {"id": "evt-once", "type": "order.paid", "lead": {"id": first}}
    r = await http.post("/api/events", json=body, headers=OPERATOR)
    assert await r.json() == {"id": "evt-once", "lead": first, "duplicate": False}
    r = await http.post("/api/events", json={**body, "lead": {"id": other}}, headers=OPERATOR)
    assert r.status == 202 and await r.json() == {"id": "evt-once", "lead": first, "duplicate": True}
    await server.app[SERVICES].leads.idle()
    assert [e["type"] for e in await _history(http, other) if e["type"] == "order.paid"] == []
    assert [e["type"] for e in await _history(http, first) if e["type"] == "order.paid"] == ["order.paid"]


async def test_a_signed_event_needs_no_token_and_a_bad_signature_is_refused(
        server: TestServer, http: ClientSession) -> None:
    lead = await _lead(server)
    raw = json.dumps({"type": "email.opened", "lead": {"id": lead}}).encode()
    r = await http.post("/api/events", data=raw, headers=_signed(raw))
    assert r.status == 202, await r.text()
    for headers in (_signed(raw, "another-secret"), _signed(raw + b" "), {"X-Salesbot-Signature": "sha256=zz"},
                    {"X-Salesbot-Signature": ""}):
        r = await http.post("/api/events", data=raw, headers=headers)
        assert r.status == 401 and (await r.json())["error"]["code"] == "bad_signature"
    r = await http.post("/api/events", data=raw)  # neither a token nor a signature
    assert r.status == 401
    r = await http.post("/api/events", data=raw, headers=SUPPORT)
    assert r.status == 403
    await server.app[SERVICES].leads.idle()
    assert [e["type"] for e in await _history(http, lead)].count("email.opened") == 1


async def test_a_contact_is_found_or_created_with_its_open_lead(server: TestServer, http: ClientSession) -> None:
    body = {"type": "form.submitted", "contact": {"phone": "+90 555 111 22 33"}, "data": {"form": "quote"}}
    r = await http.post("/api/events", json=body, headers=OPERATOR)
    assert r.status == 202, await r.text()
    lead = (await r.json())["lead"]
    r = await http.post("/api/events", json={**body, "contact": {"phone": "+905551112233"}}, headers=OPERATOR)
    assert (await r.json())["lead"] == lead  # the same contact, its newest open lead
    directory = server.app[SERVICES].directory
    record = await directory.lead(lead)
    assert record["stage"] == "Incoming" and record["contacts"][0]["phone"] == "+90 555 111 22 33"
    await directory.update_lead(lead, {"stage": "Won"})
    r = await http.post("/api/events", json=body, headers=OPERATOR)
    newer = (await r.json())["lead"]
    assert newer != lead  # the only lead is closed: a new one in the first stage
    assert (await directory.lead(newer))["contacts"][0]["id"] == record["contacts"][0]["id"]
    r = await http.post("/api/events", json={"type": "site.visit", "contact": {"email": "Ada@Example.com"}},
                        headers=OPERATOR)
    by_mail = (await r.json())["lead"]
    r = await http.post("/api/events", json={"type": "site.visit", "contact": {"email": "ada@example.com"}},
                        headers=OPERATOR)
    assert (await r.json())["lead"] == by_mail
    r = await http.post("/api/events", json={"type": "site.visit", "contact": {"external": {
        "channel": "demo", "id": "visitor-1"}}}, headers=OPERATOR)
    assert r.status == 202
    await server.app[SERVICES].leads.idle()  # the lead queue is handled in the background
    types = [e["type"] for e in await _history(http, (await r.json())["lead"])]
    assert "site.visit" in types


@pytest.mark.parametrize(("body", "status", "code"), [
    (b"not json", 400, "bad_json"),
    (b'{"type": "order.paid", "lead": {"id": "1"}, "data": {"v": NaN}}', 400, "bad_json"),
    (b'{"type": "order.paid", "lead": {"id": "1"}, "data": {"v": 1e400}}', 400, "bad_json"),
    (b'{"type": "order.paid", "lead": {"id": "1"}, "data": ' + b'[' * 40 + b']' * 40 + b'}', 400, "bad_json"),
    (b'{"type": "order.paid", "lead": {"id": "1"}, "data": {"v": "a\\u0000b"}}', 422, "invalid"),
    (b'{"type": "order.\\u0007paid", "lead": {"id": "1"}}', 422, "invalid"),
    (b'{"type": "order.refunded", "lead": {"id": "1"}}', 422, "invalid"),
    (b'{"type": "custom.", "lead": {"id": "1"}}', 422, "invalid"),
    (b'{"type": "order.paid"}', 422, "invalid"),
    (b'{"type": "order.paid", "lead": {"id": "{1}"}}', 422, "invalid"),
    (b'{"type": "order.paid", "lead": {"id": "1"}, "extra": 1}', 422, "invalid"),
    (b'{"type": "order.paid", "contact": {"phone": "1", "email": "a@b.co"}}', 422, "invalid"),
    (b'{"type": "order.paid", "contact": {"phone": "not a phone"}}', 422, "invalid"),
    (b'{"type": "order.paid", "contact": {"external": {"channel": "nowhere", "id": "x"}}}', 422, "invalid"),
    (b'{"type": "order.paid", "lead": {"id": "1"}, "at": "yesterday"}', 422, "invalid"),
    (b'{"type": "order.paid", "lead": {"id": "1"}, "id": "has space"}', 422, "invalid"),
    (b'[{"type": "order.paid"}]', 422, "invalid"),
    (b'{"type": "order.paid", "lead": {"id": "990099"}}', 404, "not_found"),
    (b'{"type": "order.paid", "contact": {"id": "990099"}}', 404, "not_found"),
    (b'{"type": "order.paid", "lead": {"id": "1"}, "data": {"x": "' + b"a" * 70_000 + b'"}}', 413, "too_large"),
])
async def test_malformed_events_get_a_clear_4xx(http: ClientSession, body: bytes, status: int, code: str) -> None:
    r = await http.post("/api/events", data=body, headers={**OPERATOR, "Content-Type": "application/json"})
    assert r.status == status, await r.text()
    assert (await r.json())["error"]["code"] == code


async def test_problems_are_named_with_pointers(http: ClientSession) -> None:
    r = await http.post("/api/events", json={"type": "order.refunded", "lead": {"id": "1"}, "at": "x"},
                        headers=OPERATOR)
    pointers = {d["pointer"] for d in (await r.json())["error"]["details"]}
    assert {"/type", "/at"} <= pointers
