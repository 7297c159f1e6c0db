"""``salesbot serve`` / ``salesbot worker``: start, print where things are, stop gracefully."""

from __future__ import annotations

import asyncio
import gc
import importlib
import logging
import signal
import sys
from typing import TYPE_CHECKING, Any, TextIO

from aiohttp import web
from redis.exceptions import RedisError

from .. import logs
from ..config import ConfigError, load_config, unknown_env
from ..store.embedded import EmbeddedRedisError
from . import loops
from .app import create_app
from .keys import SERVICES

if TYPE_CHECKING:
    from ..config import Config

log = logging.getLogger("salesbot.server")
#: How long a thread keeps the interpreter while another waits for it (Python's default: 5 ms).
#: Big documents are checked and compiled in threads; at 5 ms each wake-up of the event loop
#: could wait that long behind them, and a PUT of 1,000 rules made messages 40–100 ms slow for
#: seconds (bench/automations.py, docs/automations-engine.md "Speed").
SWITCH_INTERVAL = 0.0005
#: The collector's thresholds (Python's default: 700, 10, 10). A turn allocates ~55 containers
#: (decoded state, events, replies) that die with it; at 700 the young generation was collected
#: every dozen turns, 27 µs of CPU per timer fire (bench/timers.py), 5 µs at 10,000. Everything
#: loaded at start-up is frozen out of the collections (below), so they stay a few ms at most.
GC_THRESHOLD = (10_000, 10, 10)
#: Seconds after the server listens before it loads the interpreter (which the first turn would
#: otherwise import) and freezes what is loaded out of the collector: neither holds up the
#: first answers (issue 14: startup).
SETTLE_AFTER = 1.0
#: What start-up leaves out (a request's first use would import it) and serving loads at
#: ``SETTLE_AFTER``, before requests need it: the interpreter with its templates, the request
#: models of ``POST /api/events``, babel's currency module (``bot/shop/prices.py`` imports it
#: inside its functions, for the first price), a bot's funnel (``/api/analytics/bots/…``). A module a
#: route needs only when called, imported inside it, goes here (docs/architecture.md, "Startup");
#: tests/server/test_startup_imports.py checks both.
PRELOAD = ("bot.engine.interpreter", "bot.server.event_models", "babel.numbers", "bot.runtime.funnel")


def serve(*, config_path: str | None, host: str | None, port: int | None, data_dir: str | None,
          role: str, out: TextIO) -> int:
    for line in unknown_env():
        sys.stderr.write(f"salesbot: warning: {line}\n")
    try:
        config = load_config(config_path, overrides={"host": host, "port": port, "data_dir": data_dir})
    except ConfigError as exc:
        sys.stderr.write(f"salesbot: {exc}\n")
        return 2
    logs.configure(config.log_level)
    try:
        factory = loops.loop_factory(config.event_loop)
    except ConfigError as exc:
        sys.stderr.write(f"salesbot: {exc}\n")
        return 2
    sys.setswitchinterval(SWITCH_INTERVAL)
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(_serve(config, role, out))


async def _serve(config: Config, role: str, out: TextIO) -> int:
    app = create_app(config, role=role)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=config.shutdown_grace)
    try:
        await runner.setup()
    except EmbeddedRedisError as exc:  # e.g. another server owns the data dir: one clear line
        sys.stderr.write(f"salesbot: {exc}\n")
        return 1
    except (RedisError, ValueError) as exc:
        if not config.redis_url or (isinstance(exc, ValueError) and "Redis URL" not in str(exc)):
            raise
        # An external Redis that cannot be reached (or a URL redis-py cannot read): one line naming
        # the setting. redis-py's messages name the host and port, never the URL's password.
        sys.stderr.write(f"salesbot: redis_url: {exc}\n")
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    site = None
    if role in ("all", "web"):
        site = web.TCPSite(runner, config.host, config.port)
        await site.start()
    services = app[SERVICES]
    settle = loop.call_later(SETTLE_AFTER, _settle)
    base = f"http://{config.host}:{config.port}"
    store = f"embedded Redis, data in {config.data_dir}/redis" if services.embedded else "Redis at the configured URL"
    lines = [f"salesbot is running ({role}, {loops.loop_name()} event loop)", f"  store:      {store}"]
    if site is not None:
        lines += [f"  live chat:  {base}/chat/demo",
                  f"  dashboard:  {base}/live",
                  f"  API:        {base}/api/bots  (Authorization: Bearer <token>)",
                  f"  health:     {base}/healthz"]
        if not config.admin_token:
            lines.append(f"  admin token: {services.auth.admin_token}")
    if services.loaded_flows:
        lines.append(f"  bots:       {', '.join(services.loaded_flows)}")
    if services.loaded_automations:
        view = f"  (pipeline view: {base}/live)" if site is not None else ""
        lines.append(f"  automations: {', '.join(services.loaded_automations)}{view}")
    out.write("\n".join(lines) + "\n")
    out.flush()
    code = await _until_stopped(stop, services.embedded.supervisor if services.embedded else None)
    settle.cancel()
    out.write("salesbot: shutting down (finishing in-flight work)\n")
    out.flush()
    await runner.cleanup()
    return code


def _settle() -> None:
    """``PRELOAD`` loaded before a request needs it; then everything loaded so far (code, flows,
    templates) lives as long as the process: kept out of the collector's generations, full
    collections stay short (tail latency)."""
    for name in PRELOAD:
        importlib.import_module(name)
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)
    gc.enable()  # off since start-up began (bot/cli.py)


async def _until_stopped(stop: asyncio.Event, supervisor: asyncio.Task[None] | None) -> int:
    """Until a signal (exit code 0) or the embedded Redis's supervision gives up (1)."""
    stopped = asyncio.ensure_future(stop.wait())
    waits: list[asyncio.Future[Any]] = [stopped]
    if supervisor is not None:
        waits.append(supervisor)
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if supervisor is not None and supervisor.done() and not supervisor.cancelled():
        exc = supervisor.exception()
        if exc is not None:
            log.error("store.embedded_gave_up", extra={"error": str(exc)})
            return 1
    return 0
