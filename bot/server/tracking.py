"""E-mail tracking routes (public, no login: the signed token is the key).

``GET /t/o/<token>.gif`` answers a 1×1 GIF that no cache keeps and queues ``email.opened`` on
the token's lead; ``GET /t/c/<token>`` answers 302 to the token's address and queues
``email.opened`` (a click implies the open, even with images blocked) and
``email.link_clicked`` (``url``). The event ids come from the e-mail (``bot.outward.tracking``):
a repeat is a duplicate on the lead queue. A forged, damaged or truncated token is a 404 with
one warning (``tracking.bad_token``, never the token). ``HEAD`` (link scanners, prefetchers)
answers the same and queues nothing, as does every hit while ``[actions] email_tracking`` is
off (the links of e-mails sent before still redirect). The customer always gets the image or
the redirect: an event the store cannot take now is logged and lost, never an error page.
"""

from __future__ import annotations

import logging

from aiohttp import web

from ..outward.tracking import CLICK, OPEN, Hit, location
from .http import error, store_problem
from .keys import SERVICES

log = logging.getLogger("salesbot.server.tracking")
routes = web.RouteTableDef()

#: A transparent 1×1 GIF.
PIXEL = (b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00"
         b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;")
_NO_CACHE = {
    "Cache-Control": "no-store, no-cache, must-revalidate, private, max-age=0",
    "Pragma": "no-cache",
    "Expires": "0",
    "Referrer-Policy": "no-referrer",  # the target site never sees the token
    "X-Content-Type-Options": "nosniff",
}
_KINDS = {OPEN: "open", CLICK: "click"}


def _hit(request: web.Request, kind: str) -> Hit | None:
    outward = request.app[SERVICES].outward
    tracking = outward.tracking if outward is not None else None
    hit = None if tracking is None else tracking.read(kind, request.match_info["token"])
    if hit is None:
        log.warning("tracking.bad_token", extra={"kind": _KINDS[kind]})
    return hit


async def _emit(request: web.Request, hits: list[Hit]) -> None:
    """The hits' events onto their lead's queue, handled in the background (the answer is not
    held up); nothing for a lead that is gone or for a ``HEAD``."""
    if request.method == "HEAD":
        return
    services = request.app[SERVICES]
    if services.outward is None or not services.outward.tracking.enabled:
        return
    try:
        if services.directory is not None and await services.directory.get("lead", hits[0].lead_id) is None:
            log.info("tracking.lead_gone", extra={"lead": hits[0].lead_id})
            return
        for hit in hits:
            event = services.leads.event(hit.event_type, hit.lead_id, data=hit.data, id_=hit.event_id,
                                         contact_id=hit.contact_id or None, source="email")
            await services.leads.deliver(event, background=True)
    except Exception as exc:
        if store_problem(request, exc) is None:  # logged there; anything else is a bug
            raise


@routes.get("/t/o/{token}.gif")
async def opened(request: web.Request) -> web.Response:
    hit = _hit(request, OPEN)
    if hit is None:
        return error(404, "not_found", "no such tracking link")
    await _emit(request, [hit])
    return web.Response(body=PIXEL, content_type="image/gif", headers=_NO_CACHE)


@routes.get("/t/c/{token}")
async def clicked(request: web.Request) -> web.Response:
    hit = _hit(request, CLICK)
    if hit is None:
        return error(404, "not_found", "no such tracking link")
    await _emit(request, [hit.opened(), hit])
    return web.Response(status=302, headers={**_NO_CACHE, "Location": location(hit.url) or hit.url})
