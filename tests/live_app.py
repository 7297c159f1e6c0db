"""A salesbot app on a known loopback port (so ``public_url`` is right), a live chat driver and
fake outside services, for tests of the outward actions and hosted pages."""

from __future__ import annotations

import contextlib
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer

from bot.server.app import create_app
from bot.server.keys import SERVICES
from bot.server.services import Services
from tests.server.conftest import ADMIN, make_config
from tests.waiting import wait_for

AUTH = {"Authorization": f"Bearer {ADMIN}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class App:
    url: str
    http: ClientSession
    services: Services
    sessions: dict[str, int] = field(default_factory=dict)

    async def put_flow(self, steps: dict[str, Any], start: str) -> None:
        flow = {"format": "salesbot.flow/1", "id": "demo", "start": start, "steps": steps}
        r = await self.http.put("/api/bots/demo", json=flow, headers=AUTH)
        assert r.status in (200, 201), await r.text()

    async def say(self, session: str, text: str, *, expect: int = 1) -> tuple[str, list[str]]:
        """The customer writes on the live chat; returns the conversation and the bot's new texts."""
        r = await self.http.post("/chat/demo/messages",
                                 json={"session": session, "text": text, "client_msg_id": uuid.uuid4().hex})
        assert r.status == 202, await r.text()
        cid = (await r.json())["conversation"]
        after = self.sessions.get(session, 0)
        texts: list[str] = []

        async def replies() -> bool:
            nonlocal after
            body = await (await self.http.get("/chat/demo/messages",
                                              params={"session": session, "after": after, "wait": 2})).json()
            after = body["last"]
            texts.extend(m["text"] for m in body["messages"] if m["role"] == "bot")
            return len(texts) >= expect

        await wait_for(replies, timeout=10)
        self.sessions[session] = after
        return cid, texts

    async def conversation(self, cid: str) -> dict[str, Any]:
        r = await self.http.get(f"/api/conversations/{cid}", headers=AUTH)
        assert r.status == 200
        return await r.json()  # type: ignore[no-any-return]

    async def api(self, method: str, path: str, status: int = 200, **kwargs: Any) -> Any:
        r = await self.http.request(method, path, headers=AUTH, **kwargs)
        body = await r.json()
        assert r.status == status, body
        return body


@contextlib.asynccontextmanager
async def running_app(redis_url: str, **config: Any) -> AsyncIterator[App]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    app = create_app(make_config(redis_url, public_url=url, **config))  # type: ignore[arg-type]
    server = TestServer(app, host="127.0.0.1", port=port)
    await server.start_server()
    try:
        async with ClientSession(base_url=url) as http:
            yield App(url, http, app[SERVICES])
    finally:
        await server.close()


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@contextlib.asynccontextmanager
async def fake_service(routes: dict[tuple[str, str], Handler]) -> AsyncIterator[str]:
    """A local HTTP server answering ``routes`` ((method, path) -> handler); yields its base URL."""
    app = web.Application()
    for (method, path), handler in routes.items():
        app.router.add_route(method, path, handler)
    server = TestServer(app, host="127.0.0.1", port=free_port())
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()
