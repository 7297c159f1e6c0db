"""``/webhooks/{channel}/{account}``: a channel adapter verifies and parses the request, then
``bot.channels.webhooks.dispatch`` hands each item to its conversation.

A request with a wrong or missing signature gets 401/403 and changes nothing; a signed but
unreadable one gets 400; both are logged without their content.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from aiohttp import web

from .http import error
from .keys import SERVICES

if TYPE_CHECKING:
    from ..channels.base import ChannelAdapter, RawRequest

log = logging.getLogger("salesbot.channels.webhooks")
routes = web.RouteTableDef()


async def _raw(request: web.Request) -> RawRequest:
    # The channels' modules: loaded by a server with channel accounts when it built their adapters
    # (a request reaches here only then), not by this route's import (issue 14: startup).
    from ..channels.base import RawRequest

    public = request.app[SERVICES].config.public_url
    url = str(request.url)
    if public:  # behind a proxy the platform signed the public URL, not ours
        url = public.rstrip("/") + request.path_qs
    return RawRequest(request.method, url, dict(request.headers), await request.read(), dict(request.query))


def _adapter(request: web.Request) -> tuple[str, ChannelAdapter] | web.Response:
    services = request.app[SERVICES]
    channel, account = request.match_info["channel"], request.match_info["account"]
    acc = services.config.account(account)
    adapter = services.adapters.get(account)
    if acc is None or adapter is None or acc.channel != channel:
        return error(404, "not_found", "no such channel account")
    return account, adapter


@routes.get("/webhooks/{channel}/{account}")
async def handshake(request: web.Request) -> web.Response:
    found = _adapter(request)
    if isinstance(found, web.Response):
        return found
    _, adapter = found
    answer = adapter.handshake(await _raw(request))
    if answer is None:
        return error(405, "method_not_allowed", "this channel has no GET verification")
    status, text = answer
    if status >= 400:  # a subscription check that failed (the reason names no token)
        log.warning("webhook.rejected", extra={"channel": adapter.name, "account": found[0], "method": "GET",
                                               "reason": text[:200]})
    return web.Response(status=status, text=text)


@routes.post("/webhooks/{channel}/{account}")
async def receive(request: web.Request) -> web.Response:
    found = _adapter(request)
    if isinstance(found, web.Response):
        return found
    account, adapter = found
    from ..channels.base import MalformedWebhook, WebhookRejected
    from ..channels.webhooks import dispatch

    raw = await _raw(request)
    try:
        adapter.verify(raw)
    except WebhookRejected as exc:
        log.warning("webhook.rejected", extra={"channel": adapter.name, "account": account, "reason": str(exc)})
        return error(exc.status, "bad_signature", str(exc))
    try:
        items = adapter.parse(raw)
    except MalformedWebhook as exc:
        log.warning("webhook.malformed", extra={"channel": adapter.name, "account": account, "reason": str(exc)})
        return error(400, "malformed", str(exc))
    handled = await dispatch(request.app[SERVICES], account, adapter, items)
    reply: tuple[str, str] | None = getattr(adapter, "webhook_reply", None)  # Twilio expects TwiML
    if reply is not None:
        content_type, body = reply
        return web.Response(text=body, content_type=content_type)
    return web.json_response({"ok": True, "items": handled})
