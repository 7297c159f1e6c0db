"""HTTP helpers: the JSON error shape and role checks, in one place."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..errors import StoreFull
from .auth import Principal
from .keys import SERVICES

log = logging.getLogger("salesbot.server")


def error(status: int, code: str, message: str, details: list[Any] | None = None) -> web.Response:
    body: dict[str, Any] = {"error": {"code": code, "message": message}}
    if details is not None:
        body["error"]["details"] = details
    return web.json_response(body, status=status)


class HttpError(Exception):
    def __init__(self, status: int, code: str, message: str, details: list[Any] | None = None) -> None:
        super().__init__(message)
        self.response = error(status, code, message, details)


def require(request: web.Request, *roles: str) -> Principal:
    """The caller's principal, or a 401/403 ``HttpError``."""
    auth = request.app[SERVICES].auth
    principal = auth.identify(request.headers.get("Authorization"))
    if principal is None:
        raise HttpError(401, "unauthorized", "a bearer token is required (Authorization: Bearer <token>)")
    if not auth.allows(principal, *roles):
        raise HttpError(403, "forbidden", f"the {principal.role} role may not do this")
    return principal


async def json_body(request: web.Request) -> Any:
    try:
        return await request.json()
    except ValueError:
        raise HttpError(400, "bad_json", "the body is not valid JSON") from None


@web.middleware
async def errors_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)  # type: ignore[no-any-return]
    except HttpError as exc:
        return exc.response
    except (StoreFull, RedisError) as exc:
        response = None if request.get(_PREPARED) else store_unavailable(request, exc)
        if response is None:  # another Redis error, or a stream already under way: as before
            raise
        return response


_PREPARED = web.RequestKey("salesbot.response_prepared", bool)


async def mark_prepared(request: web.Request, _response: web.StreamResponse) -> None:
    """``on_response_prepare``: a handler that already started its response (a stream, a
    WebSocket) cannot be answered with an error any more."""
    request[_PREPARED] = True


def store_unavailable(request: web.Request, exc: StoreFull | RedisError) -> web.Response | None:
    """503 with ``Retry-After`` when the store cannot take the request now: nearly full (new
    conversations wait), out of memory, or not reachable (e.g. the embedded Redis restarting).
    None for other Redis errors (a bug: the 500 it was)."""
    if isinstance(exc, StoreFull):
        code, message, retry = "store_full", str(exc), exc.retry_after
    elif isinstance(exc, ResponseError) and "OOM command not allowed" in str(exc):
        code, message, retry = "store_full", "the store is out of memory; try again later", 30
    elif isinstance(exc, (RedisConnectionError, RedisTimeoutError)):
        code, message, retry = "store_unavailable", "the store is not reachable; try again shortly", 2
    else:
        return None
    # One line per kind every few seconds while it lasts (bot.logs.OutageFilter).
    log.warning(f"store.{code}", extra={"path": request.path, "error": str(exc), "_outage": True})
    response = error(503, code, message)
    response.headers["Retry-After"] = str(retry)
    return response
