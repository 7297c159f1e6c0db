"""/api/openapi.json is kept true: routes match the document and responses match its schemas."""

from __future__ import annotations

import re
from typing import Any

import jsonschema
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from tests.server.conftest import ADMIN

AUTH = {"Authorization": f"Bearer {ADMIN}"}


def _validate(doc: dict[str, Any], path: str, method: str, status: int, body: Any) -> None:
    response = doc["paths"][path][method]["responses"][str(status)]
    schema = response["content"]["application/json"]["schema"]
    wrapper = {**schema, "components": doc["components"]}
    jsonschema.validate(body, wrapper, cls=jsonschema.Draft202012Validator)


async def test_every_route_is_documented_and_every_documented_route_exists(server: TestServer,
                                                                           http: ClientSession) -> None:
    doc = await (await http.get("/api/openapi.json")).json()
    served = set()
    for resource in server.app.router.resources():
        info = resource.get_info()
        path = info.get("path") or info.get("formatter")
        for route in resource:
            if route.method in ("HEAD", "OPTIONS"):
                continue
            served.add((re.sub(r"\{(\w+)(:[^}]*)?\}", r"{\1}", path), route.method.lower()))
    documented = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    assert served == documented


async def test_responses_match_the_documented_schemas(http: ClientSession) -> None:
    doc = await (await http.get("/api/openapi.json")).json()
    r = await http.get("/healthz")
    _validate(doc, "/healthz", "get", r.status, await r.json())
    r = await http.get("/api/bots", headers=AUTH)
    _validate(doc, "/api/bots", "get", r.status, await r.json())
    flow = (await (await http.get("/api/bots/demo", headers=AUTH)).json())
    _validate(doc, "/api/bots/{id}", "get", 200, flow)
    changed = {**flow["flow"], "name": "Demo, renamed"}
    r = await http.put("/api/bots/demo", json=changed, headers=AUTH)
    assert r.status == 201
    _validate(doc, "/api/bots/{id}", "put", 201, await r.json())
    r = await http.put("/api/bots/demo", json={**changed, "start": "nowhere"}, headers=AUTH)
    assert r.status == 422
    _validate(doc, "/api/bots/{id}", "put", 422, await r.json())
    r = await http.get("/api/bots/demo/versions", headers=AUTH)
    _validate(doc, "/api/bots/{id}/versions", "get", 200, await r.json())
    r = await http.post("/api/bots/demo/activate", json={"version": 1}, headers=AUTH)
    _validate(doc, "/api/bots/{id}/activate", "post", 200, await r.json())
    r = await http.post("/chat/demo/messages", json={"session": "openapi-session", "text": "hi", "client_msg_id": "o1"})
    _validate(doc, "/chat/{account}/messages", "post", 202, await r.json())
    r = await http.get("/chat/demo/messages", params={"session": "openapi-session"})
    _validate(doc, "/chat/{account}/messages", "get", 200, await r.json())
    r = await http.get("/api/conversations", headers=AUTH)
    listing = await r.json()
    _validate(doc, "/api/conversations", "get", 200, listing)
    cid = listing["conversations"][0]["id"]
    r = await http.get(f"/api/conversations/{cid}", headers=AUTH)
    _validate(doc, "/api/conversations/{cid}", "get", 200, await r.json())
    r = await http.get("/api/bots")
    assert r.status == 401
    _validate(doc, "/api/bots", "get", 401, await r.json())
