"""The aiohttp application: services opened and closed in one cleanup context, background
work (the worker loops, the bots listener) tracked and stopped on shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from aiohttp import web

from ..logs import quiet_parser_rejections
from ..runtime.worker import Worker
from . import (
    analytics_api,
    api,
    automations_api,
    channel_webhooks,
    crm_api,
    customers_api,
    dashboard,
    events_api,
    kommo_webhooks,
    livechat,
    orderlinks_api,
    orderpage,
    orders_live,
    outbound_api,
    pages,
    pipeline_api,
    processes_api,
    shop_api,
    splits_api,
    tracking,
)
from .http import errors_middleware, mark_prepared, use_expect_handler
from .keys import LIMITS, SERVICES
from .ratelimit import Limits
from .services import Services, open_services

if TYPE_CHECKING:
    from ..config import Config

log = logging.getLogger("salesbot.server")


async def openapi_document(request: web.Request) -> web.Response:
    """``GET /api/openapi.json``: the document (600 lines of dicts, bot/server/openapi.py) is
    built at the first request, not at start (issue 14: startup)."""
    from .openapi import document

    return web.json_response(document())


def create_app(config: Config, *, role: str = "all", services: Services | None = None) -> web.Application:
    """The app for ``role`` ``all`` or ``web`` (``worker`` runs no HTTP routes but health)."""
    limits = Limits(config.limits)  # outermost: it sees the 401s the error middleware makes
    app = web.Application(middlewares=[limits.middleware(), errors_middleware], client_max_size=2 * 1024 * 1024)
    app[LIMITS] = limits
    app.on_response_prepare.append(mark_prepared)  # errors_middleware: too late for a 503
    app.add_routes(api.routes)
    app.add_routes(crm_api.routes)
    app.add_routes(automations_api.routes)
    app.add_routes(events_api.routes)
    app.router.add_get("/api/openapi.json", openapi_document)
    app.add_routes(outbound_api.routes)
    app.add_routes(pipeline_api.routes)  # /api/automations/{id}/counts
    app.add_routes(splits_api.routes)  # /api/bots/{id}/splits
    app.add_routes(processes_api.routes)  # /api/processes/{id}/contacts, /api/contacts/{id}/processes
    app.add_routes(analytics_api.routes)  # /api/analytics/…
    customers_api.setup(app)  # /api/customers
    app.add_routes(orderlinks_api.routes)  # /api/customers/{id}/order-link[s]
    app.add_routes(shop_api.routes)  # /api/products, /api/orders
    if role in ("all", "web"):
        livechat.setup(app)
        app.add_routes(kommo_webhooks.routes)  # before the generic /webhooks/{channel}/{account}
        app.add_routes(channel_webhooks.routes)
        app.add_routes(pages.routes)
        app.add_routes(orderpage.routes)  # /order/<token>: the quick-order page
        app.add_routes(tracking.routes)  # /t/o, /t/c: e-mail opens and clicks
        dashboard.setup(app)  # /live, /live/session, /api/live, /api/bots/{id}/graph
        orders_live.setup(app)  # /api/live/orders
    use_expect_handler(app)
    quiet_parser_rejections()

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            svc = services if services is not None else await stack.enter_async_context(open_services(config))
            app[SERVICES] = svc
            if role == "web" and svc.jobs is not None:
                svc.jobs.local = False  # apply_to_existing jobs run in the worker processes
            if role == "web" and svc.process_jobs is not None:
                svc.process_jobs.local = False
            stop = asyncio.Event()
            tasks = [asyncio.create_task(svc.bots.listen(stop), name="bots-listener")]
            worker = None
            if role in ("all", "worker"):
                worker = Worker(svc, receivers=svc.pollers())
                tasks.append(asyncio.create_task(worker.run(stop), name="worker"))
            try:
                yield
            finally:
                stop.set()
                if worker is not None:
                    worker.stop()
                _done, pending = await asyncio.wait(tasks, timeout=config.shutdown_grace)
                for t in pending:
                    t.cancel()
                for t in pending:
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await t

    app.cleanup_ctx.append(lifecycle)
    return app
