"""aiohttp's own refusals on the JSON routes (no such route, a wrong method, a body over the
limit) answer in the API's error shape, not aiohttp's plain text; pages keep theirs. And the
messages say what is wrong (a wrong token is not a missing one; version 0 is no version)."""

from __future__ import annotations

import io
import json
from typing import Any

from tests.live_app import AUTH, running_app


async def test_refusals_on_json_routes_are_json(redis: Any, redis_url: str) -> None:
    async with running_app(redis_url) as app:
        for method, path, status, code, kwargs in [
            ("GET", "/api/nosuchroute", 404, "not_found", {}),
            ("GET", "/api/{}/x", 404, "not_found", {}),
            ("DELETE", "/api/bots", 405, "method_not_allowed", {}),
            ("GET", "/chat/demo/nosuch", 404, "not_found", {}),
            ("POST", "/api/crm/contacts", 413, "too_large", {"data": io.BytesIO(b"x" * (3 * 1024 * 1024)),
                                                             "headers": {**AUTH, "Content-Type": "application/json"}}),
        ]:
            r = await app.http.request(method, path, **kwargs)
            assert (r.status, r.content_type) == (status, "application/json"), (method, path, await r.text())
            assert (await r.json())["error"]["code"] == code
            if status == 405:
                assert "GET" in r.headers["Allow"]
        r = await app.http.get("/no/such/page")  # not a JSON route: aiohttp's answer stays
        assert r.status == 404 and r.content_type == "text/plain"


async def test_messages_say_what_is_wrong(redis: Any, redis_url: str) -> None:
    async with running_app(redis_url) as app:
        r = await app.http.post("/api/bots/demo/activate", json={"version": 0}, headers=AUTH)
        assert r.status == 400 and "a version number from 1" in (await r.json())["error"]["message"]
        r = await app.http.post("/api/bots/demo/activate", json={"version": 99}, headers=AUTH)
        assert r.status == 404 and (await r.json())["error"]["message"] == "no bot 'demo' version 99"
        r = await app.http.post("/api/bots/demo/activate", data=b"", headers=AUTH)
        message = (await r.json())["error"]["message"]
        assert r.status == 400 and message.count("not valid JSON") == 1, message
        r = await app.http.get("/api/bots", headers={"Authorization": "Bearer wrong"})
        assert r.status == 401 and (await r.json())["error"]["message"].startswith("the token is not valid")
        r = await app.http.get("/api/bots")
        assert r.status == 401 and (await r.json())["error"]["message"].startswith("a bearer token is required")


async def test_an_expect_header_other_than_100_continue_is_a_json_417_that_echoes_nothing(
        redis: Any, redis_url: str) -> None:
    from tests.rawhttp import raw_request

    async with running_app(redis_url) as app:
        status, body = await raw_request(app.url, "POST", b"/api/crm/contacts", [(b"Expect", b"bogus-echo")], b"{}")
        assert status == 417 and b"bogus-echo" not in body
        assert json.loads(body)["error"]["code"] == "expectation_failed"
