"""The webhook bench's baseline: the minimal aiohttp + redis-py handler salesbot is compared with
(the same route and JSON body; one GET of a msgpack state, one SET back, 202)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any


def baseline_app(redis_url: str, *, middlewares: list[Any] | None = None) -> Any:
    """aiohttp + redis-py: parse the live chat body, GET the state, update it, SET it, 202."""
    import msgpack
    from aiohttp import web
    from redis.asyncio import Redis

    routes = web.RouteTableDef()
    key_redis = web.AppKey("redis", Redis)

    def bad(code: str) -> web.Response:
        return web.json_response({"error": {"code": code}}, status=400)

    @routes.post("/chat/{account}/messages")
    async def post_message(request: web.Request) -> web.Response:
        account = request.match_info["account"]
        try:
            body = await request.json()
        except ValueError:
            return bad("bad_json")
        if not isinstance(body, dict):
            return bad("bad_request")
        session, text, msg_id = body.get("session"), body.get("text"), body.get("client_msg_id")
        if not isinstance(session, str) or not 8 <= len(session) <= 64:
            return bad("bad_session")
        if not isinstance(text, str) or len(text) > 4096:
            return bad("bad_text")
        redis = request.app[key_redis]
        cid = f"livechat:{account}:{session}"
        key = f"bl:c:{{{cid}}}:state"
        blob = await redis.get(key)
        now = time.time()
        state = msgpack.unpackb(blob, raw=False) if blob else {"id": cid, "turns": 0, "step": "hello", "history": []}
        state["turns"] += 1
        state["step"] = "reply"
        state["last_message"] = {"text": text, "id": msg_id, "at": now}
        history = state["history"]
        history.append({"role": "user", "text": text, "at": now})
        history.append({"role": "bot", "text": f"Thanks there, you said: {text}", "at": now})
        del history[:-10]
        await redis.set(key, msgpack.packb(state, use_bin_type=True), ex=90 * 86400)
        return web.json_response({"accepted": True, "duplicate": False, "conversation": cid}, status=202)

    @routes.get("/healthz")
    async def healthz(request: web.Request) -> web.Response:
        await request.app[key_redis].ping()
        return web.json_response({"status": "ok"})

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        redis = Redis.from_url(redis_url, decode_responses=False, health_check_interval=30)
        app[key_redis] = redis
        try:
            yield
        finally:
            await redis.aclose()

    app = web.Application(middlewares=middlewares or [])
    app.add_routes(routes)
    app.cleanup_ctx.append(lifecycle)
    return app


def run_baseline_server(port: int, redis_url: str) -> None:
    from aiohttp import web

    web.run_app(baseline_app(redis_url), host="127.0.0.1", port=port, access_log=None, print=None,
                shutdown_timeout=2)
