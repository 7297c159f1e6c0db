"""The live chat widget's visits over real HTTP and Redis: a known visitor's page views become
``site.visit`` (once per page and visit) and, after 30 minutes away, ``site.returning_visitor``
on the lead; an anonymous visitor records nothing; hostile bodies and floods are 4xx / 429."""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from bot.runtime.service import LEAD_CONVERSATIONS_KEY
from bot.server.keys import SERVICES
from bot.server.sitevisits import URL_MAX, VISIT_GAP, SiteVisits, seen_key
from bot.store.replies import text
from tests.server.conftest import ADMIN
from tests.waiting import wait_for

AUTH = {"Authorization": f"Bearer {ADMIN}"}
HOME, PRICES = "https://shop.example/", "https://shop.example/prices?plan=pro"


async def _lead_after_chat(server: TestServer, http: ClientSession, session: str) -> str:
    r = await http.post("/chat/demo/messages", json={"session": session, "text": "hi", "client_msg_id": "m1"})
    assert r.status == 202, await r.text()
    redis = server.app[SERVICES].redis

    async def found() -> str | None:
        async for bucket in redis.scan_iter(match=f"{LEAD_CONVERSATIONS_KEY}:*"):  # the map's buckets
            for lead, cid in (await redis.hgetall(bucket)).items():
                if text(cid).endswith(f":{session}"):
                    return text(lead)
        return None

    lead: str = await wait_for(found, what="the conversation's lead")
    return lead


async def _visit(http: ClientSession, session: str, url: str, status: int = 202) -> list[str]:
    r = await http.post("/chat/demo/visits", json={"session": session, "url": url})
    body = await r.json()
    assert r.status == status, body
    events: list[str] = body.get("events", [])
    return events


async def _site_events(server: TestServer, http: ClientSession, lead: str) -> list[tuple[str, str]]:
    await server.app[SERVICES].leads.idle()
    r = await http.get(f"/api/leads/{lead}/events", headers=AUTH)
    assert r.status == 200
    return [(e["type"], e["data"]["url"]) for e in (await r.json())["events"]
            if e.get("role") == "event" and str(e.get("type", "")).startswith("site.")]


async def test_a_known_visitors_pages_and_return_become_site_events(server: TestServer, http: ClientSession) -> None:
    redis = server.app[SERVICES].redis
    # an anonymous visitor (no conversation, no lead): accepted, nothing recorded or created
    assert await _visit(http, "anonymous-visitor-1", HOME) == []
    assert await redis.exists(seen_key("demo", "anonymous-visitor-1")) == 0

    session = "known-visitor-01"
    lead = await _lead_after_chat(server, http, session)
    assert await _visit(http, session, HOME) == ["site.visit"]  # just chatted: the same visit
    assert await _visit(http, session, HOME) == []  # a reload of the page: a duplicate
    assert await _visit(http, session, PRICES) == ["site.visit"]
    assert await _site_events(server, http, lead) == [("site.visit", HOME), ("site.visit", PRICES)]

    # 31 minutes later (the visitor's last open, as stored, moved back): a new visit, returning
    key = seen_key("demo", session)
    away = time.time() - VISIT_GAP - 60
    await redis.hset(key, "last", repr(away))
    assert await _visit(http, session, HOME) == ["site.visit", "site.returning_visitor"]
    assert await _visit(http, session, PRICES) == ["site.visit"]  # returning once per visit
    assert (await _site_events(server, http, lead))[2:] == [
        ("site.visit", HOME), ("site.returning_visitor", HOME), ("site.visit", PRICES)]
    r = await http.get(f"/api/leads/{lead}/events", headers=AUTH)
    assert session not in json.dumps(await r.json())  # the session (a credential) is in no event id


async def test_a_known_visitor_who_chatted_long_ago_is_returning_on_the_first_open(
        server: TestServer, http: ClientSession) -> None:
    session = "old-chatter-0001"
    lead = await _lead_after_chat(server, http, session)
    visits = server.app[SERVICES]
    later = SiteVisits(visits.store, visits.leads, clock=lambda: time.time() + VISIT_GAP + 5)
    assert await later.visit("demo", session, HOME) == ["site.visit", "site.returning_visitor"]
    assert [t for t, _ in await _site_events(server, http, lead)] == ["site.visit", "site.returning_visitor"]


async def test_hostile_visits_are_4xx_and_a_flood_is_429_never_5xx(server: TestServer, http: ClientSession) -> None:
    session = "hostile-visitor1"
    lead = await _lead_after_chat(server, http, session)
    bad_urls: list[Any] = [
        "https://shop.example/\x00", "https://shop.example/a\x1b[31m", "https://shop.example/\u2028",
        "https://shop.example/" + "a" * URL_MAX, "javascript:alert(1)", "data:text/html,hi", "ftp://x/",
        "https://", "http:///path", "", None, 7, ["https://shop.example/"], {"url": "https://shop.example/"},
    ]
    for url in bad_urls:
        r = await http.post("/chat/demo/visits", json={"session": session, "url": url})
        assert r.status == 400 and (await r.json())["error"]["code"] == "bad_url", url
    raw_bodies = [b'{"session": "hostile-visitor1", "url": NaN}', b'{"session": "hostile-visitor1", "url": 1e999}',
                  b"[" * 2000 + b"]" * 2000, b'{"session": {"a": {"b": {"c": 1}}}}', b"\xff\xfe", b"",
                  b'"just a string"', b'{"session": "hostile-visitor1"']
    for raw in raw_bodies:
        r = await http.post("/chat/demo/visits", data=raw, headers={"Content-Type": "application/json"})
        assert r.status == 400, raw[:40]
    r = await http.post("/chat/demo/visits", data=b'{"a": "' + b"x" * 100_000 + b'"}')
    assert r.status == 413
    for session_value in ("short", "../../etc", "a" * 65, 12345678):
        r = await http.post("/chat/demo/visits", json={"session": session_value, "url": HOME})
        assert r.status == 400 and (await r.json())["error"]["code"] == "bad_session"
    r = await http.post("/chat/nosuchaccount/visits", json={"session": session, "url": HOME})
    assert r.status == 404

    statuses = []
    for i in range(40):  # one visitor reloading like a script
        r = await http.post("/chat/demo/visits", json={"session": session, "url": f"{HOME}?p={i}"})
        statuses.append(r.status)
        if r.status == 429:
            assert int(r.headers["Retry-After"]) >= 1
    assert 429 in statuses and all(s in (202, 429) for s in statuses)
    accepted = statuses.count(202)
    assert len(await _site_events(server, http, lead)) == accepted  # a refused visit queued nothing
