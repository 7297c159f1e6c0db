"""Analytics end to end: live chat messages through the real server and Redis, then the funnel
of ``GET /api/analytics/bots/{id}`` (JSON and CSV), the automations' day counts, and the routes
under hostile queries (4xx or 429, never a 5xx, no traceback)."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis

from bot.store.analytics import bot_day_key, day_text
from bot.store.keys import ConversationKey
from tests.server.conftest import ADMIN, make_config, running
from tests.server.test_edge_input import tracebacks
from tests.waiting import wait_for

AUTH = {"Authorization": f"Bearer {ADMIN}"}
SUPPORT = {"Authorization": "Bearer support-sam"}
TOKENS = [{"token": "support-sam", "role": "support", "name": "Sam"}]


@pytest.fixture
async def server(redis: Redis, redis_url: str) -> AsyncIterator[TestServer]:
    async with running(make_config(redis_url, tokens=TOKENS)) as srv:
        yield srv


@pytest.fixture
async def http(server: TestServer) -> AsyncIterator[ClientSession]:
    async with ClientSession(base_url=str(server.make_url(""))) as session:
        yield session


async def _chat(http: ClientSession, session: str, texts: list[str], bots: int, seen: int = 0) -> None:
    """Send ``texts`` one after the other, each once the bot has answered the one before (``seen``:
    bot messages of the session before)."""
    for i, text in enumerate(texts):
        r = await http.post("/chat/demo/messages", json={"session": session, "text": text,
                                                         "client_msg_id": f"m{seen}-{i}"})
        assert r.status == 202, await r.text()
        want = bots if i == len(texts) - 1 else seen + 1

        async def answered(want: int = want) -> bool:
            r = await http.get("/chat/demo/messages", headers={"X-Salesbot-Session": session})
            return sum(m["role"] == "bot" for m in (await r.json())["messages"]) >= want

        await wait_for(answered, what=f"{want} bot messages")
        seen = want


def _step(body: dict[str, Any], step: str) -> dict[str, Any]:
    return next(s for s in body["steps"] if s["step"] == step)


async def test_a_conversation_is_counted_step_by_step_and_read_back_as_json_and_csv(
        http: ClientSession, redis: Redis) -> None:
    # demo: hello (waits for a button) -> products -> done (stop); the second chat stays at hello
    await _chat(http, "analytics-one-1234", ["hi", "See our products"], bots=2)
    await _chat(http, "analytics-two-1234", ["hi"], bots=1)
    r = await http.get("/api/analytics/bots/demo", headers=SUPPORT)
    assert r.status == 200, await r.text()
    body = await r.json()
    assert body["bot"] == "demo" and body["abandon_after"] == 86400
    assert body["days"] == [day_text(int(time.time() // 86400))]
    hello = _step(body, "hello")
    assert (hello["entered"], hello["left"], hello["ended"], hello["waiting"], hello["abandoned"]) == \
        (2, {"products": 1}, 0, 1, 0)
    assert hello["median_seconds"] is not None  # one visit closed (the other still waits)
    assert _step(body, "products")["left"] == {"done": 1}
    done = _step(body, "done")
    assert (done["entered"], done["ended"], done["median_seconds"]) == (1, 1, 0.0)
    assert _step(body, "hours")["entered"] == 0  # every step of the flow is listed, in its order
    assert [s["step"] for s in body["steps"]][:2] == ["hello", "products"]
    # the waiting conversation's step start travels in its metadata, written with the save
    cid = next(c for c in [k.decode() async for k in redis.scan_iter("sb:c:*:meta")] if "analytics-two" in c)
    assert (await redis.hget(cid, "s")) is not None  # ``step_at`` (statefields.SHORT)

    r = await http.get("/api/analytics/bots/demo", params={"format": "csv"}, headers=SUPPORT)
    assert r.status == 200 and r.content_type == "text/csv"
    rows = list(csv.DictReader(io.StringIO(await r.text())))
    hello_row = next(row for row in rows if row["step"] == "hello")
    assert (hello_row["entered"], hello_row["left"], hello_row["left_to"]) == ("2", "1", "products=1")


async def test_days_older_than_abandon_after_turn_waiting_runs_into_abandoned(
        http: ClientSession, redis: Redis) -> None:
    old = int(time.time() // 86400) - 3
    await redis.hset(bot_day_key("demo", 1, old), mapping={"e|hello": 5, "l|hello|products": 2, "x|hello": 1,
                                                           "t|hello|10": 2})
    r = await http.get("/api/analytics/bots/demo", params={"version": "1", "from": day_text(old),
                                                            "to": day_text(old)}, headers=AUTH)
    hello = _step(await r.json(), "hello")
    assert (hello["abandoned"], hello["waiting"], hello["drop_off"]) == (2, 0, 3)
    assert hello["median_seconds"] == pytest.approx(2 ** 5.25, abs=0.1)  # the closed visits' bucket (1 instant)


async def test_automation_outcomes_are_kept_per_day(redis: Redis, redis_url: str, tmp_path: Any) -> None:
    import json

    doc = {"format": "salesbot.automations/1", "id": "sales", "pipeline": "Sales",
           "rules": [{"id": "hello", "stage": "Incoming", "on": ["created"],
                      "do": {"actions": [{"do": "tags", "add": ["hello"]}]}}]}
    (tmp_path / "sales.json").write_text(json.dumps(doc))
    config = make_config(redis_url, automations_dir=str(tmp_path),
                         embedded_crm={"pipelines": {"Sales": ["Incoming", "Won"]}})
    async with running(config) as srv, ClientSession(base_url=str(srv.make_url(""))) as http:
        from bot.server.keys import SERVICES

        directory = srv.app[SERVICES].directory
        assert directory is not None
        await directory.create_lead({"name": "Deal", "pipeline": "Sales", "stage": "Incoming"})

        async def counted() -> dict[str, Any] | None:
            r = await http.get("/api/analytics/automations/sales", headers=AUTH)
            body = await r.json()
            return body if body["rules"].get("hello", {}).get("acted") else None

        body = await wait_for(counted, what="the rule's outcome counted")
        today = day_text(int(time.time() // 86400))
        assert body["rules"]["hello"]["fired"] == 1 and body["days"][today]["hello"]["acted"] == 1
        assert 0 < await redis.ttl(f"sb:automations:{{sales}}:counts:{today}") <= 400 * 86400
        r = await http.get("/api/analytics/automations/sales", params={"format": "csv"}, headers=AUTH)
        assert [today, "hello", "acted", "1"] in list(csv.reader(io.StringIO(await r.text())))


@pytest.mark.parametrize(("path", "status"), [
    ("/api/analytics/bots/demo?from=2026-13-01", 400),
    ("/api/analytics/bots/demo?from=yesterday", 400),
    ("/api/analytics/bots/demo?to=2026-01-01%00", 400),
    ("/api/analytics/bots/demo?from=2026-02-01&to=2026-01-01", 400),
    ("/api/analytics/bots/demo?from=2020-01-01&to=2026-01-01", 400),
    ("/api/analytics/bots/demo?version=NaN", 400),
    ("/api/analytics/bots/demo?version=-1", 400),
    ("/api/analytics/bots/demo?version=99999999999999999999999", 400),
    ("/api/analytics/bots/demo?version=7", 404),
    ("/api/analytics/bots/demo?format=xml", 400),
    ("/api/analytics/bots/nobody", 404),
    ("/api/analytics/bots/%00%1b[31m", 404),
    ("/api/analytics/bots/" + "x" * 5000, 404),
    ("/api/analytics/automations/nobody", 404),
    ("/api/analytics/automations/%0a%0d", 404),
    ("/api/analytics/automations/sales?from=" + "9" * 5000, 400),
])
async def test_hostile_queries_are_4xx(http: ClientSession, caplog: pytest.LogCaptureFixture,
                                       path: str, status: int) -> None:
    r = await http.get(path, headers=AUTH)
    assert r.status == status, await r.text()
    assert "error" in await r.json()
    assert tracebacks(caplog) == []


@pytest.mark.parametrize(("query", "first", "last"), [
    ("to=0001-01-05", "0001-01-01", "0001-01-05"),  # the default start is not before the first day
    ("from=9999-12-30&to=9999-12-31", "9999-12-30", "9999-12-31"),
])
async def test_the_first_and_last_days_a_date_can_name_are_a_range(
        http: ClientSession, caplog: pytest.LogCaptureFixture, query: str, first: str, last: str) -> None:
    r = await http.get(f"/api/analytics/bots/demo?{query}", headers=AUTH)
    assert r.status == 200, await r.text()
    body = await r.json()
    assert (body["from"], body["to"]) == (first, last)
    assert tracebacks(caplog) == []


async def test_no_token_or_an_unknown_one_is_401_and_a_flood_of_them_429(redis: Redis, redis_url: str) -> None:
    """Every role reads analytics (admin, operator, support): no token is refused with 403."""
    async with running(make_config(redis_url, tokens=[{"token": "t-operator", "role": "operator", "name": "O"}])) \
            as srv, ClientSession(base_url=str(srv.make_url(""))) as http:
        assert (await http.get("/api/analytics/bots/demo")).status == 401
        assert (await http.get("/api/analytics/bots/demo", headers={"Authorization": "Bearer t-operator"})).status \
            == 200
        statuses = [(await http.get("/api/analytics/automations/x", headers={"Authorization": "Bearer guess"})).status
                    for _ in range(40)]
        assert statuses[0] == 401 and statuses[-1] == 429


async def test_a_conversation_without_a_known_step_start_counts_from_its_next_step(
        http: ClientSession, redis: Redis) -> None:
    """A conversation saved before analytics (no ``step_at``): its current visit is not counted
    (its entry never was), the next ones are."""
    await _chat(http, "analytics-old-1234", ["hi"], bots=1)
    cid = next(c for c in [k.decode() async for k in redis.scan_iter("sb:c:*:meta")] if "analytics-old" in c)
    await redis.hdel(cid, "s")
    for key in [k async for k in redis.scan_iter("sb:analytics:*")]:
        await redis.delete(key)
    await _chat(http, "analytics-old-1234", ["See our products"], bots=2, seen=1)
    body = await (await http.get("/api/analytics/bots/demo", headers=AUTH)).json()
    assert _step(body, "hello")["left"] == {}
    assert (_step(body, "products")["entered"], _step(body, "done")["ended"]) == (1, 1)
    assert ConversationKey(cid).cid  # (the key names a conversation)
