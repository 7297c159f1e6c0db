"""``GET /api/customers`` and the live orders stream against a real Redis over loopback: the two
sections, search and filters through the CRM's indexes (no scan of every contact, also for
contacts indexed before the ``responsible`` set existed), the first note by priority and the
order count on each row, a customer's conversations, ``GET /api/live/orders``, hostile input."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import jsonschema
import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis

from bot.server.keys import SERVICES
from bot.server.orders_live import FEED
from crm_bridge import idsets
from crm_bridge.indexes import LAYOUT_KEY, by_key, upgrade
from crm_bridge.upgrading import GUARD_KEY
from tests.server.conftest import ADMIN, make_config, running
from tests.waiting import wait_for

AUTH = {"Authorization": f"Bearer {ADMIN}"}
SUPPORT = {"Authorization": "Bearer support-token"}
OPERATOR = {"Authorization": "Bearer operator-token"}


@pytest.fixture
async def server(redis: Redis, redis_url: str) -> AsyncIterator[TestServer]:
    config = make_config(redis_url, tokens=[{"token": "support-token", "role": "support", "name": "Sam"},
                                            {"token": "operator-token", "role": "operator"}],
                         embedded_crm={"users": [{"id": "7", "name": "Ayla"}, {"id": "8", "name": "Berk"}]})
    async with running(config) as srv:
        yield srv


@pytest.fixture
async def http(server: TestServer) -> AsyncIterator[ClientSession]:
    async with ClientSession(base_url=str(server.make_url(""))) as session:
        yield session


async def _contact(http: ClientSession, **fields: Any) -> str:
    r = await http.post("/api/crm/contacts", json=fields, headers=AUTH)
    assert r.status == 201, await r.text()
    return str((await r.json())["id"])


async def _note(http: ClientSession, cid: str, text: str, priority: str) -> None:
    r = await http.post(f"/api/crm/contacts/{cid}/notes", json={"text": text, "priority": priority}, headers=AUTH)
    assert r.status == 201


async def _list(http: ClientSession, headers: dict[str, str] = AUTH, **params: Any) -> dict[str, Any]:
    r = await http.get("/api/customers", params=params, headers=headers)
    assert r.status == 200, await r.text()
    body: dict[str, Any] = await r.json()
    return body


def _names(body: dict[str, Any]) -> list[str]:
    return [c["name"] for c in body["customers"]]


async def test_sections_search_filters_and_the_row(http: ClientSession) -> None:
    ayse = await _contact(http, name="Ayşe Yılmaz", phone="+90 555 111 2233", status="current",
                          temperature="hot", tags=["vip", "istanbul"], responsible="7")
    await _contact(http, name="Bora Kaya", email="bora@shop.example", temperature="cold", tags=["vip"],
                   responsible="8")
    cem = await _contact(http, name="Cem <b>Demir</b>", temperature="hot", responsible="7")
    await _note(http, ayse, "called, wants a quote", "none")
    await _note(http, ayse, "pays late", "high")
    await _note(http, ayse, "newer but medium", "medium")

    assert _names(await _list(http, status="current")) == ["Ayşe Yılmaz"]
    potential = await _list(http, status="potential")
    assert _names(potential) == ["Cem <b>Demir</b>", "Bora Kaya"]  # newest first
    assert potential["total"] == 2
    row = (await _list(http, status="current"))["customers"][0]
    assert row["last_note"]["text"] == "pays late"  # priority before recency
    assert row["orders"] == 0 and row["temperature"] == "hot" and row["tags"] == ["vip", "istanbul"]
    assert (await _list(http, q="cem"))["customers"][0]["last_note"] is None

    assert _names(await _list(http, q="ayse")) == ["Ayşe Yılmaz"]
    assert _names(await _list(http, q="5551112233")) == ["Ayşe Yılmaz"]  # national number
    assert _names(await _list(http, q="bora@shop")) == ["Bora Kaya"]
    assert set(_names(await _list(http, temperature="hot"))) == {"Ayşe Yılmaz", "Cem <b>Demir</b>"}
    assert _names(await _list(http, temperature="hot", status="potential")) == ["Cem <b>Demir</b>"]
    assert set(_names(await _list(http, tag="vip"))) == {"Ayşe Yılmaz", "Bora Kaya"}
    r = await http.get("/api/customers", params=[("tag", "vip"), ("tag", "istanbul")], headers=AUTH)
    assert _names(await r.json()) == ["Ayşe Yılmaz"]  # every tag
    assert set(_names(await _list(http, responsible="7"))) == {"Ayşe Yılmaz", "Cem <b>Demir</b>"}
    assert _names(await _list(http, responsible="7", q="cem")) == ["Cem <b>Demir</b>"]
    assert _names(await _list(http, responsible="9")) == []
    # a change of responsible moves the contact between the sets
    assert (await http.patch(f"/api/crm/contacts/{cem}", json={"responsible": "8"}, headers=AUTH)).status == 200
    assert _names(await _list(http, responsible="7")) == ["Ayşe Yılmaz"]
    assert _names(await _list(http, responsible="8")) == ["Cem <b>Demir</b>", "Bora Kaya"]
    assert (await http.patch(f"/api/crm/contacts/{cem}", json={"responsible": None}, headers=AUTH)).status == 200
    assert _names(await _list(http, responsible="8")) == ["Bora Kaya"]
    doc = await (await http.get("/api/openapi.json")).json()  # the rows as documented
    schema = doc["paths"]["/api/customers"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    jsonschema.validate(await _list(http), {**schema, "components": doc["components"]},
                        cls=jsonschema.Draft202012Validator)


async def _product(http: ClientSession, sku: str) -> None:
    r = await http.put(f"/api/products/{sku}", json={"name": sku, "prices": {"EUR": 10}, "active": True}, headers=AUTH)
    assert r.status in (200, 201), await r.text()


async def _order(http: ClientSession, customer: str, sku: str = "mug") -> dict[str, Any]:
    r = await http.post("/api/orders", json={"customer": customer, "items": [{"sku": sku, "qty": 2}]}, headers=SUPPORT)
    assert r.status == 201, await r.text()
    order: dict[str, Any] = await r.json()
    return order


async def test_orders_count_on_the_row_and_the_first_order_makes_a_customer_current(http: ClientSession) -> None:
    await _product(http, "mug")
    dana = await _contact(http, name="Dana", currency="EUR")
    await _contact(http, name="Emre", currency="EUR")
    assert _names(await _list(http, status="current")) == []
    await _order(http, dana)
    await _order(http, dana)
    current = (await _list(http, status="current"))["customers"]
    assert [(c["name"], c["orders"]) for c in current] == [("Dana", 2)]
    assert [(c["name"], c["orders"]) for c in (await _list(http, status="potential"))["customers"]] == [("Emre", 0)]


async def _walk(http: ClientSession, **params: Any) -> list[str]:
    """Every page's names, each page asked with the previous page's cursor (each page's ``total``
    counts every match, whichever the page)."""
    seen: list[str] = []
    query: dict[str, Any] = dict(params)
    totals: set[int] = set()
    for _ in range(1000):  # a listing that never ends fails
        body = await _list(http, **query)
        seen += _names(body)
        totals.add(body["total"])
        assert len(totals) == 1, totals
        if body["next_before"] is None:
            assert body["next_before_id"] is None
            return seen
        assert len(body["customers"]) == int(params.get("limit", 50))
        query["before"], query["before_id"] = body["next_before"], body["next_before_id"]
    raise AssertionError("the pages never end")


async def test_pages_follow_next_before(http: ClientSession) -> None:
    for n in range(7):
        await _contact(http, name=f"Page {n}", tags=["paged"])
    assert await _walk(http, tag="paged", limit=3) == [f"Page {n}" for n in reversed(range(7))]
    body = await _list(http, tag="paged", limit=3)
    assert body["total"] == 7 and body["next_before_id"] == body["customers"][-1]["id"]
    assert body["next_before"] == body["customers"][-1]["updated_at"]


@pytest.mark.parametrize("params", [{"tag": "tied"}, {}, {"q": "tied"}, {"status": "potential"}])
async def test_customers_sharing_one_time_are_each_listed_once_whatever_their_number(
        server: TestServer, http: ClientSession, params: dict[str, Any]) -> None:
    """Customers written at one time (an import, a clock's coarse tick), more than the largest page
    and than a search's page: each listed once, by id, between the newer and the older ones,
    whatever the page's size (a page used to take its last time's ties along, 100 at most)."""
    directory = server.app[SERVICES].directory
    assert directory is not None
    directory.crm.clock = lambda: 1_700_000_000.25
    ids = [int(await _contact(http, name=f"Tied {n}", tags=["tied"])) for n in range(230)]
    directory.crm.clock = lambda: 1_699_999_999.5
    await _contact(http, name="Oldest tied", tags=["tied"])
    directory.crm.clock = time.time
    await _contact(http, name="Newest tied", tags=["tied"])
    tied = [f"Tied {ids.index(i)}" for i in sorted(ids, reverse=True)]  # one time: the later id first
    for limit in (1, 7, 100):
        if limit == 1 and params:
            continue  # (one walk of 232 pages is enough)
        assert await _walk(http, **params, limit=limit) == ["Newest tied", *tied, "Oldest tied"], (params, limit)


async def test_an_older_clients_cursor_lists_the_customers_written_earlier(server: TestServer,
                                                                          http: ClientSession) -> None:
    """``before`` without ``before_id`` (a client of an older version): the customers written
    before that time, as it was."""
    directory = server.app[SERVICES].directory
    assert directory is not None
    for n, at in enumerate((100.0, 200.0, 200.0, 300.0)):
        directory.crm.clock = lambda at=at: at
        await _contact(http, name=f"At {n}", tags=["old"])
    directory.crm.clock = time.time
    assert _names(await _list(http, tag="old", before=200.0)) == ["At 0"]
    assert _names(await _list(http, tag="old", before=300.0)) == ["At 2", "At 1", "At 0"]


async def test_a_search_pages_past_customers_no_recency_index_knows(server: TestServer, http: ClientSession,
                                                                   redis: Redis) -> None:
    """A contact missing from the recency index (written by a tool, an index lost) is found by a
    search, last, as if written at 0: the pages go on past it one at a time."""
    from bot.store import recency
    from crm_bridge.indexes import recent_key

    names = [f"Lost {n}" for n in range(3)]
    for name in names:
        cid = await _contact(http, name=name)
        pipe = redis.pipeline(transaction=False)
        recency.remove(pipe, recent_key("contact"), cid)
        await pipe.execute()
    await _contact(http, name="Lost but indexed")
    assert await _walk(http, q="lost", limit=1) == ["Lost but indexed", *reversed(names)]
    body = await _list(http, q="lost", limit=2, before=0, before_id=(await _list(http, q="lost"))["customers"][1]["id"])
    assert _names(body) == ["Lost 1", "Lost 0"] and body["customers"][0]["updated_at"] is None


async def test_a_filter_reads_only_the_page_not_every_contact(http: ClientSession, redis: Redis) -> None:
    """The records read for a filtered page are the page's, whatever the number of contacts."""
    for n in range(60):
        await _contact(http, name=f"Many {n}", responsible="8" if n % 20 else "7", temperature="warm")

    async def gets() -> int:
        stats = await redis.info("commandstats")
        return int(stats.get("cmdstat_get", {}).get("calls", 0))

    before = await gets()
    body = await _list(http, responsible="7", temperature="warm", limit=2)
    assert _names(body) == ["Many 40", "Many 20"] and body["total"] == 3
    assert await gets() - before <= 6  # 3 records (the page and one to know there is more), not 60


async def test_contacts_indexed_before_the_responsible_set_are_found(http: ClientSession, redis: Redis,
                                                                    redis_url: str) -> None:
    """The upgrade path: contacts written by a version without ``by:contact:responsible`` sets
    (simulated by removing them and the layout mark) are added in the background once the next
    process has started; a filtered request of that process waits for its walk, never shorter."""
    old = [await _contact(http, name=f"Old {n}", responsible="7") for n in range(3)]
    await redis.delete(*await idsets.names(redis, by_key("contact", "responsible", "7")), LAYOUT_KEY)
    async with running(make_config(redis_url)) as srv, ClientSession(base_url=str(srv.make_url(""))) as new:
        assert _names(await _list(new, responsible="7")) == ["Old 2", "Old 1", "Old 0"]
        assert await idsets.members(redis, by_key("contact", "responsible", "7")) == set(old)
        assert await redis.get(LAYOUT_KEY) == b"2"
    assert _names(await _list(http, responsible="7")) == ["Old 2", "Old 1", "Old 0"]
    r = await http.get("/api/crm/contacts", params={"responsible": "7"}, headers=AUTH)
    assert [c["name"] for c in (await r.json())["contacts"]] == ["Old 2", "Old 1", "Old 0"]


async def test_a_start_leaves_the_walk_to_the_process_that_holds_it(redis: Redis, redis_url: str) -> None:
    """Starting does not wait for the walk, and a process finding another one walking leaves it
    to that one: its start neither walks nor marks the layout, its filtered list is complete."""
    async with running(make_config(redis_url)) as srv, ClientSession(base_url=str(srv.make_url(""))) as http:
        old = [await _contact(http, name=f"Held {n}", responsible="8") for n in range(2)]
    await redis.delete(*await idsets.names(redis, by_key("contact", "responsible", "8")), LAYOUT_KEY)
    await redis.set(GUARD_KEY, "another process", px=60_000)
    async with running(make_config(redis_url)) as srv, ClientSession(base_url=str(srv.make_url(""))) as http:
        assert await redis.get(LAYOUT_KEY) is None  # the start did not walk
        assert _names(await _list(http, responsible="8")) == ["Held 1", "Held 0"]
    assert await idsets.members(redis, by_key("contact", "responsible", "8")) == set(old)


async def test_a_filtered_request_does_not_walk_once_the_layout_is_current(http: ClientSession, redis: Redis) -> None:
    """Once the process has seen the layout current, a request never walks the contacts: no
    ZSCAN, the layout mark untouched."""
    await _contact(http, name="Older", responsible="8")
    assert _names(await _list(http, responsible="8")) == ["Older"]  # waits for the start's walk
    await redis.delete(LAYOUT_KEY)

    async def zscans() -> int:
        stats = await redis.info("commandstats")
        return int(stats.get("cmdstat_zscan", {}).get("calls", 0))

    before = await zscans()
    assert _names(await _list(http, responsible="8")) == ["Older"]
    assert await zscans() == before and await redis.get(LAYOUT_KEY) is None


async def test_processes_upgrading_at_once_add_the_same_members(http: ClientSession, redis: Redis) -> None:
    old = [await _contact(http, name=f"Both {n}", responsible="8") for n in range(4)]
    await redis.delete(*await idsets.names(redis, by_key("contact", "responsible", "8")), LAYOUT_KEY)
    assert sum(await asyncio.gather(upgrade(redis), upgrade(redis))) >= 4  # both may walk: the same members
    assert await idsets.members(redis, by_key("contact", "responsible", "8")) == set(old)
    assert _names(await _list(http, responsible="8")) == ["Both 3", "Both 2", "Both 1", "Both 0"]


async def test_a_customers_conversations(http: ClientSession) -> None:
    r = await http.post("/chat/demo/messages", json={"session": "customer-chat-1", "text": "hello"})
    assert r.status == 202
    cid = (await r.json())["conversation"]
    meta = await wait_for(lambda: _contact_of(http, cid), what="the conversation's contact")
    r = await http.get(f"/api/customers/{meta}/conversations", headers=SUPPORT)
    assert r.status == 200
    assert [c["id"] for c in (await r.json())["conversations"]] == [cid]
    other = await _contact(http, name="No chats")
    assert (await (await http.get(f"/api/customers/{other}/conversations", headers=AUTH)).json()) == {
        "conversations": []}
    assert (await http.get("/api/customers/999999/conversations", headers=AUTH)).status == 404
    assert (await http.get("/api/customers/" + "9" * 500 + "/conversations", headers=AUTH)).status == 404
    for bad in ("%00", "a%2Fb", "%E2%80%AE", "{crm}"):
        assert (await http.get(f"/api/customers/{bad}/conversations", headers=AUTH)).status == 404


async def _contact_of(http: ClientSession, cid: str) -> str | None:
    r = await http.get(f"/api/conversations/{cid}", headers=AUTH)
    if r.status != 200:
        return None
    contact = (await r.json())["contact"].get("contact_id")
    return str(contact) if contact else None


@pytest.mark.parametrize(("params", "status"), [
    ({"status": "gone"}, 400),
    ({"temperature": "boiling"}, 400),
    ({"q": "a\x00b"}, 400),
    ({"q": "x" * 201}, 400),
    ({"tag": "t\x1b"}, 400),
    ({"responsible": "u" * 65}, 400),
    ({"limit": "NaN"}, 400),
    ({"limit": "1e999"}, 400),
    ({"before": "-1"}, 400),
    ({"before": "inf"}, 400),
    ({"before": "nope"}, 400),
    ({"before": "1", "before_id": "7\x00"}, 400),
    ({"before": "1", "before_id": "9" * 65}, 400),
    ({"before": "1", "before_id": "no such id"}, 200),
    ({"before_id": "5"}, 200),  # without a time: no cursor
    ({"before": "nan", "before_id": "5"}, 400),
    ({"limit": "100000"}, 200),  # clamped
])
async def test_hostile_queries_are_clear_4xx(http: ClientSession, params: dict[str, str], status: int) -> None:
    r = await http.get("/api/customers", params=params, headers=AUTH)
    assert r.status == status, await r.text()
    if status == 400:
        assert (await r.json())["error"]["code"] == "bad_query"


async def test_roles(http: ClientSession) -> None:
    assert (await http.get("/api/customers")).status == 401
    assert (await http.get("/api/customers", headers={"Authorization": "Bearer nope"})).status == 401
    assert (await http.get("/api/customers", headers=OPERATOR)).status == 403
    assert (await http.get("/api/customers", headers=SUPPORT)).status == 200
    assert (await http.get("/api/customers/1/conversations", headers=OPERATOR)).status == 403
    r = await http.get("/api/customers", params=[("tag", str(n)) for n in range(11)], headers=AUTH)
    assert r.status == 400


async def test_the_orders_stream_forwards_each_changed_order(server: TestServer, http: ClientSession,
                                                             redis: Redis) -> None:
    assert (await http.get("/api/live/orders")).status == 401
    assert (await http.get("/api/live/orders", headers=OPERATOR)).status == 403
    async with http.get("/api/live/orders", headers=SUPPORT) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
        events = _events(r)
        assert (await asyncio.wait_for(anext(events), 10)) == ("ready", {"user": "Sam"})
        await _product(http, "mug")
        order = await _order(http, await _contact(http, name="Live", currency="EUR"))
        assert (await asyncio.wait_for(anext(events), 10)) == ("order", {"id": order["id"]})
        r = await http.patch(f"/api/orders/{order['id']}", json={"payment": "paid"}, headers=SUPPORT)
        assert r.status == 200
        assert (await asyncio.wait_for(anext(events), 10)) == ("order", {"id": order["id"]})
    await wait_for(lambda: not server.app[FEED].subscribers, what="the closed stream's queue gone")

    async def unsubscribed() -> bool:  # and the process's subscription with it
        return bool((await redis.pubsub_numsub("sb:orders:changed"))[0][1] == 0)

    await wait_for(unsubscribed, what="the orders channel without subscribers")


async def _events(r: Any) -> AsyncIterator[tuple[str, Any]]:
    name = ""
    async for raw in r.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            yield name, json.loads(line[6:])


async def test_a_flood_of_guessed_tokens_is_held_off(http: ClientSession) -> None:
    statuses = [(await http.get(path, headers={"Authorization": f"Bearer guess-{n}"})).status
                for n in range(30) for path in ("/api/customers", "/api/live/orders")]
    assert set(statuses) <= {401, 429} and 429 in statuses


@pytest.mark.parametrize("score", ["40", -1, 1.5, True, 10**10, [], {}])
async def test_the_cards_score_is_a_whole_number(http: ClientSession, score: Any) -> None:
    cid = await _contact(http, name="Scored")
    r = await http.patch(f"/api/crm/contacts/{cid}", json={"score": score}, headers=AUTH)
    assert r.status == 422 and "score is a whole number" in (await r.json())["error"]["message"]
    r = await http.patch(f"/api/crm/contacts/{cid}", json={"score": 40}, headers=AUTH)
    assert r.status == 200 and (await r.json())["score"] == 40
    r = await http.patch(f"/api/crm/contacts/{cid}", json={"score": None}, headers=AUTH)
    assert (await r.json())["score"] == 0


async def test_an_open_orders_stream_ends_when_the_server_stops(redis: Redis, redis_url: str) -> None:
    async with running(make_config(redis_url)) as srv, ClientSession(base_url=str(srv.make_url(""))) as http:
        r = await http.get("/api/live/orders", headers=AUTH)
        events = _events(r)
        assert (await asyncio.wait_for(anext(events), 10))[0] == "ready"
        closing = asyncio.ensure_future(srv.close())
        with pytest.raises(StopAsyncIteration):  # the stream ends (rather than the close waiting on it)
            await asyncio.wait_for(anext(events), 10)
        await asyncio.wait_for(closing, 10)
        r.close()
