"""PUT /api/bots/{id} lists every problem of the document at once: an id other than the URL's
together with the rest, a key the JSON writes twice; a URL id no bot may have is refused first."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import ClientSession

from tests.server.conftest import ADMIN

AUTH = {"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"}
FLOW: dict[str, Any] = {"format": "salesbot.flow/1", "id": "upload", "start": "a",
                        "steps": {"a": {"type": "message", "text": "Hi {{ contact.name ", "nxt": "b"},
                                  "b": {"type": "stop"}}}


async def test_an_id_other_than_the_urls_is_listed_with_every_other_problem(http: ClientSession) -> None:
    r = await http.put("/api/bots/wrongid", data=json.dumps(FLOW), headers=AUTH)
    assert r.status == 422
    error = (await r.json())["error"]
    assert [d["pointer"] for d in error["details"]] == ["/id", "/steps/a/nxt", "/steps/a/text"]
    assert error["details"][0]["message"] == 'must be "wrongid" (the id in the URL)'
    assert error["message"] == "3 problem(s) in the flow"
    assert (await http.get("/api/bots/upload", headers=AUTH)).status == 404  # nothing stored


async def test_a_url_id_no_bot_may_have_is_refused_before_the_body(http: ClientSession) -> None:
    r = await http.put("/api/bots/Bad%20Id", data=json.dumps({**FLOW, "id": "Bad Id"}), headers=AUTH)
    assert r.status == 400
    error = (await r.json())["error"]
    assert error["code"] == "bad_id"
    assert error["message"].startswith('"Bad Id" (the id in the URL) is not a valid flow id')


async def test_a_step_written_twice_is_a_problem_at_its_pointer(http: ClientSession) -> None:
    body = ('{"format": "salesbot.flow/1", "id": "twice", "start": "a", "steps": {'
            '"a": {"type": "message", "text": "first", "next": "b"}, "b": {"type": "stop"}, '
            '"a": {"type": "message", "text": "second", "next": "b"}}}')
    r = await http.put("/api/bots/twice", data=body, headers=AUTH)
    assert r.status == 422
    assert (await r.json())["error"]["details"] == [
        {"pointer": "/steps/a", "message": '"a" is written twice in this object: only the last one would count'}]
    assert (await http.get("/api/bots/twice", headers=AUTH)).status == 404
