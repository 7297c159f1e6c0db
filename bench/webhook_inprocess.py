"""The webhook bench's traffic through the app in this process, for counting instructions.

A shared machine makes CPU times noisy; instruction counts are not. Run it twice under valgrind
with different message counts and divide the difference (startup and priming cancel out)::

    valgrind --tool=callgrind --callgrind-out-file=/dev/null python bench/webhook_inprocess.py 50
    valgrind --tool=callgrind --callgrind-out-file=/dev/null python bench/webhook_inprocess.py 250
    # instructions per message = (Collected of 250 - Collected of 50) / 200

The app runs in its ``web`` role (no timer, recovery or outbox polls, whose work would grow with
the wall time valgrind takes), log level INFO, with the bench's flow and one ``redis-server``
(not traced), no automations; the load generator (4 in flight) is counted too, the same for every
checkout. Once started, the collector is set up as ``salesbot serve`` sets it (``gc.freeze`` and
its thresholds): a full collection of the unfrozen heap would otherwise land in some runs and not
in others. ``--kind`` picks the mix (default), ``follow_up`` or ``first`` messages;
``--no-analytics`` runs the app without funnel counting (the cost of counting is the difference).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from webhook import BENCH_FLOW  # noqa: E402
from webhook_load import ACCOUNT, DUPLICATE_SHARE, FIRST_SHARE, Traffic, closed_loop  # noqa: E402
from webhook_procs import Processes, free_port, workspace  # noqa: E402


async def run(redis_url: str, flows_dir: Path, tmp: Path, messages: int, kind: str, analytics: bool = True) -> None:
    import aiohttp
    from aiohttp.test_utils import TestServer

    from bot.config import load_config
    from bot.server.app import create_app
    from bot.server.run import _settle as settle

    config = load_config(env={}, overrides={
        "redis_url": redis_url, "flows_dir": str(flows_dir), "data_dir": str(tmp / "data"),
        "admin_token": "bench-in-process", "host": "127.0.0.1", "log_level": "INFO", "limits": {"enabled": False},
        "analytics": analytics, "automations_dir": str(tmp / "no-automations")})
    server = TestServer(create_app(config, role="web"), host="127.0.0.1", port=free_port())
    await server.start_server()
    settle()  # as ``salesbot serve`` does: the collector's work per message as in production
    shares: dict[str, Any] = {"mix": (FIRST_SHARE, DUPLICATE_SHARE), "first": (1.0, 0.0), "follow_up": (0.0, 0.0)}
    first, duplicate = shares[kind]
    traffic = Traffic(200, seed=7, tag="inproc", first_share=first, duplicate_share=duplicate)
    url = f"http://127.0.0.1:{server.port}/chat/{ACCOUNT}/messages"
    try:
        async with aiohttp.ClientSession() as session:
            await closed_loop(session, url, iter([traffic.body(s) for s in traffic.sessions]), traffic, None, 4)
            bodies = [traffic.body() for _ in range(messages)]
            cpu = time.process_time()
            ok, errors, _ = await closed_loop(session, url, iter(bodies), traffic, None, 4)
            cpu = time.process_time() - cpu
    finally:
        await server.close()
    each = cpu / max(1, ok) * 1e6
    print(f"{kind}: {ok} messages, {errors} errors, {each:.0f} µs of CPU each (load generator included)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("messages", type=int, nargs="?", default=250)
    parser.add_argument("--kind", choices=("mix", "follow_up", "first"), default="mix")
    parser.add_argument("--no-analytics", action="store_true", help="without funnel counting (docs/analytics.md)")
    args = parser.parse_args()
    procs = Processes()
    with workspace(procs, "salesbot-inproc-", BENCH_FLOW) as (tmp, flows_dir, redis_url), \
            open(tmp / "server.log", "w") as log:
        from bot import logs

        logs.configure("INFO")
        for handler in logging.getLogger().handlers:  # the log lines are written, not shown
            if isinstance(handler, logging.StreamHandler):
                handler.setStream(log)
        asyncio.run(run(redis_url, flows_dir, tmp, args.messages, args.kind, not args.no_analytics))


if __name__ == "__main__":
    main()
