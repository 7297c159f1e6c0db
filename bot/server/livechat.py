"""The live chat's HTTP routes: the widget page and files, ``POST`` of a visitor's message, a
long poll, a WebSocket with resume, and the widget's visits (``site.visit``: ``sitevisits.py``).
The channel's rules (what a visitor sees, how a message is cleaned and delivered) are
``bot.channels.livechat``; the routes add the HTTP side: the session's transport, rate limits,
error statuses, and closing the sockets at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import json.encoder
import logging
import re
import weakref
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from ..channels import livechat as chat
from ..inputs import BadInput, BadJson, loads
from .http import MAX_INDEX, error, json_body, query_number, store_problem, store_unavailable
from .keys import LIMITS, SERVICES
from .ratelimit import CLIENT
from .sitevisits import SiteVisits, page_url

log = logging.getLogger("salesbot.channels.livechat")
routes = web.RouteTableDef()
#: Open widget sockets, closed with 1001 ("going away") when the server shuts down.
SOCKETS: web.AppKey[weakref.WeakSet[web.WebSocketResponse]] = web.AppKey("livechat_sockets")

_ACCOUNT = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_STATIC = re.compile(r"^[a-z0-9_-]+\.[a-z]+$")
_STATIC_TYPES = {".js": "application/javascript", ".css": "text/css"}
MAX_WAIT = 60
#: Where the widget sends its session: a header on fetches, a subprotocol on the WebSocket.
SESSION_HEADER = "X-Salesbot-Session"
PROTOCOL = "salesbot.v1"
SID_PREFIX = "sid."
_CSP = "default-src 'self'; img-src * data:; style-src 'self' 'unsafe-inline'; connect-src 'self' ws: wss:"
_BAD_SESSION = "session: 8-64 letters, digits, _ or -"


def setup(app: web.Application) -> None:
    """Routes plus shutdown handling: close the sockets and wake the long polls at once."""
    app[SOCKETS] = weakref.WeakSet()
    app.add_routes(routes)

    async def on_shutdown(app: web.Application) -> None:
        app[SERVICES].hub.wake_all()
        sockets = app[SOCKETS]
        for ws in list(sockets):
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")

    app.on_shutdown.append(on_shutdown)


def _account(request: web.Request) -> str | None:
    account = request.match_info["account"]
    if not _ACCOUNT.match(account):
        return None
    acc = request.app[SERVICES].config.account(account)
    if account == "demo" or (acc is not None and acc.channel == chat.CHANNEL):
        return account
    return None


async def accept_message(request: web.Request, account: str, body: Any) -> tuple[int, dict[str, Any]]:
    """Validate and deliver one customer message; returns (HTTP status, JSON body)."""
    if not isinstance(body, dict):
        return 400, {"error": {"code": "bad_request", "message": "the body is a JSON object"}}
    session = body.get("session")
    if not isinstance(session, str) or not chat.valid_session(session):
        return 400, {"error": {"code": "bad_session", "message": _BAD_SESSION}}
    if (limited := request.app[LIMITS].message(request, session)) is not None:
        return 429, limited.body()
    if body.get("text") is None and body.get("payload") is None:
        return 400, {"error": {"code": "bad_request", "message": "text or payload is required"}}
    try:
        fields = chat.visitor_fields(body)
    except BadInput as exc:
        return 400, {"error": {"code": f"bad_{exc.field}", "message": str(exc)}}
    try:
        result = await chat.deliver(request.app[SERVICES], account, session, fields)
    except Exception as exc:  # the store full or away: the widget retries (client_msg_id dedupes)
        if (problem := store_problem(request, exc)) is None:
            raise
        code, message, retry = problem
        return 503, {"error": {"code": code, "message": message}, "retry_after": retry}
    return 202, {"accepted": True, "duplicate": result.duplicate, "conversation": chat.conversation(account, session)}


@routes.get("/chat/{account}")
async def page(request: web.Request) -> web.Response:
    account = _account(request)
    if account is None:
        return error(404, "not_found", "no live chat account with this name")
    html = chat.widget_file("livechat.html").replace("{{ACCOUNT}}", json.dumps(account))
    return web.Response(text=html, content_type="text/html", headers={"Content-Security-Policy": _CSP})


@routes.get("/chat/static/{name}")
async def static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    ext = name[name.rfind("."):] if "." in name else ""
    if ext not in _STATIC_TYPES or not _STATIC.match(name):
        return error(404, "not_found", "no such file")
    try:
        return web.Response(text=chat.widget_file(name), content_type=_STATIC_TYPES[ext])
    except FileNotFoundError:
        return error(404, "not_found", "no such file")


@routes.post("/chat/{account}/messages")
async def post_message(request: web.Request) -> web.Response:
    account = _account(request)
    if account is None:
        return error(404, "not_found", "no live chat account with this name")
    body = await json_body(request)
    status, out = await accept_message(request, account, body)
    if status >= 400 and status not in (429, 503):  # logged where decided, a line per client or kind
        log.info("livechat.rejected", extra={"reason": out["error"]["code"]})
    if status == 202:  # the common answer: no headers of its own, written without ``json.dumps``
        return web.Response(text=accepted_json(out["duplicate"], out["conversation"]), status=202,
                            content_type="application/json")
    headers = {"Retry-After": str(out["retry_after"])} if "retry_after" in out else None
    return web.json_response(out, status=status, headers=headers)


def accepted_json(duplicate: bool, conversation: str) -> str:
    """``json.dumps`` of ``accept_message``'s 202 body (``accepted``, ``duplicate``,
    ``conversation``), the same text, built directly: ``dumps`` made and ran an encoder for its
    three fields, about 21 k instructions of a message's handling, this 3.6 k (issue 14 aim 1)."""
    return (f'{{"accepted": true, "duplicate": {"true" if duplicate else "false"}, '
            f'"conversation": {json.encoder.encode_basestring_ascii(conversation)}}}')


#: A visit's body is a session and an address: anything much bigger is not one.
VISIT_BODY_MAX = 8192


@routes.post("/chat/{account}/visits")
async def visit(request: web.Request) -> web.Response:
    """The widget was opened on a page: ``{"session", "url"}``. 202 with the event types queued
    (``site.visit``, ``site.returning_visitor``; none for a visitor without a lead), see
    ``bot.server.sitevisits``."""
    account = _account(request)
    if account is None:
        return error(404, "not_found", "no live chat account with this name")
    raw = await request.content.read(VISIT_BODY_MAX + 1)
    if len(raw) > VISIT_BODY_MAX:
        log.warning("livechat.visit_rejected", extra={"reason": "too_large"})
        return error(413, "too_large", f"a visit is at most {VISIT_BODY_MAX} bytes")
    try:
        body = loads(raw, max_depth=2)
    except BadJson as exc:
        log.warning("livechat.visit_rejected", extra={"reason": "bad_json"})
        return error(400, "bad_json", f"the body is not valid JSON: {exc.reason}")
    if not isinstance(body, dict):
        log.warning("livechat.visit_rejected", extra={"reason": "bad_request"})
        return error(400, "bad_request", "the body is a JSON object")
    session = body.get("session")
    if not isinstance(session, str) or not chat.valid_session(session):
        log.warning("livechat.visit_rejected", extra={"reason": "bad_session"})
        return error(400, "bad_session", _BAD_SESSION)
    limits = request.app[LIMITS]
    who = request.get(CLIENT) or limits.client(request)
    if (limited := limits.take("messages_per_session", f"visit:{session}", who)) is not None:
        return limited.response()
    try:
        url = page_url(body.get("url"))
    except BadInput as exc:
        log.warning("livechat.visit_rejected", extra={"reason": "bad_url"})
        return error(400, "bad_url", str(exc))
    services = request.app[SERVICES]
    try:
        queued = await SiteVisits(services.store, services.leads).visit(account, session, url)
    except Exception as exc:  # the store away: the widget does not retry, the visit is lost
        if (unavailable := store_unavailable(request, exc)) is None:
            raise
        return unavailable
    return web.json_response({"accepted": True, "events": queued}, status=202)


def _session(request: web.Request) -> str:
    """The session of a reading request: the ``X-Salesbot-Session`` header (long poll), a
    ``sid.<session>`` WebSocket subprotocol (browsers cannot set headers on a WebSocket), or the
    deprecated ``session`` query parameter, which ends up in proxy logs."""
    found = request.headers.get(SESSION_HEADER)
    if found is not None:
        return found
    for proto in request.headers.get("Sec-WebSocket-Protocol", "").split(","):
        if proto.strip().startswith(SID_PREFIX):
            return proto.strip()[len(SID_PREFIX):]
    return request.query.get("session", "")


def _reader(request: web.Request) -> tuple[str, str, int] | web.Response:
    """(conversation, session, after) of a reading request (long poll, WebSocket), or an error."""
    account = _account(request)
    if account is None:
        return error(404, "not_found", "no live chat account with this name")
    session = _session(request)
    if not chat.valid_session(session):
        return error(400, "bad_session", _BAD_SESSION)
    after = int(query_number(request, "after", 0, minimum=0, maximum=MAX_INDEX, integer=True, clamp=True))
    return chat.conversation(account, session), session, after


@routes.get("/chat/{account}/messages")
async def long_poll(request: web.Request) -> web.Response:
    found = _reader(request)
    if isinstance(found, web.Response):
        return found
    cid, _, after = found
    store = request.app[SERVICES].store
    wait = float(query_number(request, "wait", 0, minimum=0, maximum=MAX_WAIT, clamp=True))
    if wait <= 0:  # a plain read: no need to listen for changes
        messages, last = await chat.read_after(store, cid, after)
        return web.json_response({"messages": messages, "last": last})
    hub = request.app[SERVICES].hub
    async with hub.watch(cid) as changes:
        messages, last = await chat.read_after(store, cid, after)
        if not messages:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(changes.get(), timeout=wait)
                messages, last = await chat.read_after(store, cid, after)
    return web.json_response({"messages": messages, "last": last})


@routes.get("/chat/{account}/ws")
async def websocket(request: web.Request) -> web.StreamResponse:
    found = _reader(request)
    if isinstance(found, web.Response):
        return found
    cid, session, after = found
    account = request.match_info["account"]
    ws = web.WebSocketResponse(heartbeat=25, protocols=(PROTOCOL,))  # echoes only this one
    await ws.prepare(request)
    request.app[SOCKETS].add(ws)
    store, hub = request.app[SERVICES].store, request.app[SERVICES].hub
    state = {"last": after}

    async def push_new() -> None:
        messages, last = await chat.read_after(store, cid, state["last"])
        state["last"] = max(state["last"], last)
        for m in messages:
            await ws.send_json({"type": "message", **m})

    async with hub.watch(cid) as changes:
        async def pump() -> None:
            while True:
                await changes.get()
                while not changes.empty():
                    changes.get_nowait()
                await push_new()

        await push_new()
        pumper = asyncio.create_task(pump())
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    data = loads(msg.data)
                except BadJson as exc:
                    log.info("livechat.bad_json", extra={"reason": exc.reason})
                    await ws.send_json({"type": "error", "code": "bad_json",
                                        "message": f"the message is not valid JSON: {exc.reason}"})
                    continue
                if not isinstance(data, dict):
                    continue
                if data.get("type") == "message":
                    await ws.send_json({"type": "typing", "on": True})
                    status, out = await accept_message(request, account, {**data, "session": session})
                    await ws.send_json({"type": "ack", "client_msg_id": data.get("client_msg_id"),
                                        "status": status, **({"error": out["error"]} if status >= 400 else {})})
                elif data.get("type") == "ping":
                    await ws.send_json({"type": "pong"})
        finally:
            pumper.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pumper
    return ws
