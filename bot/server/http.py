"""HTTP helpers: the JSON error shape, role checks, strict request parsing, in one place."""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from aiohttp.web_urldispatcher import _default_expect_handler

from ..errors import StoreFull
from ..inputs import BadJson, loads
from ..store.outages import store_outage
from .auth import Principal
from .keys import SERVICES

log = logging.getLogger("salesbot.server.http")
#: The largest transcript number, version or offset a query may name (exact in a JS number).
MAX_INDEX = 2**53
#: Timestamps in queries: seconds since 1970, up to the year 9999.
MAX_TIMESTAMP = 253402300799.0


def error(status: int, code: str, message: str, details: list[Any] | None = None) -> web.Response:
    body: dict[str, Any] = {"error": {"code": code, "message": message}}
    if details is not None:
        body["error"]["details"] = details
    return web.json_response(body, status=status)


def page_headers(*sources: str, **more: str) -> dict[str, str]:
    """The security headers of an HTML page we serve: a Content-Security-Policy of ``sources``
    that also forbids framing and ``<base>``, no MIME sniffing, no Referer (a token in the path
    never leaves), never cached; ``more``: further headers (``X_Frame_Options`` as X-Frame-Options)."""
    return {"Content-Security-Policy": "; ".join([*sources, "frame-ancestors 'none'", "base-uri 'none'"]),
            "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store",
            **{name.replace("_", "-"): value for name, value in more.items()}}


def json_answer(body: Any, status: int = 200) -> web.Response:
    """A JSON answer with text as written (``ensure_ascii=False``: names stay readable)."""
    return web.json_response(body, status=status, dumps=lambda v: json.dumps(v, ensure_ascii=False, default=str))


class HttpError(Exception):
    def __init__(self, status: int, code: str, message: str, details: list[Any] | None = None) -> None:
        super().__init__(message)
        self.response = error(status, code, message, details)


def require(request: web.Request, *roles: str) -> Principal:
    """The caller's principal, or a 401/403 ``HttpError``."""
    auth = request.app[SERVICES].auth
    header = request.headers.get("Authorization")
    principal = auth.identify(header)
    if principal is None:
        said = "the token is not valid" if header else "a bearer token is required"
        raise HttpError(401, "unauthorized", f"{said} (Authorization: Bearer <token>)")
    if not auth.allows(principal, *roles):
        raise HttpError(403, "forbidden", f"the {principal.role} role may not do this")
    return principal


async def json_body(request: web.Request, repeated: list[str] | None = None) -> Any:
    """The body parsed by the one strict parser (``bot.inputs.loads``): no NaN or infinities,
    no integer beyond 64 bits, at most ``MAX_DEPTH`` levels; anything else is a 400. With
    ``repeated``, the pointers of keys an object repeats are appended to it (documents refuse them)."""
    try:
        return loads(await request.read(), repeated=repeated)
    except BadJson as exc:
        log.warning("http.bad_json", extra={"path": request.path, "reason": exc.reason})
        raise HttpError(400, "bad_json", f"the body is not valid JSON: {exc.reason}") from None


def query_number(request: web.Request, name: str, default: float | None = None, *,
                 minimum: float | None = None, maximum: float | None = None,
                 integer: bool = False, clamp: bool = False) -> Any:
    """A numeric query parameter: finite, within [minimum, maximum] (or clamped into it with
    ``clamp``), a whole number with ``integer``; ``default`` when absent or empty. Anything else
    is a 400 naming the parameter."""
    raw = request.query.get(name, "")
    if raw == "":
        return default
    kind = "a whole number" if integer else "a number"
    bounds = f" from {minimum:g}" if minimum is not None else ""
    bounds += f" to {maximum:g}" if maximum is not None else ""
    try:
        value: float = int(raw) if integer else float(raw)
        finite = math.isfinite(value)
    except (ValueError, OverflowError):  # not a number, or an integer too big for a float
        finite = False
    if not finite:
        raise HttpError(400, "bad_query", f"{name} is {kind}{bounds}", [{"parameter": name}])
    if clamp:
        value = max(minimum, value) if minimum is not None else value
        value = min(maximum, value) if maximum is not None else value
    elif (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise HttpError(400, "bad_query", f"{name} is {kind}{bounds}", [{"parameter": name}])
    return value


def query_flag(request: web.Request, name: str) -> bool:
    """A yes/no query parameter: ``1``/``true``/``yes`` or ``0``/``false``/``no`` (any case),
    absent or empty is no; anything else is a 400 naming it (``waiting=NaN`` is no answer)."""
    value = request.query.get(name, "").lower()
    if value in ("1", "true", "yes"):
        return True
    if value in ("", "0", "false", "no"):
        return False
    raise HttpError(400, "bad_query", f"{name} is 1 or 0 (true or false)", [{"parameter": name}])


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """``HttpError`` becomes its response; anything unexpected is logged once as
    ``http.unhandled`` and answered with a plain 500 that says nothing about the cause."""
    try:
        return await handler(request)
    except HttpError as exc:
        return exc.response
    except web.HTTPException as exc:  # aiohttp's own refusals are text: JSON on the JSON routes
        if exc.status >= 400 and exc.content_type == "text/plain" and request.path.startswith(JSON_PREFIXES):
            return _as_json(exc)
        raise
    except ConnectionError:  # the client went away
        raise
    except Exception as exc:
        if request.get(_PREPARED):  # a stream or WebSocket under way: no error response any more
            raise
        if (response := store_unavailable(request, exc)) is not None:
            return response
        # The last resort: logged once, no traceback reaches the client.
        log.exception("http.unhandled", extra={"method": request.method, "path": request.path,
                                               "error": type(exc).__name__})
        return error(500, "internal", "an internal error occurred")


#: Paths whose clients read JSON errors (the API, the live chat, the webhooks); pages keep theirs.
JSON_PREFIXES = ("/api/", "/chat/", "/webhooks/")
_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "too_large"}


def _as_json(exc: web.HTTPException) -> web.Response:
    """An aiohttp refusal (no such route, wrong method, body over the limit) in the API's shape,
    with its headers (``Allow``)."""
    status = exc.status
    said = (exc.text or "").removeprefix(f"{status}: ").strip() or exc.reason
    response = error(status, _CODES.get(status, f"http_{status}"), said)
    for name in (hdrs.ALLOW, hdrs.RETRY_AFTER):
        if name in exc.headers:
            response.headers[name] = exc.headers[name]
    return response


async def expect_handler(request: web.Request) -> None:
    """``Expect`` header handling for every route: aiohttp's default echoes the header into its
    417 body (which fails, a 500 before any middleware, on bytes that are not UTF-8) and runs
    before the middlewares, so its refusal is built here: JSON on the JSON routes, as
    ``errors_middleware`` makes the others."""
    if request.headers.get(hdrs.EXPECT, "").lower() != "100-continue":
        said = "only Expect: 100-continue is understood"
        if request.path.startswith(JSON_PREFIXES):
            raise web.HTTPExpectationFailed(text=json.dumps({"error": {"code": "expectation_failed",
                                                                       "message": said}}),
                                            content_type="application/json")
        raise web.HTTPExpectationFailed(text=said)
    await _default_expect_handler(request)


def use_expect_handler(app: web.Application) -> None:
    """Give every route of ``app`` ``expect_handler`` (aiohttp sets it per route, at creation)."""
    for route in app.router.routes():
        route._expect_handler = expect_handler  # (private in aiohttp, but set only at creation)


_PREPARED = web.RequestKey("salesbot.response_prepared", bool)


async def mark_prepared(request: web.Request, _response: web.StreamResponse) -> None:
    """``on_response_prepare``: a handler that already started its response (a stream, a
    WebSocket) cannot be answered with an error any more."""
    request[_PREPARED] = True


def store_problem(request: web.Request, exc: Exception) -> tuple[str, str, int] | None:
    """(code, message, seconds to retry after) when the store cannot take a request now: nearly
    full (new conversations wait), out of memory, or not reachable (e.g. the embedded Redis
    restarting), logged; None for anything else (a bug: a 500)."""
    kind = store_outage(exc)
    if kind is None:
        return None
    if isinstance(exc, StoreFull):
        code, message, retry = "store_full", str(exc), exc.retry_after
    elif kind == "full":
        code, message, retry = "store_full", "the store is out of memory; try again later", 30
    else:
        code, message, retry = "store_unavailable", "the store is not reachable; try again shortly", 2
    # One line per kind every few seconds while it lasts (bot.logs.OutageFilter).
    log.warning(f"store.{code}", extra={"path": request.path, "error": str(exc), "_outage": True})
    return code, message, retry


def store_unavailable(request: web.Request, exc: Exception) -> web.Response | None:
    """503 with ``Retry-After`` for a ``store_problem`` (None for other errors)."""
    problem = store_problem(request, exc)
    if problem is None:
        return None
    code, message, retry = problem
    response = error(503, code, message)
    response.headers["Retry-After"] = str(retry)
    return response
