"""aiohttp's own refusals on the JSON routes (no such route, a wrong method, a body over the
limit) answer in the API's error shape, not aiohttp's plain text; pages keep theirs."""

from __future__ import annotations

import io
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
