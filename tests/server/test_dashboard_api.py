"""The support dashboard's server side over real HTTP against a real Redis: the indexes behind
the conversation list (filters, search, pagination), the atomic takeover claim, the signed
session for the event stream, the stream itself, the flow graph and the page's headers."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import ClientResponse, ClientSession
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis

from bot.engine import events as ev
from bot.server.app import create_app
from bot.server.auth import Principal
from bot.server.dashboard import COOKIE, _session_key, read_session, sign_session
from bot.server.keys import SERVICES
from bot.server.services import Services
from bot.store import dedupe, partitions
from bot.store import indexes as convindex
from tests.server.conftest import ADMIN, make_config, running
from tests.waiting import WAIT, wait_for

ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN}"}
AYSE = {"Authorization": "Bearer support-ayse"}
MERT = {"Authorization": "Bearer support-mert"}
OPERATOR = {"Authorization": "Bearer operator-olga"}
TOKENS = [{"token": "support-ayse", "role": "support", "name": "Ayşe Kaya"},
          {"token": "support-mert", "role": "support", "name": "Mert Demir"},
          {"token": "operator-olga", "role": "operator", "name": "Olga"}]


@pytest.fixture
async def server(redis: Redis, redis_url: str) -> AsyncIterator[TestServer]:
    async with running(make_config(redis_url, tokens=TOKENS)) as srv:
        yield srv


def services_of(server: TestServer) -> Services:
    return server.app[SERVICES]


async def chat(http: ClientSession, session: str, text: str, name: str | None = None) -> str:
    body: dict[str, Any] = {"session": session, "text": text, "client_msg_id": uuid.uuid4().hex}
    if name:
        body["name"] = name
    r = await http.post("/chat/demo/messages", json=body)
    assert r.status == 202, await r.text()
    return str((await r.json())["conversation"])


async def listing(http: ClientSession, **params: Any) -> dict[str, Any]:
    r = await http.get("/api/conversations", params={k: str(v) for k, v in params.items()}, headers=AYSE)
    assert r.status == 200, await r.text()
    return dict(await r.json())


async def ids(http: ClientSession, **params: Any) -> list[str]:
    return [c["id"] for c in (await listing(http, **params))["conversations"]]


# ---------------------------------------------------------------------- list indexes
async def test_a_filtered_list_is_ordered_by_the_latest_message_though_follow_ups_write_no_filter_set(
        http: ClientSession, server: TestServer, redis: Redis) -> None:
    a = await chat(http, "order-a-0001", "hi")
    b = await chat(http, "order-b-0001", "hi")
    assert await redis.zscore(partitions.key(partitions.label("livechat", "demo")), a)  # its partition
    assert not await redis.keys("sb:idx:{conv}:f:channel:*") and not await redis.keys("sb:idx:{conv}:f:bot:*")
    assert not await redis.exists(convindex.status_key("bot"))  # the derived status: no set
    assert await ids(http, status="bot", channel="livechat") == [b, a]
    await chat(http, "order-a-0001", "again")  # a follow-up: a's sets stay, its activity moves on
    assert await redis.zcard(partitions.key(partitions.label("livechat", "demo"))) == 2  # once
    assert await ids(http, status="bot") == [a, b]
    assert await ids(http, status="bot", channel="livechat", bot="demo") == [a, b]
    page = await listing(http, status="bot", limit=1)
    assert [c["id"] for c in page["conversations"]] == [a]
    assert await ids(http, status="bot", before=page["next_before"]) == [b]


async def test_filters_follow_status_changes_and_waiting_for_a_person(http: ClientSession, server: TestServer,
                                                                      redis: Redis) -> None:
    a = await chat(http, "filters-a-0001", "hi", name="Alice")
    b = await chat(http, "filters-b-0001", "hi", name="Bora")
    c = await chat(http, "filters-c-0001", "hi", name="Cem")
    assert await ids(http) == [c, b, a]
    assert await ids(http, status="bot") == [c, b, a]
    assert await ids(http, channel="livechat", bot="demo") == [c, b, a]
    assert await ids(http, channel="whatsapp") == []
    assert await ids(http, waiting=1) == []  # the bot answered everyone
    first = (await listing(http))["conversations"][-1]
    assert first["contact"]["name"] == "Alice" and first["unanswered"] is False and first["waiting"] is False
    assert first["preview"]["role"] == "bot" and "Welcome" in first["preview"]["text"]

    assert (await http.post(f"/api/conversations/{b}/takeover", headers=AYSE)).status == 202
    assert await ids(http, status="human") == [b]
    assert await ids(http, status="bot") == [c, a]
    assert await redis.sismember(convindex.status_key("human"), b)  # so not "bot" (DERIVED_STATUS)
    await chat(http, "filters-b-0001", "is anyone there?")  # unanswered while a person has it
    assert await ids(http, waiting=1) == [b]
    assert await ids(http, waiting=1, status="human", channel="livechat") == [b]
    assert await ids(http) == [b, c, a]  # newest activity first
    row = (await listing(http, status="human"))["conversations"][0]
    assert (row["owner"], row["owner_user"], row["unanswered"], row["waiting"]) == ("human", "Ayşe Kaya", True, True)
    assert row["preview"] == {"role": "user", "text": "is anyone there?"}

    assert (await http.post(f"/api/conversations/{b}/messages", json={"text": "Yes, Ayşe here"},
                            headers=AYSE)).status == 202
    assert await ids(http, waiting=1) == []
    assert (await listing(http, status="human"))["conversations"][0]["preview"] == {"role": "human",
                                                                                    "text": "Yes, Ayşe here"}
    assert (await http.post(f"/api/conversations/{b}/release", json={}, headers=AYSE)).status == 202
    assert await ids(http, status="human") == []
    assert set(await ids(http, status="bot")) == {a, b, c}

    # A stop writes no transcript entry: the indexes move all the same.
    assert (await http.post(f"/api/conversations/{c}/stop", headers=AYSE)).status == 202
    assert await ids(http, status="idle") == [c]
    assert c not in await ids(http, status="bot")
    assert (await http.get("/api/conversations", params={"status": "nope"}, headers=AYSE)).status == 400


async def test_pages_of_a_filtered_list_cover_every_conversation_once(http: ClientSession) -> None:
    made = [await chat(http, f"pages-{i:04d}-xyz", "hi") for i in range(7)]
    seen: list[str] = []
    before = None
    for _ in range(10):
        params: dict[str, Any] = {"status": "bot", "channel": "livechat", "limit": 3}
        if before is not None:
            params["before"] = before
        body = await listing(http, **params)
        seen += [c["id"] for c in body["conversations"]]
        before = body["next_before"]
        if before is None:
            break
    assert seen == list(reversed(made))


async def test_search_by_name_phone_and_email_and_renames(http: ClientSession, server: TestServer) -> None:
    services = services_of(server)

    async def contact(session: str, **meta: str) -> str:
        cid = f"livechat:demo:{session}"
        await services.conversations.deliver(cid, ev.InboundMessage("hello", greeting="demo"), meta={
            "channel": "livechat", "account": "demo", "external_id": session, **meta})
        return cid

    ayse = await contact("search-ayse-01", name="Ayşe Yılmaz", phone="+90 555 111 22 33",
                         email="Ayse.Yilmaz@Example.com")
    mehmet = await contact("search-mehmet-01", name="Mehmet Öztürk", phone="+90 532 999 88 77",
                           email="mehmet@shop.example")
    for query, expected in [("ayse", [ayse]), ("YIL", [ayse]), ("ayşe yıl", [ayse]), ("oztu", [mehmet]),
                            ("1112233", [ayse]), ("0555 111 22 33", [ayse]), ("+90 532", [mehmet]),
                            ("ayse.yilmaz@example.com", [ayse]), ("mehmet@", [mehmet]), ("shop.example", [mehmet]),
                            ("nobody", []), ("ayse mehmet", [])]:
        assert await ids(http, q=query) == expected, query
    assert set(await ids(http, q="90")) == {ayse, mehmet}
    assert await ids(http, q="ayse", status="human") == []
    assert (await http.post(f"/api/conversations/{ayse}/takeover", headers=AYSE)).status == 202
    assert await ids(http, q="ayse", status="human") == [ayse]
    assert await ids(http, q="ayse", channel="whatsapp") == []

    await contact("search-ayse-01", name="Ayşe Demir")  # the channel reports a new name
    assert await ids(http, q="yilmaz") == []
    assert await ids(http, q="demir") == [ayse]
    assert await ids(http, q="1112233") == [ayse]  # the phone is still known


async def test_expired_conversations_leave_the_list(http: ClientSession, redis: Redis) -> None:
    gone = await chat(http, "expired-0001x", "hi", name="Gone Person")
    kept = await chat(http, "expired-0002x", "hi", name="Kept Person")
    await redis.delete(f"sb:c:{{{gone}}}:meta")  # as its TTL would
    assert await ids(http) == [kept]
    assert await redis.zscore(partitions.key(partitions.label("livechat", "demo")), gone) is None
    assert await ids(http, q="gone") == []
    assert await redis.zrangebylex(convindex.SEARCH_KEY, b"[gone", b"[gone\xff") == []
    assert await ids(http, status="bot") == [kept]


def test_search_terms_and_query_tokens() -> None:
    assert convindex.terms("Ayşe  YILMAZ-Kaya", None, None) == {"ayse", "yilmaz", "kaya"}
    assert {"905551112233", "5551112233", "2233"} <= convindex.terms(None, "+90 (555) 111-22-33", None)
    assert convindex.terms(None, "+90 555 111 22 33", None) == {
        "905551112233", "05551112233", "5551112233", "551112233", "1112233", "2233"}  # not every suffix
    assert convindex.terms(None, None, "Ali@Mail.COM") == {"ali@mail.com", "ali", "mail.com"}
    assert convindex.query_tokens("0555 111") == ["555111"]
    assert convindex.query_tokens("İsmail Çelik") == ["ismail", "celik"]
    assert convindex.query_tokens("  ") == []


# ---------------------------------------------------------------------- takeover claim
async def test_two_people_cannot_take_the_same_conversation(http: ClientSession, redis: Redis) -> None:
    cid = await chat(http, "claim-session-01", "hi", name="Deniz")
    results = await asyncio.gather(*(http.post(f"/api/conversations/{cid}/takeover", headers=h)
                                     for h in (AYSE, MERT, AYSE, MERT)))
    statuses = sorted(r.status for r in results)
    assert statuses == [202, 202, 409, 409]
    winner = (await redis.get(convindex.claim_key(cid))).decode().split("\x1f")[0]  # "<name>\x1f<claim id>"
    loser_headers = MERT if winner == "Ayşe Kaya" else AYSE
    winner_headers = AYSE if loser_headers is MERT else MERT
    body = await (await http.post(f"/api/conversations/{cid}/takeover", headers=loser_headers)).json()
    assert body["error"]["code"] == "taken"
    assert body["error"]["details"] == [{"owner": winner}]
    assert winner in body["error"]["message"]
    conv = await (await http.get(f"/api/conversations/{cid}", headers=AYSE)).json()
    assert (conv["owner"], conv["owner_user"]) == ("human", winner)
    # the same person again: no second line
    assert sum(1 for e in conv["transcript"] if e.get("event") == "takeover") == 1

    # Only the holder (or an admin) speaks for and hands back the conversation.
    assert (await http.post(f"/api/conversations/{cid}/messages", json={"text": "me too"},
                            headers=loser_headers)).status == 409
    assert (await http.post(f"/api/conversations/{cid}/release", json={}, headers=loser_headers)).status == 409
    assert (await http.post(f"/api/conversations/{cid}/stop", headers=loser_headers)).status == 409
    assert (await http.post(f"/api/conversations/{cid}/start", json={"bot": "demo"},
                            headers=loser_headers)).status == 409
    assert (await http.post(f"/api/conversations/{cid}/retry", headers=loser_headers)).status == 409
    conv = await (await http.get(f"/api/conversations/{cid}", headers=AYSE)).json()
    assert not any(e.get("text") == "stopped by a person" for e in conv["transcript"])
    assert (await http.post(f"/api/conversations/{cid}/messages", json={"text": "hello"},
                            headers=winner_headers)).status == 202
    assert (await http.post(f"/api/conversations/{cid}/release", json={}, headers=winner_headers)).status == 202
    assert await redis.get(convindex.claim_key(cid)) is None
    assert (await http.post(f"/api/conversations/{cid}/takeover", headers=loser_headers)).status == 202
    assert (await http.post(f"/api/conversations/{cid}/release", json={},
                            headers=ADMIN_AUTH)).status == 202  # an admin may
    assert (await http.post("/api/conversations/livechat:demo:nobody-here/takeover", headers=AYSE)).status == 404
    assert await redis.get(convindex.claim_key("livechat:demo:nobody-here")) is None
    assert await redis.ttl(convindex.claim_key(cid)) == -2


# ---------------------------------------------------------------------- session cookie + stream
class Sse:
    """A minimal Server-Sent Events reader over an aiohttp response."""

    def __init__(self, response: ClientResponse) -> None:
        self.response = response

    async def next(self, timeout: float = WAIT) -> tuple[str, Any, str | None]:
        name, data, event_id = "message", [], None
        while True:
            line = await asyncio.wait_for(self.response.content.readline(), timeout)
            if not line:
                raise EOFError("the stream ended")
            text = line.decode().rstrip("\r\n")
            if not text:
                if data:
                    return name, json.loads("\n".join(data)), event_id
                name, data, event_id = "message", [], None
                continue
            if text.startswith(":"):
                continue
            key, _, value = text.partition(":")
            value = value.removeprefix(" ")
            if key == "event":
                name = value
            elif key == "data":
                data.append(value)
            elif key == "id":
                event_id = value

    async def until(self, check: Any, timeout: float = WAIT) -> tuple[str, Any, str | None]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("the expected event did not come")
            event = await self.next(left)
            if check(*event):
                return event


async def sign_in(http: ClientSession, headers: dict[str, str]) -> str:
    r = await http.post("/live/session", headers=headers)
    assert r.status == 200, await r.text()
    morsel = r.cookies[COOKIE]
    assert morsel["httponly"] and morsel["samesite"] == "Strict" and morsel["path"] == "/api/live"
    return f"{COOKIE}={morsel.value}"


async def test_the_stream_needs_a_support_or_admin_session(http: ClientSession, server: TestServer) -> None:
    assert (await http.get("/api/live")).status == 401
    assert (await http.get("/api/live", headers=OPERATOR)).status == 403
    assert (await http.post("/live/session")).status == 401
    assert (await http.post("/live/session", headers=OPERATOR)).status == 403
    r = await http.post("/live/session", headers=AYSE)
    body = await r.json()
    assert (body["user"], body["role"]) == ("Ayşe Kaya", "support")
    assert "livechat" in body["channels"] and "demo" in [b["id"] for b in body["bots"]]
    cookie = await sign_in(http, AYSE)
    assert (await http.get("/api/live", headers={"Cookie": f"{COOKIE}=forged.value"})).status == 401
    payload, _, mac = cookie.partition("=")[2].partition(".")
    assert (await http.get("/api/live", headers={"Cookie": f"{COOKIE}={payload}.{mac[:-2]}xx"})).status == 401
    key = await _session_key(server.app)
    expired = sign_session(key, Principal("support", "Ayşe Kaya"), time.time() - 1)
    assert (await http.get("/api/live", headers={"Cookie": f"{COOKIE}={expired}"})).status == 401
    assert read_session(key, sign_session(key, Principal("operator", "Olga"), time.time() + 60)) is None
    async with http.get("/api/live", headers={"Cookie": cookie}) as stream:
        assert stream.status == 200 and stream.headers["Content-Type"].startswith("text/event-stream")
        name, data, _ = await Sse(stream).next()
        assert (name, data["user"]) == ("ready", "Ayşe Kaya")
    async with http.get("/api/live", headers=ADMIN_AUTH) as stream:  # a header works too (curl)
        assert stream.status == 200
    r = await http.delete("/live/session")
    assert r.status == 200 and r.cookies[COOKIE].value == ""


async def test_the_stream_sends_changed_conversations_and_their_new_entries(http: ClientSession) -> None:
    cookie = {"Cookie": await sign_in(http, AYSE)}
    async with http.get("/api/live", headers=cookie) as list_stream:
        feed = Sse(list_stream)
        assert (await feed.next())[0] == "ready"
        started = time.monotonic()
        cid = await chat(http, "stream-session-01", "hi", name="Selin")
        _, summary, _ = await feed.until(
            lambda n, d, i: n == "conversation" and d["id"] == cid and d["step"] == "hello")
        assert time.monotonic() - started < 1.0
        assert summary["contact"]["name"] == "Selin" and summary["status"] == "bot"

        async with http.get("/api/live", params={"conversation": cid}, headers=cookie) as conv_stream:
            one = Sse(conv_stream)
            assert (await one.next())[0] == "ready"
            entries = []
            while len(entries) < 2:
                name, data, event_id = await one.next()
                if name == "entry":
                    assert event_id == str(data["n"])
                    entries.append(data)
            assert [e["role"] for e in entries] == ["user", "bot"] and entries[0]["text"] == "hi"
            name, detail, _ = await one.next()
            assert name == "conversation" and detail["run"]["step"] == "hello" and detail["run"]["bot"] == "demo"
            waiting_for = detail["run"]["waiting_for"]
            assert waiting_for["kind"] == "reply" and waiting_for["until"] > time.time()

            assert (await http.post(f"/api/conversations/{cid}/takeover", headers=AYSE)).status == 202
            _, entry, _ = await one.until(lambda n, d, i: n == "entry")
            assert entry["role"] == "system" and entry["event"] == "takeover"
            _, detail, _ = await one.until(lambda n, d, i: n == "conversation")
            assert (detail["owner"], detail["owner_user"], detail["status"]) == ("human", "Ayşe Kaya", "human")
            await feed.until(lambda n, d, i: n == "conversation" and d["id"] == cid and d["owner_user"] == "Ayşe Kaya")
            await chat(http, "stream-session-01", "<script>alert(1)</script>")
            _, entry, _ = await one.until(lambda n, d, i: n == "entry")
            assert (entry["role"], entry["text"]) == ("user", "<script>alert(1)</script>")  # escaping is the page's job
            await http.post(f"/api/conversations/{cid}/messages", json={"text": "Hi Selin!"}, headers=AYSE)
            _, entry, last_id = await one.until(lambda n, d, i: n == "entry")
            assert (entry["role"], entry["user"], entry["text"]) == ("human", "Ayşe Kaya", "Hi Selin!")
            await http.post(f"/api/conversations/{cid}/release", json={"step": "hours"}, headers=AYSE)
            texts: list[str] = []

            def handed_back(name: str, data: Any, _: Any) -> bool:
                texts.append(data.get("text", "")) if name == "entry" else None
                return name == "conversation" and data["owner"] == "bot"

            _, detail, _ = await one.until(handed_back)
            assert any("showroom" in t for t in texts), texts  # the bot went on at the chosen step
            assert detail["run"]["step"] == "done" and detail["status"] == "idle"

        # A reconnecting EventSource sends Last-Event-ID: only what came after it.
        async with http.get("/api/live", params={"conversation": cid},
                            headers={**cookie, "Last-Event-ID": str(last_id)}) as again:
            resumed = Sse(again)
            await resumed.next()
            _, first, _ = await resumed.until(lambda n, d, i: n == "entry")
            assert first["n"] == int(str(last_id)) + 1 and first["event"] == "release"

        # A stop changes no transcript: the list hears of it anyway.
        await http.post(f"/api/conversations/{cid}/start", json={"bot": "demo"}, headers=AYSE)
        await feed.until(lambda n, d, i: n == "conversation" and d["id"] == cid and d["status"] == "bot")
        await http.post(f"/api/conversations/{cid}/stop", headers=AYSE)
        _, stopped, _ = await feed.until(
            lambda n, d, i: n == "conversation" and d["id"] == cid and d["status"] == "idle")
        assert stopped["run_status"] == "stopped"
    assert (await http.get("/api/live", params={"conversation": "livechat:demo:none"}, headers=cookie)).status == 404


async def test_open_streams_do_not_hold_up_a_shutdown(redis: Redis, redis_url: str) -> None:
    srv = TestServer(create_app(make_config(redis_url, tokens=TOKENS)))  # type: ignore[arg-type]
    await srv.start_server()
    async with ClientSession(base_url=str(srv.make_url(""))) as http:
        cid = await chat(http, "shutdown-stream-01", "hi")
        list_stream = await http.get("/api/live", headers=AYSE)
        conv_stream = await http.get("/api/live", params={"conversation": cid}, headers=AYSE)
        await Sse(list_stream).next()
        await Sse(conv_stream).next()
        started = time.monotonic()
        await srv.close()
        assert time.monotonic() - started < 5
        list_stream.close()
        conv_stream.close()


# ---------------------------------------------------------------------- graph and page
async def test_the_flow_graph_is_laid_out_for_drawing(http: ClientSession) -> None:
    r = await http.get("/api/bots/demo/graph", headers=AYSE)
    assert r.status == 200
    graph = await r.json()
    steps = (await (await http.get("/api/bots/demo", headers=ADMIN_AUTH)).json())["flow"]["steps"]
    assert {n["id"] for n in graph["nodes"]} == set(steps)
    assert graph["start"] == "hello" and graph["version"] >= 1
    by_id = {n["id"]: n for n in graph["nodes"]}
    assert by_id["hello"]["y"] < by_id["products"]["y"] < by_id["done"]["y"]  # layered from the start
    assert all(n["x"] >= 0 and n["x"] + n["w"] <= graph["width"] and n["y"] + n["h"] <= graph["height"]
               for n in graph["nodes"])
    boxes = {(n["x"], n["y"]) for n in graph["nodes"]}
    assert len(boxes) == len(graph["nodes"])  # no two steps on top of each other
    edges = {(e["source"], e["target"]) for e in graph["edges"]}
    assert {("hello", "products"), ("hello", "reminder"), ("handoff", "handoff_reply")} <= edges
    assert all(e["path"].startswith("M") for e in graph["edges"])
    assert (await http.get("/api/bots/demo/graph", params={"version": "x"}, headers=AYSE)).status == 400
    assert (await http.get("/api/bots/nope/graph", headers=AYSE)).status == 404
    assert (await http.get("/api/bots/demo/graph")).status == 401


async def test_the_page_is_a_shell_with_a_strict_policy(http: ClientSession) -> None:
    await chat(http, "page-session-01", "secret customer text", name="Private Person")
    r = await http.get("/live")
    assert r.status == 200 and r.content_type == "text/html"
    html = await r.text()
    assert "Private Person" not in html and "secret customer text" not in html
    csp = r.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    for name, kind in (("dashboard.js", "application/javascript"), ("dashboard.css", "text/css")):
        asset = await http.get(f"/live/static/{name}")
        assert asset.status == 200 and asset.content_type == kind
    scripts = re.findall(r'<script src="/live/static/([a-z]+\.js)"', html)
    assert scripts[0] == "dom.js" and "dashboard.js" in scripts  # the shared helpers load first
    for name in scripts:
        script = await (await http.get(f"/live/static/{name}")).text()
        for sink in (".innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in script, name  # customer text reaches the page through textContent only
    assert (await http.get("/live/static/dashboard.html")).status == 404
    assert (await http.get("/live/static/..%2Fapi.py")).status == 404


async def test_an_event_for_an_unknown_lead_creates_nothing_and_a_known_one_reaches_its_conversation(
        http: ClientSession, redis: Redis) -> None:
    r = await http.post("/api/events", json={"type": "order.paid", "lead": {"id": "990001"}}, headers=OPERATOR)
    assert r.status == 404, await r.text()
    r = await http.post("/api/events", json={"type": "order.paid", "lead": {"id": "990001"}}, headers=AYSE)
    assert r.status == 403  # support reads events, it does not send them
    r = await http.post("/api/events", json={"type": "lead.updated", "lead": {"id": "990001"}}, headers=OPERATOR)
    assert r.status == 422  # not a type of the spec
    assert await redis.keys("sb:c:{lead:990001}:*") == []
    cid = await chat(http, "event-session-01", "hi")
    lead = (await redis.hget(f"sb:c:{{{cid}}}:meta", "ld")).decode()  # (statefields.SHORT)
    r = await http.post("/api/events", json={"id": "pay-1", "type": "order.paid", "lead": {"id": lead}},
                        headers=OPERATOR)
    assert r.status == 202 and await r.json() == {"id": "pay-1", "lead": lead, "duplicate": False}
    # forwarded by the lead queue, handled in the background
    await wait_for(lambda: dedupe.seen_at(redis, cid, f"lead-event:{lead}:pay-1"), what="the event forwarded")


async def test_the_stream_does_not_list_lead_queues_as_conversations(http: ClientSession, redis: Redis) -> None:
    cookie = {"Cookie": await sign_in(http, AYSE)}
    cid = await chat(http, "stream-leads-01", "hi")
    lead = (await redis.hget(f"sb:c:{{{cid}}}:meta", "ld")).decode()  # (statefields.SHORT)
    async with http.get("/api/live", headers=cookie) as list_stream:
        feed = Sse(list_stream)
        assert (await feed.next())[0] == "ready"
        r = await http.post("/api/events", json={"type": "order.paid", "lead": {"id": lead},
                                                 "contact": {"id": "1"}}, headers=OPERATOR)
        assert r.status == 202
        marker = await chat(http, "stream-leads-02", "after the event")
        listed = []
        while marker not in listed:
            name, data, _ = await feed.next()
            if name == "conversation":
                listed.append(data["id"])
        assert [c for c in listed if c.startswith("lead:")] == []


# ---------------------------------------------------------------------- hand-back (issue 15 §5)
async def _conversation(http: ClientSession, cid: str) -> dict[str, Any]:
    r = await http.get(f"/api/conversations/{cid}", headers=AYSE)
    assert r.status == 200, await r.text()
    return dict(await r.json())


async def _until(http: ClientSession, cid: str, test: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        conv = await _conversation(http, cid)
        return conv if test(conv) else None
    return dict(await wait_for(check, what=f"the conversation {cid}"))


def _bot_texts(conv: dict[str, Any]) -> list[str]:
    return [e["text"] for e in conv["transcript"] if e["role"] == "bot"]


async def test_a_message_that_came_during_a_takeover_is_shown_and_answered_at_hand_back_if_chosen(
        http: ClientSession) -> None:
    cid = await chat(http, "held-answer-0001", "hi", name="Deniz")
    assert (await http.post(f"/api/conversations/{cid}/takeover", headers=AYSE)).status == 202
    await chat(http, "held-answer-0001", "products")  # a button's synonym: the bot would move on
    conv = await _conversation(http, cid)
    assert conv["held_message"] == {"text": "products", "payload": None, "kind": "text"}
    assert len(_bot_texts(conv)) == 1  # the greeting only: the bot is silent while Ayşe has it
    assert (await http.post(f"/api/conversations/{cid}/release", json={"answer": True}, headers=AYSE)).status == 202
    conv = await _until(http, cid, lambda c: len(_bot_texts(c)) == 2)
    assert _bot_texts(conv)[-1].startswith("We make sofas")  # answered, not dropped
    line = next(e for e in conv["transcript"] if e.get("event") == "release")
    assert line["text"] == ("the bot is back, handed back by Ayşe Kaya; "
                            "the bot answers the customer's message “products”")
    assert line["user"] == "Ayşe Kaya" and conv["held_message"] is None


async def test_a_held_message_the_person_keeps_is_said_in_the_transcript_and_not_answered(
        http: ClientSession) -> None:
    cid = await chat(http, "held-keep-0001", "hi", name="Deniz")
    assert (await http.post(f"/api/conversations/{cid}/takeover", headers=MERT)).status == 202
    await chat(http, "held-keep-0001", "products")
    assert (await http.post(f"/api/conversations/{cid}/release", json={}, headers=MERT)).status == 202
    conv = await _until(http, cid, lambda c: c["owner"] == "bot")
    line = next(e for e in conv["transcript"] if e.get("event") == "release")
    assert line["text"] == ("the bot is back, handed back by Mert Demir; "
                            "the bot leaves the customer's message “products” unanswered")
    assert len(_bot_texts(conv)) == 1 and conv["held_message"] is None and conv["run"]["step"] == "hello"


async def test_release_refuses_a_bad_answer_or_step(http: ClientSession) -> None:
    cid = await chat(http, "held-bad-00001", "hi")
    assert (await http.post(f"/api/conversations/{cid}/takeover", headers=AYSE)).status == 202
    for body in ({"answer": "yes"}, {"answer": 1}, {"answer": None}, {"step": 5}, {"step": ["hello"]}):
        r = await http.post(f"/api/conversations/{cid}/release", json=body, headers=AYSE)
        assert r.status == 400, body
        assert (await r.json())["error"]["code"] == "bad_request"
    r = await http.post(f"/api/conversations/{cid}/release", json={"step": "nosuchstep"}, headers=AYSE)
    assert r.status == 422 and (await r.json())["error"]["code"] == "unknown_step"
    for raw in (b"null", b"[]", b"1", b'"x"'):  # no body at all is fine: hand back where it was
        r = await http.post(f"/api/conversations/{cid}/release", data=raw,
                            headers={**AYSE, "Content-Type": "application/json"})
        assert r.status == 400, raw
    r = await http.post(f"/api/conversations/{cid}/messages", json={"text": "x" * 4097}, headers=AYSE)
    assert r.status == 400 and "at most 4096" in (await r.json())["error"]["message"]
    assert (await _conversation(http, cid))["owner"] == "human"  # nothing was handed back


async def test_start_refuses_a_step_that_is_not_the_bots(http: ClientSession) -> None:
    cid = await chat(http, "start-bad-0001", "hi")
    for body, status in (({"bot": "demo", "step": [1]}, 400), ({"bot": "demo", "step": {"a": 1}}, 400),
                         ({"bot": "demo", "step": "nosuchstep"}, 422)):
        assert (await http.post(f"/api/conversations/{cid}/start", json=body, headers=AYSE)).status == status, body
    assert "error" not in [e.get("event") for e in (await _conversation(http, cid))["transcript"]]


async def test_run_boundaries_are_marked_in_the_transcript(http: ClientSession) -> None:
    cid = await chat(http, "runs-mark-0001", "hi")
    assert (await http.post(f"/api/conversations/{cid}/stop", headers=AYSE)).status == 202
    assert (await http.post(f"/api/conversations/{cid}/start", json={"bot": "demo"}, headers=AYSE)).status == 202
    conv = await _until(http, cid, lambda c: sum(e["role"] == "bot" for e in c["transcript"]) == 2)
    events = [e.get("event") or e["role"] for e in conv["transcript"]]
    assert events == ["user", "bot", "run_end", "run_start", "bot"]  # the first run needs no start mark
    assert [e["text"] for e in conv["transcript"] if e["role"] == "system"] == [
        "run of demo v1 ended (stopped)", "run of demo v1 started"]
    assert conv["transcript"][3]["step"] == "hello"


async def test_the_list_says_since_when_a_customer_waits(http: ClientSession) -> None:
    cid = await chat(http, "waits-since-001", "hi")
    assert (await http.post(f"/api/conversations/{cid}/takeover", headers=AYSE)).status == 202
    before = time.time()
    await chat(http, "waits-since-001", "anyone?")
    await chat(http, "waits-since-001", "hello??")
    row = (await listing(http, waiting=1))["conversations"][0]
    assert row["id"] == cid and before - 1 <= row["waiting_since"] <= row["last_activity"]
    first = row["waiting_since"]
    conv = await _conversation(http, cid)
    assert conv["waiting_since"] == first  # the oldest unanswered message, not the newest
    assert (await http.post(f"/api/conversations/{cid}/messages", json={"text": "here"}, headers=AYSE)).status == 202
    conv = await _until(http, cid, lambda c: c["chat_status"] == "answered")
    assert conv["waiting_since"] is None


async def test_a_held_message_with_no_bot_running_is_said_to_be_left_unanswered(http: ClientSession) -> None:
    cid = await chat(http, "held-norun-001", "hi")
    assert (await http.post(f"/api/conversations/{cid}/takeover", headers=AYSE)).status == 202
    assert (await http.post(f"/api/conversations/{cid}/stop", headers=AYSE)).status == 202
    await chat(http, "held-norun-001", "products")
    assert (await http.post(f"/api/conversations/{cid}/release", json={"answer": True}, headers=AYSE)).status == 202
    conv = await _until(http, cid, lambda c: c["owner"] == "bot")
    line = next(e for e in conv["transcript"] if e.get("event") == "release")
    assert line["text"].endswith("the bot leaves the customer's message “products” unanswered")
    assert len(_bot_texts(conv)) == 1
