"""HTTP helpers: the JSON error shape and role checks, in one place."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .auth import Principal
from .keys import SERVICES


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
