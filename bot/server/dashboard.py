"""The support dashboard: the ``/live`` page, its sign-in, the ``/api/live`` event stream and the
flow graph of a bot.

Access. Every data route needs a ``support`` or ``admin`` token. The page (plain HTML/CSS/JS
from ``bot/server/static``, no build step, no CDN) holds the token in the tab's
``sessionStorage`` and sends it as ``Authorization: Bearer`` with every API call. ``EventSource``
cannot send headers, so the page first signs in with ``POST /live/session`` (bearer token in the
header), which sets ``sb_live``: an HttpOnly, SameSite=Strict cookie limited to ``/api/live``,
valid 12 hours, holding the person's name, role and expiry, signed with HMAC-SHA256 under a key
derived from the server's signing secret (``[actions] secret`` or the one kept in Redis, so every
web process accepts it). ``/api/live`` takes that cookie or an ``Authorization`` header (curl);
no token ever travels in a URL.

Stream. ``GET /api/live`` sends ``event: conversation`` with a conversation's summary (the same
shape as ``GET /api/conversations``) whenever it changes, in any process: the store's save script
publishes ``"<cid> <last n>"`` on ``sb:events`` (and the save path publishes ``"<cid> 0"`` when
only the owner, step or status changed); each process's ``LiveHub`` subscribes once and
``LiveFeed`` below reads each changed conversation's metadata once per process for every open
list. With ``?conversation=<cid>`` the stream is that conversation's: ``event: entry`` (``id:`` =
the transcript number ``n``, so a reconnecting ``EventSource`` resumes with ``Last-Event-ID``)
for every new transcript entry, and ``event: conversation`` with the summary and the run.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import re
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from ..inputs import header_bytes, loads
from ..outward.actions import signing_secret
from ..runtime.leads import is_lead_queue
from ..store import codec, preview, statefields
from ..store.bots import BotNotFound
from ..store.conversations import state_of
from ..store.fanout import Fanout
from ..store.indexes import ConversationIndex
from ..store.keys import ConversationKey
from .auth import Principal
from .flowgraph import layout
from .http import MAX_INDEX, HttpError, error, page_headers, query_number, require
from .keys import SERVICES
from .views import held_view, run_view, summary
from .views import state_of as decoded_state

log = logging.getLogger("salesbot.server.dashboard")
routes = web.RouteTableDef()

STATIC = Path(__file__).resolve().parent / "static"
COOKIE = "sb_live"
COOKIE_PATH = "/api/live"
SESSION_SECONDS = 12 * 3600
HEARTBEAT = 15.0
_CLOSE = -2  # put in a stream's queue on shutdown

_PAGE_HEADERS = page_headers("default-src 'none'", "script-src 'self'", "style-src 'self'", "img-src 'self' data:",
                             "connect-src 'self'", "form-action 'none'", X_Frame_Options="DENY")
_ASSET = re.compile(r"^[a-z]+\.(js|css)$")  # any script or style sheet of static/, nothing else
_TYPES = {"js": "application/javascript", "css": "text/css"}


class LiveFeed(Fanout[Any]):
    """One subscription per process to every conversation change, fanned out to the open lists:
    each changed conversation's metadata is read once, whatever the number of dashboards."""

    def __init__(self, app: web.Application) -> None:
        super().__init__(backlog=2000, resync="resync", closing=_CLOSE)
        self.app = app
        self._task: asyncio.Task[None] | None = None

    async def opened(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="dashboard-feed")

    async def stop(self) -> None:
        self.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _run(self) -> None:
        services = self.app[SERVICES]
        async with services.hub.watch_all() as changes:
            while True:
                cid, _ = await changes.get()
                changed = [cid]
                while not changes.empty():  # coalesce a burst: one read per conversation
                    more, _ = changes.get_nowait()
                    if more not in changed:
                        changed.append(more)
                changed = [c for c in changed if not is_lead_queue(c)]  # lead queues are not conversations
                if not changed:
                    continue
                if "" in changed:  # the hub may have missed changes (a reconnect): reload the lists
                    self.resync()
                    changed.remove("")
                    if not changed:
                        continue
                try:
                    metas = await ConversationIndex(services.redis).metas(changed)  # with the preview
                except Exception:
                    log.warning("dashboard.feed_read_failed", exc_info=True)
                    self.resync()
                    await asyncio.sleep(0.5)
                    continue
                for c, meta in zip(changed, metas, strict=True):
                    if meta:
                        self.put(summary(c, meta))


FEED: web.AppKey[LiveFeed] = web.AppKey("dashboard_feed", LiveFeed)
STREAMS: web.AppKey[set[asyncio.Queue[Any]]] = web.AppKey("dashboard_streams", set)
CLOSING: web.AppKey[asyncio.Event] = web.AppKey("dashboard_closing", asyncio.Event)
SESSION_KEY: web.AppKey[list[bytes]] = web.AppKey("dashboard_session_key", list)


def setup(app: web.Application) -> None:
    app[FEED] = LiveFeed(app)
    app[STREAMS] = set()
    app[CLOSING] = asyncio.Event()
    app[SESSION_KEY] = []
    app.add_routes(routes)

    async def on_shutdown(app: web.Application) -> None:
        app[CLOSING].set()
        streams: set[asyncio.Queue[Any]] = app[STREAMS]
        for q in list(streams):
            q.put_nowait(_CLOSE)
        await app[FEED].stop()

    app.on_shutdown.append(on_shutdown)


# ---------------------------------------------------------------------- sessions (the stream's cookie)
async def _session_key(app: web.Application) -> bytes:
    if not app[SESSION_KEY]:
        services = app[SERVICES]
        secret = await signing_secret(services.redis, services.config)
        app[SESSION_KEY].append(hmac.new(secret, b"salesbot live session v1", hashlib.sha256).digest())
    return app[SESSION_KEY][0]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_session(key: bytes, principal: Principal, expires: float) -> str:
    payload = _b64(json.dumps({"n": principal.name, "r": principal.role, "e": int(expires)},
                              ensure_ascii=False).encode())
    mac = _b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())
    return f"{payload}.{mac}"


def read_session(key: bytes, value: str, now: float | None = None) -> Principal | None:
    raw = header_bytes(value)  # a cookie with bytes that are not UTF-8 is no session
    payload, _, mac = (raw or b"").partition(b".")
    if not payload or not mac:
        return None
    expected = _b64(hmac.new(key, payload, hashlib.sha256).digest())
    if not hmac.compare_digest(expected.encode(), mac):
        return None
    try:
        data = loads(_unb64(payload.decode()))  # signed by us: decodes unless the key leaked
    except ValueError:
        return None
    if not isinstance(data, dict) or float(data.get("e", 0)) < (now or time.time()):
        return None
    if data.get("r") not in ("support", "admin") or not isinstance(data.get("n"), str):
        return None
    return Principal(data["r"], data["n"])


async def _stream_principal(request: web.Request) -> Principal:
    """The bearer token if one is sent, else the signed session cookie; support or admin only."""
    if request.headers.get("Authorization"):
        return require(request, "support")
    value = request.cookies.get(COOKIE)
    principal = read_session(await _session_key(request.app), value) if value else None
    if principal is None:
        raise HttpError(401, "unauthorized",
                        "sign in first (POST /live/session with a bearer token) or send Authorization: Bearer <token>")
    return principal


@routes.post("/live/session")
async def sign_in(request: web.Request) -> web.Response:
    principal = require(request, "support")
    services = request.app[SERVICES]
    expires = time.time() + SESSION_SECONDS
    bots = []
    for bot in await services.bots.ids():
        versions = await services.bots.versions(bot)
        active = await services.bots.active_version(bot)
        current = next((v for v in versions if v.version == active), None)
        bots.append({"id": bot, "name": current.name if current else bot})
    channels = sorted({"livechat", *(acc.channel for acc in services.config.accounts.values())})
    response = web.json_response({"user": principal.name, "role": principal.role, "expires": int(expires),
                                  "channels": channels, "bots": bots})
    response.set_cookie(COOKIE, sign_session(await _session_key(request.app), principal, expires),
                        max_age=SESSION_SECONDS, path=COOKIE_PATH, httponly=True, samesite="Strict",
                        secure=request.secure)
    response.headers["Cache-Control"] = "no-store"
    return response


@routes.delete("/live/session")
async def sign_out(request: web.Request) -> web.Response:
    response = web.json_response({"ok": True})
    response.del_cookie(COOKIE, path=COOKIE_PATH)
    return response


# ---------------------------------------------------------------------- the page
def _static(name: str) -> str:
    return (STATIC / name).read_text(encoding="utf-8")


@routes.get("/live")
async def page(request: web.Request) -> web.Response:
    """The dashboard's shell: a sign-in form until a token is given; no data in it."""
    return web.Response(text=_static("dashboard.html"), content_type="text/html", headers=_PAGE_HEADERS)


@routes.get("/live/static/{name}")
async def asset(request: web.Request) -> web.Response:
    match = _ASSET.match(request.match_info["name"])
    if match is None:
        return error(404, "not_found", "no such file")
    if not (STATIC / match.group(0)).is_file():
        return error(404, "not_found", "no such file")
    return web.Response(text=_static(match.group(0)), content_type=_TYPES[match.group(1)],
                        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"})


# ---------------------------------------------------------------------- the flow graph
@routes.get("/api/bots/{id}/graph")
async def graph(request: web.Request) -> web.Response:
    from ..builder.validate import parse_flow_model  # on first use: off the start path

    require(request, "operator", "support")
    bot = request.match_info["id"]
    version = query_number(request, "version", None, minimum=1, maximum=MAX_INDEX, integer=True)
    try:
        version, doc = await request.app[SERVICES].bots.document(bot, version)
    except BotNotFound as exc:
        return error(404, "not_found", str(exc))
    body = {"id": bot, "version": version, **layout(parse_flow_model(doc))}
    return web.json_response(body, dumps=lambda v: json.dumps(v, ensure_ascii=False))


# ---------------------------------------------------------------------- the event stream
def _event(name: str, data: Any, event_id: int | None = None) -> bytes:
    head = f"event: {name}\n" + (f"id: {event_id}\n" if event_id is not None else "")
    return (head + "data: " + json.dumps(data, ensure_ascii=False, default=str) + "\n\n").encode()


async def _detail(request: web.Request, cid: str) -> dict[str, Any] | None:
    services = request.app[SERVICES]
    key = ConversationKey(cid)
    pipe = services.redis.pipeline(transaction=False)
    pipe.hgetall(key.meta)
    pipe.get(key.state)
    preview.read(pipe, cid)
    raw_meta, in_key, tail = await pipe.execute()  # the state: in the metadata hash, or its own key
    if not raw_meta:
        return None
    meta = statefields.split(raw_meta, cid)[0]
    await preview.fill_all(services.redis, [(cid, meta)], [preview.tail_of(raw_meta, tail)])
    body = summary(cid, meta)
    state = decoded_state(state_of(raw_meta, in_key, cid))
    body["run"] = run_view(state.run if state is not None else None)
    body["held_message"] = held_view(state)
    return body


@routes.get("/api/live")
async def live(request: web.Request) -> web.StreamResponse:
    principal = await _stream_principal(request)
    services = request.app[SERVICES]
    cid = request.query.get("conversation")
    after = 0
    if cid:
        try:
            after = int(request.headers.get("Last-Event-ID") or request.query.get("after") or 0)
        except ValueError:
            after = -1
        if not 0 <= after <= MAX_INDEX:
            return error(400, "bad_request", "after (or Last-Event-ID) is a transcript number")
        if not await services.store.meta(cid):
            return error(404, "not_found", f"no conversation {cid!r}")
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8",
                                           "Cache-Control": "no-store", "X-Accel-Buffering": "no"})
    await response.prepare(request)
    try:
        await response.write(b"retry: 2000\n\n" + _event("ready", {"user": principal.name, "role": principal.role,
                                                                  "conversation": cid}))
        if cid:
            await _conversation_stream(request, response, cid, after)
        else:
            await _list_stream(request, response)
    except (ConnectionResetError, ConnectionError, asyncio.CancelledError):
        pass  # the browser went away (or the server stops)
    return response


async def _wait(q: asyncio.Queue[Any]) -> Any:
    try:
        return await asyncio.wait_for(q.get(), timeout=HEARTBEAT)
    except TimeoutError:
        return None


async def _list_stream(request: web.Request, response: web.StreamResponse) -> None:
    app = request.app
    async with app[FEED].subscribe() as q:
        app[STREAMS].add(q)
        try:
            while not app[CLOSING].is_set():
                item = await _wait(q)
                if item is None:
                    await response.write(b": ping\n\n")
                elif item == _CLOSE:
                    return
                elif item == "resync":
                    await response.write(_event("resync", {}))
                else:
                    await response.write(_event("conversation", item))
        finally:
            app[STREAMS].discard(q)


async def _conversation_stream(request: web.Request, response: web.StreamResponse, cid: str, after: int) -> None:
    app = request.app
    store = app[SERVICES].store
    last = after

    async def push() -> None:
        nonlocal last
        while True:
            rows = await store.read_log(cid, last, 200)
            for n, blob in rows:
                last = n
                await response.write(_event("entry", {"n": n, **codec.unpack(blob)}, n))
            if len(rows) < 200:
                break
        detail = await _detail(request, cid)
        if detail is not None:
            await response.write(_event("conversation", detail))

    async with app[SERVICES].hub.watch(cid) as changes:
        app[STREAMS].add(changes)
        try:
            await push()
            while not app[CLOSING].is_set():
                item = await _wait(changes)
                if item is None:
                    await response.write(b": ping\n\n")
                    continue
                if item == _CLOSE:
                    return
                while not changes.empty():
                    if changes.get_nowait() == _CLOSE:
                        return
                await push()
        finally:
            app[STREAMS].discard(changes)
