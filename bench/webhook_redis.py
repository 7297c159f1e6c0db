"""The webhook bench's Redis accounting: INFO commandstats per message of a server process, and
redis-py commands and round trips per message counted inside this process."""

from __future__ import annotations

import asyncio
import contextvars
import os
import time
from pathlib import Path
from typing import Any

from webhook_baseline import baseline_app
from webhook_load import ACCOUNT, DUPLICATE_SHARE, FIRST_SHARE, KINDS, Traffic, closed_loop, post
from webhook_procs import free_port


def commandstats(client: Any) -> dict[str, int]:
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()
            if name != "cmdstat_info"}


def kind_bodies(traffic: Traffic, kind: str, n: int) -> list[bytes]:
    """``n`` messages of one kind: first messages of new sessions, follow-ups, or the last ``n``
    messages sent again (call after a follow-up phase: they are answered by then)."""
    if kind == "duplicate":
        return list(traffic.recent)[-n:]
    make = traffic.first if kind == "first" else traffic.follow_up
    return [make() for _ in range(n)]


async def redis_commands_per_message(session: Any, url: str, traffic: Traffic, redis_url: str,
                                     messages: int) -> dict[str, Any]:
    """INFO commandstats delta per message of each kind (server process), the idle background
    subtracted; ``mix``: the bench's workload (FIRST_SHARE first, DUPLICATE_SHARE duplicates)."""
    import redis as sync_redis

    client = sync_redis.Redis.from_url(redis_url)
    out: dict[str, Any] = {}
    try:
        await asyncio.sleep(0.5)
        idle0, t_idle0 = commandstats(client), time.monotonic()
        await asyncio.sleep(1.5)
        idle1, t_idle1 = commandstats(client), time.monotonic()
        idle_rate = (sum(idle1.values()) - sum(idle0.values())) / (t_idle1 - t_idle0)
        sizes = {"first": max(20, messages // 4), "follow_up": messages, "duplicate": max(20, messages // 10)}
        for kind in ("first", "follow_up", "duplicate"):
            bodies = kind_bodies(traffic, kind, min(sizes[kind], len(traffic.recent)) if kind == "duplicate"
                                 else sizes[kind])
            before, t0 = commandstats(client), time.monotonic()
            ok, errors, _ = await closed_loop(session, url, iter(bodies), traffic, None, 4)
            await asyncio.sleep(0.3)  # work a message leaves behind (e.g. a new lead's events)
            after, t1 = commandstats(client), time.monotonic()
            delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
            raw = sum(delta.values())
            background = idle_rate * (t1 - t0)
            per = {k: round(v / max(1, ok), 2) for k, v in sorted(delta.items(), key=lambda kv: -kv[1]) if v}
            out[kind] = {"messages": ok, "errors": errors, "commands_per_msg": max(0.0, raw - background) / max(1, ok),
                         "raw_per_msg": raw / max(1, ok), "by_command_per_msg_raw": per}
    finally:
        client.close()
    out["idle_commands_per_s"] = idle_rate
    out["commands_per_msg"] = mix(out, "commands_per_msg")
    out["errors"] = sum(out[kind]["errors"] for kind in KINDS)
    return out


def mix(split: dict[str, Any], name: str) -> float:
    """A per-message figure of the bench's workload from the figures of each kind."""
    follow = 1.0 - FIRST_SHARE - DUPLICATE_SHARE
    return float(FIRST_SHARE * split["first"][name] + follow * split["follow_up"][name]
                 + DUPLICATE_SHARE * split["duplicate"][name])


#: The task handling a request, in its context (and in the context of the tasks it starts).
_IN_REQUEST: contextvars.ContextVar[asyncio.Task[Any] | None] = contextvars.ContextVar("bench_in_request",
                                                                                       default=None)


def _where() -> str:
    """``req``: the request's own task (what its answer waits for); ``spawn``: a task the request
    started (e.g. a new lead's automations); ``bg``: the background loops."""
    owner = _IN_REQUEST.get()
    if owner is None:
        return "bg"
    return "req" if owner is asyncio.current_task() else "spawn"


class RedisCounter:
    """Counts redis-py commands and round trips in this process, split by request / the tasks a
    request started / background."""

    def __init__(self) -> None:
        self.counts = {f"{where}_{what}": 0 for where in ("req", "spawn", "bg") for what in ("cmds", "rts")}
        self._saved: list[tuple[Any, str, Any]] = []

    def install(self) -> None:
        from redis.asyncio.connection import AbstractConnection

        counts = self.counts
        orig_pack, orig_send = AbstractConnection.pack_command, AbstractConnection.send_packed_command

        def pack_command(conn: Any, *args: Any) -> Any:
            counts[_where() + "_cmds"] += 1
            return orig_pack(conn, *args)

        async def send_packed_command(conn: Any, command: Any, check_health: bool = True) -> None:
            counts[_where() + "_rts"] += 1
            return await orig_send(conn, command, check_health)

        from bot.store.resp import _Protocol

        orig_resp_send = _Protocol.send

        def resp_send(proto: Any, loop: Any, commands: Any) -> Any:
            where = _where()
            counts[where + "_cmds"] += len(commands)
            counts[where + "_rts"] += 1
            return orig_resp_send(proto, loop, commands)

        self._saved = [(AbstractConnection, "pack_command", orig_pack),
                       (AbstractConnection, "send_packed_command", orig_send),
                       (_Protocol, "send", orig_resp_send)]
        AbstractConnection.pack_command = pack_command  # type: ignore[method-assign]
        AbstractConnection.send_packed_command = send_packed_command  # type: ignore[method-assign]
        _Protocol.send = resp_send  # type: ignore[method-assign]

    def uninstall(self) -> None:
        for owner, name, fn in self._saved:
            setattr(owner, name, fn)
        self._saved = []

    def snapshot(self) -> dict[str, int]:
        return dict(self.counts)


def _mark_request_middleware() -> Any:
    from aiohttp import web

    @web.middleware
    async def mark(request: Any, handler: Any) -> Any:
        token = _IN_REQUEST.set(asyncio.current_task())
        try:
            return await handler(request)
        finally:
            _IN_REQUEST.reset(token)

    return mark


async def round_trips_in_process(kind: str, redis_url: str, flows_dir: Path, data_dir: Path,
                                 sessions: int, messages: int) -> dict[str, Any]:
    """Run the app in this process and count redis-py commands / round trips per message."""
    import aiohttp
    import redis as sync_redis
    from aiohttp.test_utils import TestServer

    sync = sync_redis.Redis.from_url(redis_url)
    sync.flushall()
    sync.close()
    counter = RedisCounter()
    counter.install()
    try:
        if kind == "salesbot":
            from bot.config import load_config
            from bot.server.app import create_app

            config = load_config(env={}, overrides={
                "redis_url": redis_url, "flows_dir": str(flows_dir), "data_dir": str(data_dir),
                "automations_dir": str(data_dir / "no-automations"),  # conversations only, as the served run
                "admin_token": "bench-in-process", "host": "127.0.0.1", "log_level": "WARNING",
                "limits": {"enabled": False},  # one load generator is one client
                "analytics": os.environ.get("SALESBOT_ANALYTICS", "1") != "0"})  # webhook.py --no-analytics
            app = create_app(config, role="all")
            app.middlewares.append(_mark_request_middleware())
        else:
            app = baseline_app(redis_url, middlewares=[_mark_request_middleware()])
        server = TestServer(app, host="127.0.0.1", port=free_port())
        await server.start_server()
        traffic = Traffic(sessions, seed=7, tag=f"rt-{kind}")
        url = f"http://127.0.0.1:{server.port}/chat/{ACCOUNT}/messages"
        phases = {"first": [traffic.body(s) for s in traffic.sessions],  # each session's first message
                  "follow_up": [traffic.follow_up() for _ in range(messages)]}
        phases["duplicate"] = phases["follow_up"][-max(1, messages // 10):]
        split: dict[str, Any] = {}
        t1 = t2 = time.monotonic()
        bg = (counter.snapshot(), counter.snapshot())
        try:
            async with aiohttp.ClientSession() as session:
                for phase, bodies in phases.items():
                    c0, t0 = counter.snapshot(), time.monotonic()
                    errors = 0
                    for body in bodies:
                        errors += not await post(session, url, body)
                    c1 = counter.snapshot()
                    await asyncio.sleep(0.2)  # the tasks the last message started
                    c1 = counter.snapshot()
                    split[phase] = {"messages": len(bodies), "errors": errors,
                                    "rts_per_msg": (c1["req_rts"] - c0["req_rts"]) / len(bodies),
                                    "client_cmds_per_msg": (c1["req_cmds"] - c0["req_cmds"]) / len(bodies),
                                    "spawned_rts_per_msg": (c1["spawn_rts"] - c0["spawn_rts"]) / len(bodies),
                                    "spawned_cmds_per_msg": (c1["spawn_cmds"] - c0["spawn_cmds"]) / len(bodies)}
                    if phase == "follow_up":
                        t1, t2, bg = t0, time.monotonic(), (c0, c1)
        finally:
            await server.close()
    finally:
        counter.uninstall()
    c0, c1 = bg
    return {
        **split,
        "rts_per_msg": mix(split, "rts_per_msg"), "client_cmds_per_msg": mix(split, "client_cmds_per_msg"),
        "spawned_rts_per_msg": mix(split, "spawned_rts_per_msg"),
        "errors": sum(split[k]["errors"] for k in KINDS),
        "background_rts_per_s": (c1["bg_rts"] - c0["bg_rts"]) / max(1e-9, t2 - t1),
        "background_cmds_per_s": (c1["bg_cmds"] - c0["bg_cmds"]) / max(1e-9, t2 - t1),
    }
