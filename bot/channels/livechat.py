"""The live chat channel: a widget page, a WebSocket with resume, and a long-poll fallback.

A browser session (an id the widget keeps in localStorage) is one conversation:
``livechat:<account>:<session>``. Customer messages carry a ``client_msg_id`` that dedupes
retries. Bot messages reach the widget through the conversation's transcript, whose entries
have increasing numbers ``n``: a client that reconnects sends the last ``n`` it saw and gets
everything after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import weakref
from importlib import resources
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from ..engine import events as ev
from ..inputs import BadInput, BadJson, clean_optional, loads
from ..server.http import MAX_INDEX, error, json_body, query_number, store_problem
from ..server.keys import LIMITS, SERVICES
from ..store import codec
from ..store.keys import conversation_id

log = logging.getLogger("salesbot.channels.livechat")
routes = web.RouteTableDef()
#: Open widget sockets, closed with 1001 ("going away") when the server shuts down.
SOCKETS: web.AppKey[weakref.WeakSet[web.WebSocketResponse]] = web.AppKey("livechat_sockets")


def setup(app: web.Application) -> None:
    """Routes plus shutdown handling: close the sockets and wake the long polls at once."""
    app[SOCKETS] = weakref.WeakSet()
    app.add_routes(routes)

    async def on_shutdown(app: web.Application) -> None:
        app[SERVICES].hub.wake_all()
        for ws in list(app[SOCKETS]):
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")

    app.on_shutdown.append(on_shutdown)

CHANNEL = "livechat"
_SESSION = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
_ACCOUNT = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: Transcript roles a customer sees (never internal notes or system lines).
VISIBLE_ROLES = frozenset({"user", "bot", "human"})
MAX_TEXT = 4096
MAX_NAME = 100
MAX_WAIT = 60
#: Where the widget sends its session: a header on fetches, a subprotocol on the WebSocket.
SESSION_HEADER = "X-Salesbot-Session"
PROTOCOL = "salesbot.v1"
SID_PREFIX = "sid."


def _static(name: str) -> str:
    return resources.files("bot.channels").joinpath("static", name).read_text(encoding="utf-8")


def _account(request: web.Request) -> str | None:
    account = request.match_info["account"]
    if not _ACCOUNT.match(account):
        return None
    services = request.app[SERVICES]
    if account == "demo" or (services.config.account(account) and services.config.account(account).channel == CHANNEL):  # type: ignore[union-attr]
        return account
    return None


def public_entry(n: int, entry: dict[str, Any]) -> dict[str, Any] | None:
    """What the widget may see of a transcript entry (None: not for the customer)."""
    if entry.get("role") not in VISIBLE_ROLES:
        return None
    out = {"n": n, "role": entry["role"], "text": entry.get("text", ""), "at": entry.get("at")}
    for key in ("buttons", "list", "attachments", "client_msg_id", "kind"):
        if entry.get(key) is not None:
            out[key] = entry[key]
    return out


async def read_after(request: web.Request, cid: str, after: int) -> tuple[list[dict[str, Any]], int]:
    """Every customer-visible entry after ``after`` (read in pages until the log is exhausted)."""
    store = request.app[SERVICES].store
    out = []
    last = after
    while True:
        rows = await store.read_log(cid, last, 500)
        for n, blob in rows:
            last = n
            entry = public_entry(n, codec.unpack(blob))
            if entry is not None:
                out.append(entry)
        if len(rows) < 500:
            return out, last


def _visitor_fields(body: dict[str, Any]) -> dict[str, str | None]:
    """The visitor's strings, cleaned by ``bot.inputs.clean_text`` (control characters out,
    NFC, length capped); ``BadInput`` names the field that is not a string or is too long."""
    limits = {"text": MAX_TEXT, "payload": 256, "client_msg_id": 128}
    out: dict[str, str | None] = {}
    for name, limit in limits.items():
        value = body.get(name)
        if isinstance(value, str) and len(value) > limit:
            raise BadInput(name, f"a string of at most {limit} characters")
        out[name] = clean_optional(value, name, limit=limit)
    if body.get("text") is not None and out["text"] is None:
        out["text"] = ""  # nothing but control characters: an empty text, as "" would be
    out["name"] = clean_optional(body.get("name"), "name", limit=MAX_NAME, line=True)
    return out


async def accept_message(request: web.Request, account: str, body: Any) -> tuple[int, dict[str, Any]]:
    """Validate and deliver one customer message; returns (HTTP status, JSON body)."""
    if not isinstance(body, dict):
        return 400, {"error": {"code": "bad_request", "message": "the body is a JSON object"}}
    session = body.get("session")
    if not isinstance(session, str) or not _SESSION.match(session):
        return 400, {"error": {"code": "bad_session", "message": "session: 8-64 letters, digits, _ or -"}}
    if (limited := request.app[LIMITS].message(request, session)) is not None:
        return 429, limited.body()
    if body.get("text") is None and body.get("payload") is None:
        return 400, {"error": {"code": "bad_request", "message": "text or payload is required"}}
    try:
        fields = _visitor_fields(body)
    except BadInput as exc:
        return 400, {"error": {"code": f"bad_{exc.field}", "message": str(exc)}}
    text, payload, client_msg_id = fields["text"], fields["payload"], fields["client_msg_id"]
    services = request.app[SERVICES]
    cid = conversation_id(CHANNEL, account, session)
    meta = {"channel": CHANNEL, "account": account, "external_id": session}
    if fields["name"]:
        meta["name"] = fields["name"]
    event = ev.InboundMessage(text=text or "", payload=payload, message_id=client_msg_id,
                              kind="button" if payload else "text", greeting=services.greeting_bot(account))
    try:
        result = await services.conversations.deliver(
            cid, event, dedupe_id=f"lc:{client_msg_id}" if client_msg_id else None, meta=meta,
            entry_extra={"client_msg_id": client_msg_id} if client_msg_id else None)
    except Exception as exc:  # the store full or away: the widget retries (client_msg_id dedupes)
        if (problem := store_problem(request, exc)) is None:
            raise
        code, message, retry = problem
        return 503, {"error": {"code": code, "message": message}, "retry_after": retry}
    return 202, {"accepted": True, "duplicate": result.duplicate, "conversation": cid}


@routes.get("/chat/{account}")
async def page(request: web.Request) -> web.Response:
    account = _account(request)
    if account is None:
        return error(404, "not_found", "no live chat account with this name")
    html = _static("livechat.html").replace("{{ACCOUNT}}", json.dumps(account))
    return web.Response(text=html, content_type="text/html",
                        headers={"Content-Security-Policy": "default-src 'self'; img-src * data:; style-src 'self' 'unsafe-inline'; connect-src 'self' ws: wss:"})


@routes.get("/chat/static/{name}")
async def static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    types = {".js": "application/javascript", ".css": "text/css"}
    ext = name[name.rfind("."):] if "." in name else ""
    if ext not in types or not re.match(r"^[a-z0-9_-]+\.[a-z]+$", name):
        return error(404, "not_found", "no such file")
    try:
        return web.Response(text=_static(name), content_type=types[ext])
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
    headers = {"Retry-After": str(out["retry_after"])} if "retry_after" in out else None
    return web.json_response(out, status=status, headers=headers)


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
    if not _SESSION.match(session):
        return error(400, "bad_session", "session: 8-64 letters, digits, _ or -")
    after = int(query_number(request, "after", 0, minimum=0, maximum=MAX_INDEX, integer=True, clamp=True))
    return conversation_id(CHANNEL, account, session), session, after


@routes.get("/chat/{account}/messages")
async def long_poll(request: web.Request) -> web.Response:
    found = _reader(request)
    if isinstance(found, web.Response):
        return found
    cid, _, after = found
    wait = float(query_number(request, "wait", 0, minimum=0, maximum=MAX_WAIT, clamp=True))
    if wait <= 0:  # a plain read: no need to listen for changes
        messages, last = await read_after(request, cid, after)
        return web.json_response({"messages": messages, "last": last})
    hub = request.app[SERVICES].hub
    async with hub.watch(cid) as changes:
        messages, last = await read_after(request, cid, after)
        if not messages:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(changes.get(), timeout=wait)
                messages, last = await read_after(request, cid, after)
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
    hub = request.app[SERVICES].hub
    state = {"last": after}

    async def push_new() -> None:
        messages, last = await read_after(request, cid, state["last"])
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
                    await ws.send_json({"type": "error", "code": "bad_json", "message": exc.reason})
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
