"""``GET /api/live/orders``: the orders a dashboard shows, live (Server-Sent Events).

``Shop`` publishes an order's id on ``sb:orders:changed`` after every create and change, from
any process. Each web process holds one subscription while it has order streams open
(``OrderFeed``) and forwards every id as an ``order`` event; the browser reads the order through
``GET /api/orders/{id}`` (so the stream carries no order data and needs no shop code). After a
reconnect to Redis (ids may have been missed) streams get ``resync``: the view reloads its list.
Auth as ``/api/live``: a bearer token or the ``/live`` session cookie (EventSource sends no header).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from redis.asyncio import Redis

from ..runtime.shop import ORDERS_CHANNEL
from .dashboard import HEARTBEAT, _stream_principal
from .keys import SERVICES

log = logging.getLogger("salesbot.server.orders_live")
routes = web.RouteTableDef()
#: Ids a stream may be behind before it is told to reload instead (a stalled browser).
BACKLOG = 500
_CLOSE = ""  # put in a stream's queue on shutdown (no order id is empty)
_RESYNC = "\x00resync"


class OrderFeed:
    """One Redis subscription per process, held while order streams are open, fanned out."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.subscribers: set[asyncio.Queue[str]] = set()
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[asyncio.Queue[str]]:
        """A queue of changed order ids; the subscription is confirmed when this enters, so a
        caller that loads its list afterwards misses nothing."""
        q: asyncio.Queue[str] = asyncio.Queue(maxsize=BACKLOG)
        self.subscribers.add(q)
        try:
            if self._task is None or self._task.done():
                self._ready = asyncio.Event()
                self._task = asyncio.create_task(self._run(self._ready), name="orders-feed")
            await asyncio.wait_for(self._ready.wait(), timeout=10)
            yield q
        finally:
            self.subscribers.discard(q)
            if not self.subscribers and self._task is not None:
                self._task.cancel()
                self._task = None

    async def stop(self) -> None:
        for q in list(self.subscribers):
            self._put(q, _CLOSE)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    @staticmethod
    def _put(q: asyncio.Queue[str], item: str) -> None:
        try:
            q.put_nowait(item)
        except asyncio.QueueFull:  # far behind: drop what it holds, it reloads the list
            while not q.empty():
                q.get_nowait()
            q.put_nowait(_RESYNC)

    async def _run(self, ready: asyncio.Event) -> None:
        while True:
            redis: Redis = self.app[SERVICES].redis
            pubsub = redis.pubsub()
            try:
                await pubsub.subscribe(ORDERS_CHANNEL)
                async for msg in pubsub.listen():
                    kind = msg.get("type")
                    if kind == "subscribe":
                        if ready.is_set():  # a resubscription: what was published meanwhile is lost
                            for q in list(self.subscribers):
                                self._put(q, _RESYNC)
                        ready.set()
                    elif kind == "message":
                        data = msg["data"]
                        oid = data.decode(errors="replace") if isinstance(data, bytes) else str(data)
                        for q in list(self.subscribers):
                            if oid and oid != _RESYNC:
                                self._put(q, oid)
            except asyncio.CancelledError:
                raise
            except Exception:  # a dropped connection: subscribe again
                log.warning("orders_live.reconnect", exc_info=True)
                await asyncio.sleep(0.5)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()


FEED: web.AppKey[OrderFeed] = web.AppKey("orders_feed", OrderFeed)


def _event(name: str, data: Any) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


@routes.get("/api/live/orders")
async def orders_stream(request: web.Request) -> web.StreamResponse:
    principal = await _stream_principal(request)
    feed = request.app[FEED]
    async with feed.subscribe() as changes:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8",
                                               "Cache-Control": "no-store", "X-Accel-Buffering": "no"})
        await response.prepare(request)
        try:
            await response.write(b"retry: 2000\n\n" + _event("ready", {"user": principal.name}))
            while True:
                try:
                    item = await asyncio.wait_for(changes.get(), timeout=HEARTBEAT)
                except TimeoutError:
                    await response.write(b": ping\n\n")
                    continue
                if item == _CLOSE:
                    break
                await response.write(_event("resync", {}) if item == _RESYNC else _event("order", {"id": item}))
        except (ConnectionResetError, ConnectionError, asyncio.CancelledError):
            pass  # the browser went away (or the server stops)
    return response


def setup(app: web.Application) -> None:
    app[FEED] = OrderFeed(app)
    app.add_routes(routes)

    async def on_shutdown(app: web.Application) -> None:
        await app[FEED].stop()

    app.on_shutdown.append(on_shutdown)
