from __future__ import annotations

import pytest
from aiohttp import ClientSession

pytestmark = pytest.mark.both_loops  # the server may run on uvloop: everything here runs on both


async def test_livechat_roundtrip(http: ClientSession) -> None:
    r = await http.post("/chat/demo/messages", json={"session": "abcdefgh1234", "text": "hi", "client_msg_id": "m1"})
    assert r.status == 202, await r.text()
    r = await http.get("/chat/demo/messages", params={"session": "abcdefgh1234", "after": "0"})
    body = await r.json()
    assert [m["role"] for m in body["messages"]] == ["user", "bot"]
