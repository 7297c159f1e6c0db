"""``GET /api/live/orders``: the orders a dashboard shows, live (Server-Sent Events).

``Shop`` publishes an order's id on ``sb:orders:changed`` after every create and change, from
any process. Each web process holds one subscription while it has order streams open
(``OrderFeed``, made of ``bot.store.fanout`` as the dashboard's feeds) and forwards every id as
an ``order`` event; the browser reads the order through ``GET /api/orders/{id}`` (so the stream
carries no order data and needs no shop code). After a
reconnect to Redis (ids may have been missed) streams get ``resync``: the view reloads its list.
Auth as ``/api/live``: a bearer token or the ``/live`` session cookie (EventSource sends no header).
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from ..runtime.shop import ORDERS_CHANNEL
from ..store.fanout import Fanout, Subscription
from .dashboard import HEARTBEAT, _event, _stream_principal
from .keys import SERVICES

log = logging.getLogger("salesbot.server.orders_live")
routes = web.RouteTableDef()
#: Ids a stream may be behind before it is told to reload instead (a stalled browser).
BACKLOG = 500
_CLOSE = ""  # put in a stream's queue on shutdown (no order id is empty)
_RESYNC = "\x00resync"


class OrderFeed(Fanout[str]):
    """The order streams' queues, fed by one subscription per process held while any is open."""

    def __init__(self, app: web.Application) -> None:
        super().__init__(backlog=BACKLOG, resync=_RESYNC, closing=_CLOSE)
        self.channel = Subscription(lambda: app[SERVICES].redis, ORDERS_CHANNEL, on_message=self._changed,
                                    on_resync=self.resync, listening=lambda: bool(self.subscribers), linger=0,
                                    name="orders_live", log=log)

    async def opened(self) -> None:
        """The subscription is confirmed when ``subscribe`` enters, so a caller that loads its
        list afterwards misses nothing."""
        await self.channel.acquire()

    def emptied(self) -> None:
        self.channel.release()

    async def stop(self) -> None:
        self.close()
        await self.channel.stop()

    def _changed(self, oid: str) -> None:
        if oid and oid != _RESYNC:
            self.put(oid)


FEED: web.AppKey[OrderFeed] = web.AppKey("orders_feed", OrderFeed)


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
