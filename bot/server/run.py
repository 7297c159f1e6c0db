"""``salesbot serve`` / ``salesbot worker``: start, print where things are, stop gracefully."""

from __future__ import annotations

import asyncio
import gc
import signal
import sys
from typing import TextIO

from aiohttp import web

from .. import logs
from ..config import ConfigError, load_config
from . import loops
from .app import create_app
from .keys import SERVICES


def serve(*, config_path: str | None, host: str | None, port: int | None, data_dir: str | None,
          role: str, out: TextIO) -> int:
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
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(_serve(config, role, out))


async def _serve(config: "object", role: str, out: TextIO) -> int:
    from ..config import Config

    assert isinstance(config, Config)
    app = create_app(config, role=role)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=config.shutdown_grace)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    site = None
    if role in ("all", "web"):
        site = web.TCPSite(runner, config.host, config.port)
        await site.start()
    services = app[SERVICES]
    # Everything loaded so far (code, flows, templates) lives as long as the process: keep it
    # out of the collector's generations, so full collections stay short (tail latency).
    gc.collect()
    gc.freeze()
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
    out.write("\n".join(lines) + "\n")
    out.flush()
    await stop.wait()
    out.write("salesbot: shutting down (finishing in-flight work)\n")
    out.flush()
    await runner.cleanup()
    return 0
