"""Hostile input at the HTTP edge, over real HTTP against the running app (real Redis):
visitor strings with control characters, NaN/Infinity and out-of-range numbers, bytes that are
not UTF-8 in headers and cookies, JSON nested 10,000 levels, odd paths, the last-resort 500
guard, and the live chat session kept out of URLs."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bot.server.app import create_app
from crm_bridge import directory
from tests.live_app import AUTH, App, running_app
from tests.rawhttp import raw_request
from tests.server.conftest import make_config
from tests.waiting import wait_for

#: Greets by name, then answers every message (the conversation must keep answering).
ECHO: dict[str, Any] = {
    "hello": {"type": "message", "text": "Hello {{ contact.name }}: {{ message.text }}", "next": "wait"},
    "wait": {"type": "pause", "until": [{"on": "message", "next": "hello"}]},
}
DEEP = b"[" * 10_000 + b"]" * 10_000


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Log records that carry a traceback (expected bad input must log none)."""
    return [r.getMessage() for r in caplog.records if r.exc_info]


async def bot_texts(app: App, session: str, count: int) -> list[str]:
    """The first ``count`` bot texts of a live chat session (bounded wait, session in a header)."""
    found: list[str] = []

    async def enough() -> bool:
        r = await app.http.get("/chat/demo/messages", headers={"X-Salesbot-Session": session})
        found[:] = [m["text"] for m in (await r.json())["messages"] if m["role"] == "bot"]
        return len(found) >= count

    await wait_for(enough, timeout=30, what=f"{count} bot texts")  # generous: a busy 2-core CI machine
    return found


# ---------------------------------------------------------------------- 1. visitor strings
@pytest.mark.parametrize(("name", "clean"), [
    ("a\u001fb\u001fc", "abc"),  # \x1f separates the search index's source fields
    ("x\x00y", "xy"),
    ("n" * 10_000, "n" * 100),
    ("Ana\tMaria\nLopez\u2028", "Ana Maria Lopez"),
])
async def test_a_visitor_name_with_control_characters_is_cleaned_and_the_chat_keeps_answering(
        redis: Any, redis_url: str, caplog: pytest.LogCaptureFixture, name: str, clean: str) -> None:
    async with running_app(redis_url) as app:
        await app.put_flow(ECHO, "hello")
        session = "visitor-name-1"
        r = await app.http.post("/chat/demo/messages", json={
            "session": session, "text": "hi\x00 there\x1b", "name": name, "client_msg_id": "m\x1f1"})
        assert r.status == 202, await r.text()
        cid = (await r.json())["conversation"]
        assert await bot_texts(app, session, 1) == [f"Hello {clean}: hi there"]
        meta = await app.services.store.meta(cid)
        assert meta["name"] == clean
        r = await app.http.post("/chat/demo/messages", json={"session": session, "text": "again"})
        assert r.status == 202
        assert (await bot_texts(app, session, 2))[1] == f"Hello {clean}: again"
        listed = await app.api("GET", "/api/conversations", params={"q": clean[:20]})
        assert [c["id"] for c in listed["conversations"]] == [cid]
    assert tracebacks(caplog) == []


@pytest.mark.parametrize(("field", "value"), [
    ("name", 5), ("text", {"body": 5}), ("payload", []), ("client_msg_id", 7), ("text", "x" * 4097)])
async def test_visitor_fields_that_are_not_strings_are_refused_with_400_naming_them(
        redis: Any, redis_url: str, field: str, value: Any) -> None:
    async with running_app(redis_url) as app:
        body = {"session": "visitor-type-1", "text": "hi", field: value}
        r = await app.http.post("/chat/demo/messages", json=body)
        assert r.status == 400
        assert (await r.json())["error"]["code"] == f"bad_{field}"


async def test_the_websocket_cleans_visitor_strings_and_takes_the_session_from_a_subprotocol(
        redis: Any, redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    async with running_app(redis_url) as app:
        await app.put_flow(ECHO, "hello")
        session = "visitor-ws-12"
        async with app.http.ws_connect("/chat/demo/ws", protocols=("salesbot.v1", f"sid.{session}")) as ws:
            assert ws.protocol == "salesbot.v1"  # only the first is echoed: the session stays private
            await ws.send_json({"type": "message", "text": "a\x1fb", "name": "Zoe\x1f\x00",
                                "client_msg_id": "ws-1"})
            frames = await _frames(ws, lambda f: f.get("role") == "bot")
            assert {"type": "ack", "client_msg_id": "ws-1", "status": 202} in frames
            assert frames[-1]["text"] == "Hello Zoe: ab"
            await ws.send_json({"type": "message", "text": ["not", "text"], "client_msg_id": "ws-2"})
            [ack] = await _frames(ws, lambda f: f.get("type") == "ack")
            assert ack["status"] == 400 and ack["error"]["code"] == "bad_text"
            await ws.send_str(DEEP.decode())
            [err] = await _frames(ws, lambda f: f.get("type") == "error")
            assert err["code"] == "bad_json"
            await ws.send_str('{"type": "message", "text": "ok", "n": NaN}')
            [err] = await _frames(ws, lambda f: f.get("type") == "error")
            assert err["code"] == "bad_json"
            await ws.send_json({"type": "ping"})  # the socket is still served
            assert (await _frames(ws, lambda f: f.get("type") == "pong"))[-1] == {"type": "pong"}
        meta = await app.services.store.meta(f"livechat:demo:{session}")
        assert meta["name"] == "Zoe"
    assert tracebacks(caplog) == []


async def _frames(ws: aiohttp.ClientWebSocketResponse, last: Any) -> list[dict[str, Any]]:
    """Frames up to and including the first one ``last`` accepts (typing frames left out)."""
    out = []
    while True:
        frame = json.loads((await ws.receive(timeout=10)).data)
        if frame.get("type") != "typing":
            out.append(frame)
        if last(frame):
            return out


# ---------------------------------------------------------------------- 2. no NaN or infinity
async def test_a_long_poll_with_a_wait_that_is_not_a_finite_number_is_refused_at_once(
        redis: Any, redis_url: str) -> None:
    async with running_app(redis_url) as app:
        for wait in ("nan", "inf", "-inf", "1e400", "soon"):
            r = await asyncio.wait_for(app.http.get(
                "/chat/demo/messages", params={"session": "visitor-wait-1", "wait": wait}), 5)
            body = await r.json()
            assert r.status == 400, (wait, body)
            assert body["error"]["details"] == [{"parameter": "wait"}]
        for after in ("nan", "1e3", "9" * 5000):
            r = await app.http.get("/chat/demo/messages", params={"session": "visitor-wait-1", "after": after})
            assert r.status == 400 and "after" in (await r.json())["error"]["message"]


@pytest.mark.parametrize(("path", "params", "name"), [
    ("/api/conversations", {"before": "nan"}, "before"),
    ("/api/conversations", {"before": "inf"}, "before"),
    ("/api/conversations", {"before": "-1e400"}, "before"),
    ("/api/conversations", {"limit": "1e400"}, "limit"),
    ("/api/crm/contacts", {"offset": "nan"}, "offset"),
    ("/api/crm/leads", {"limit": "inf"}, "limit"),
    ("/api/bots/demo/graph", {"version": "nan"}, "version"),
])
async def test_numeric_query_parameters_must_be_finite_numbers(
        redis: Any, redis_url: str, path: str, params: dict[str, str], name: str) -> None:
    async with running_app(redis_url) as app:
        body = await app.api("GET", path, 400, params=params)
        assert body["error"]["details"] == [{"parameter": name}]
        assert name in body["error"]["message"]


async def test_a_channel_or_bot_filter_of_any_text_lists_what_matches_and_names_no_key(
        redis: Any, redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """The dashboard's channel and bot filters pick partitions by label (bot/store/partitions.py):
    a value with the label's separator, its escape, a glob, control characters or 2,000
    characters lists nothing (or what truly matches), never a 5xx, and writes no key."""
    async with running_app(redis_url) as app:
        await app.put_flow(ECHO, "hello")
        r = await app.http.post("/chat/demo/messages", json={"session": "visitor-filter-1", "text": "hi"})
        assert r.status == 202
        cid = (await r.json())["conversation"]
        await bot_texts(app, "visitor-filter-1", 1)
        keys = set(await app.services.redis.keys("*"))
        for value in ("livechat:demo", "livechat%3A", "*", "live*", ":", "%", "%25", "a\x00b", "\x1b[31m",
                      "livechat\n", "x" * 2_000):
            for name in ("channel", "bot"):
                listed = await app.api("GET", "/api/conversations", params={name: value})
                assert listed["conversations"] == [], (name, value[:20])
        r = await app.http.get("/api/conversations", params={"channel": "x" * 10_000}, headers=AUTH)
        assert r.status == 400  # a request line over aiohttp's limit: refused before any handler
        both = await app.api("GET", "/api/conversations", params={"channel": "livechat", "bot": "demo"})
        assert [c["id"] for c in both["conversations"]] == [cid]
        assert set(await app.services.redis.keys("*")) - keys <= {b"sb:workers:timers"}
    assert tracebacks(caplog) == []


async def test_a_huge_offset_is_an_empty_page_not_an_error(redis: Any, redis_url: str) -> None:
    async with running_app(redis_url) as app:
        await app.api("POST", "/api/crm/contacts", 201, json={"name": "Ana"})
        body = await app.api("GET", "/api/crm/contacts", params={"offset": str(10**30)})
        assert body["contacts"] == [] and body["total"] == 1


@pytest.mark.parametrize("raw", [
    b'{"name": "Deal", "price": NaN}', b'{"name": "Deal", "price": Infinity}',
    b'{"name": "Deal", "price": -Infinity}', b'{"name": "Deal", "price": 1e400}',
    b'{"name": "Deal", "price": 1' + b"0" * 30 + b"}",
])
async def test_json_bodies_with_nan_infinity_or_overflow_are_refused(redis: Any, redis_url: str, raw: bytes) -> None:
    async with running_app(redis_url) as app:
        body = await app.api("POST", "/api/crm/leads", 400, data=raw)
        assert body["error"]["code"] == "bad_json"


async def test_a_lead_price_out_of_range_is_refused_naming_the_field(redis: Any, redis_url: str) -> None:
    async with running_app(redis_url) as app:
        for price in (1e308, "1e308", "inf", "nan", -1):
            body = await app.api("POST", "/api/crm/leads", 422, json={"name": "Deal", "price": price})
            assert "price" in body["error"]["message"], price
        lead = await app.api("POST", "/api/crm/leads", 201, json={"name": "Deal", "price": 1500.5})
        assert lead["price"] == 1500.5


async def test_a_flow_with_nan_is_refused_and_every_served_flow_is_strict_json(redis: Any, redis_url: str) -> None:
    async with running_app(redis_url) as app:
        flow = {"format": "salesbot.flow/1", "id": "demo", "start": "a",
                "steps": {"a": {"type": "message", "text": "hi", "no_answer": {"after": "1h", "next": "a"}}}}
        raw = json.dumps(flow).replace('"1h"', "NaN").encode()
        for bad in (raw, raw.replace(b"NaN", b"Infinity"), raw.replace(b"NaN", b"1e999")):
            body = await app.api("PUT", "/api/bots/demo", 400, data=bad)
            assert body["error"]["code"] == "bad_json"
        r = await app.http.get("/api/bots/demo", headers=AUTH)
        json.loads(await r.text(), parse_constant=_no_constant)  # still valid, strict JSON


def _no_constant(name: str) -> Any:
    raise AssertionError(f"the server sent {name}")


# ---------------------------------------------------------------------- 3. no 500 for bad bytes
async def test_bytes_that_are_not_utf8_in_authorization_or_cookie_are_401(
        redis: Any, redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    async with running_app(redis_url) as app:
        status, _ = await raw_request(app.url, "GET", b"/api/bots", [(b"Authorization", b"Bearer \xff\xfe-token")])
        assert status == 401
        status, _ = await raw_request(app.url, "GET", b"/api/live", [(b"Cookie", b"sb_live=ab\xff.cd\xfe")])
        assert status == 401
        status, _ = await raw_request(app.url, "GET", b"/api/live", [(b"Cookie", b"sb_live=ab\xc3\xa9.cd")])
        assert status == 401
    assert tracebacks(caplog) == []


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/chat/demo/messages"), ("PUT", "/api/bots/demo"), ("PUT", "/api/automations/sales"),
    ("POST", "/api/automations/sales/activate"), ("POST", "/api/events"), ("POST", "/api/crm/contacts"),
    ("POST", "/api/continue/abc")])
async def test_json_nested_ten_thousand_levels_is_400(
        redis: Any, redis_url: str, caplog: pytest.LogCaptureFixture, method: str, path: str) -> None:
    async with running_app(redis_url) as app:
        if path.startswith("/api/continue"):
            await app.services.redis.set("sb:widget:abc", "livechat:demo:whoever-1")
        r = await app.http.request(method, path, data=DEEP, headers={**AUTH, "Content-Type": "application/json"})
        assert r.status == 400, await r.text()
        assert (await r.json())["error"]["code"] == "bad_json"
    assert tracebacks(caplog) == []


@pytest.mark.parametrize("path", [b"/unsubscribe/abc.%C3%A9", b"/unsubscribe/%FF%FE.x", b"/forms/%C3%A9"])
async def test_tokens_that_cannot_be_ours_are_404_pages(
        redis: Any, redis_url: str, caplog: pytest.LogCaptureFixture, path: bytes) -> None:
    async with running_app(redis_url) as app:
        for method in ("GET", "POST"):
            status, body = await raw_request(app.url, method, path)
            assert status == 404 and b"<html" in body
    assert tracebacks(caplog) == []


async def test_an_unexpected_error_is_one_log_line_and_a_plain_500(
        redis: Any, redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    app = create_app(make_config(redis_url))  # type: ignore[arg-type]

    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("secret detail /etc/passwd")

    app.router.add_get("/broken", broken)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        with caplog.at_level(logging.ERROR):
            async with aiohttp.ClientSession() as http, http.get(server.make_url("/broken")) as r:
                assert r.status == 500
                body = await r.json()
        assert body == {"error": {"code": "internal", "message": "an internal error occurred"}}
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert [r.getMessage() for r in errors] == ["http.unhandled"]
    finally:
        await server.close()


# ---------------------------------------------------------------------- 5. session out of URLs
async def test_the_long_poll_reads_the_session_from_a_header_and_still_from_the_query(
        redis: Any, redis_url: str) -> None:
    async with running_app(redis_url) as app:
        await app.put_flow(ECHO, "hello")
        r = await app.http.post("/chat/demo/messages", json={"session": "header-sess-1", "text": "hi"})
        assert r.status == 202
        assert await bot_texts(app, "header-sess-1", 1) == ["Hello : hi"]  # X-Salesbot-Session
        r = await app.http.get("/chat/demo/messages", params={"session": "header-sess-1"})  # deprecated
        assert [m["text"] for m in (await r.json())["messages"] if m["role"] == "bot"] == ["Hello : hi"]
        r = await app.http.get("/chat/demo/messages", headers={"X-Salesbot-Session": "bad session!"})
        assert r.status == 400
        async with app.http.ws_connect("/chat/demo/ws", params={"session": "header-sess-1"}) as ws:
            frames = await _frames(ws, lambda f: f.get("role") == "bot")  # the old widget still works
            assert frames[-1]["text"] == "Hello : hi"


async def test_a_hosted_form_refuses_non_finite_numbers_and_cleans_its_strings(
        redis: Any, redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    flow = {"form": {"type": "action", "actions": [{"do": "create_form", "form": "individual",
                                                    "fields": ["name", "price"]}],
                     "next": "link", "failed": "failed"},
            "link": {"type": "message", "text": "{{ vars.form_url }}"},
            "failed": {"type": "message", "text": "failed"}}
    async with running_app(redis_url, embedded_crm={"pipelines": {"Sales": ["Incoming"]}}) as app:
        await app.put_flow(flow, "form")
        cid, [url] = await app.say("form-edge-1", "hi")
        for price in ("nan", "inf", "-inf", "1e400", "1e308"):
            r = await app.http.post(url, data={"name": "Ann", "price": price})
            assert r.status == 422, price
            assert r'role="alert"' in await r.text()
        r = await app.http.post(url, data={"name": "Ann\x1f Lee\x00", "price": "1200"})
        assert r.status == 200, await r.text()
        lead = await app.api("GET", f"/api/crm/leads/{(await app.conversation(cid))['lead_id']}")
        assert lead["price"] == 1200 and lead["contacts"][0]["name"] == "Ann Lee"
    assert tracebacks(caplog) == []


async def test_an_offset_deeper_than_the_cap_inside_a_listing_is_refused_and_past_its_end_is_empty(
        redis: Any, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A deep page reads every recency bucket newer than it (bot/store/recency.py): past
    ``MAX_OFFSET`` inside the records it is refused with 400, not served by holding Redis."""
    monkeypatch.setattr(directory, "MAX_OFFSET", 2)
    async with running_app(redis_url) as app:
        for name in ("Ana", "Bo", "Cy", "Di"):
            await app.api("POST", "/api/crm/contacts", 201, json={"name": name, "tags": ["vip"]})
        assert len((await app.api("GET", "/api/crm/contacts", params={"offset": "2"}))["contacts"]) == 2
        for params in ({"offset": "3"}, {"offset": "3", "tag": "vip"}, {"offset": "3", "status": "potential"}):
            body = await app.api("GET", "/api/crm/contacts", 400, params=params)
            assert "offset is at most 2" in body["error"]["message"]
        for params in ({"offset": "4"}, {"offset": "9", "tag": "vip"}, {"offset": "9", "status": "potential"}):
            body = await app.api("GET", "/api/crm/contacts", params=params)
            assert body["contacts"] == [] and body["total"] == 4 and body["next_offset"] is None


async def test_a_continuation_over_the_size_limit_keeps_its_token(redis: Any, redis_url: str) -> None:
    async with running_app(redis_url) as app:
        await app.services.redis.set("sb:widget:big", "livechat:demo:whoever-2")
        r = await app.http.post("/api/continue/big", data=io.BytesIO(b"x" * (3 * 1024 * 1024)),
                                headers={"Content-Type": "application/json"})
        assert r.status == 413
        assert await app.services.redis.get("sb:widget:big") is not None  # the widget may call again
        assert await app.services.redis.ttl("sb:widget:big") > 86400


async def test_yes_no_query_parameters_take_yes_or_no_only(redis: Any, redis_url: str) -> None:
    async with running_app(redis_url) as app:
        for query in ("waiting=NaN", "parked=abc", "waiting=2"):
            r = await app.http.get(f"/api/conversations?{query}", headers=AUTH)
            assert r.status == 400 and (await r.json())["error"]["code"] == "bad_query", query
        for query in ("waiting=1", "waiting=false", "parked=0", "waiting="):
            assert (await app.http.get(f"/api/conversations?{query}", headers=AUTH)).status == 200, query
