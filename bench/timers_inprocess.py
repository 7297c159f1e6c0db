"""The timer bench's fires through a worker in this process, for counting instructions.

``bench/timers.py`` times a ``salesbot worker`` process; on a shared machine its CPU per fire
is noisy. This runs the same fires (copies of one conversation the real runtime left waiting
with a no-answer timer, each fire resuming its flow under the conversation's lock and saving)
through ``Worker.fire_timers`` in this process, so valgrind can count them. Run it twice with
different counts and divide the difference (start-up, the template conversation and the warm-up
cancel out)::

    valgrind --tool=callgrind --callgrind-out-file=/dev/null python bench/timers_inprocess.py 50 --no-check
    valgrind --tool=callgrind --callgrind-out-file=/dev/null python bench/timers_inprocess.py 450 --no-check
    # instructions per fire = (Collected of 450 - Collected of 50) / 400

``--no-check`` leaves out the read-back of every transcript at the end, whose work grows with the
fires too (about 176 k instructions a fire before the short transcripts moved into the metadata
hash, about 330 k after): counts without it measured the check along with the fires.

The conversations are written by a child process (not traced: valgrind follows no children), all
due already; the worker claims and fires them a round (``Worker.fire_timers``, up to 100) at a
time until none is left, then every transcript is checked for exactly one reminder, and the
CPU and Redis commands (``INFO commandstats``) per fire of that round are printed. The
collector is set up as ``salesbot worker`` sets it (``gc.freeze`` and its thresholds).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from timers import BENCH_FLOW, check, make_template, populate  # noqa: E402
from webhook_procs import Processes, workspace  # noqa: E402


async def write(redis_url: str, template_json: str, tag: str, n: int, shards: int) -> None:
    """The child process: ``n`` copies of the template, their timers due a minute ago."""
    from redis.asyncio import Redis

    raw = json.loads(template_json)
    template = (bytes.fromhex(raw["state"]), {bytes.fromhex(f): bytes.fromhex(v) for f, v in raw["meta"].items()},
                raw["member"], raw["at"])
    redis = Redis.from_url(redis_url)
    try:
        await populate(redis, template, tag, n, lead=-60.0, window=1.0, shards=shards)
    finally:
        await redis.aclose()


def written_by_child(redis_url: str, template_file: Path, tag: str, n: int, shards: int) -> None:
    subprocess.run([sys.executable, __file__, "--write", redis_url, str(template_file), tag, str(n), str(shards)],
                   check=True)


async def run(redis_url: str, tmp: Path, flows_dir: Path, fires: int, *, check_all: bool = True) -> None:
    from bot.config import load_config
    from bot.runtime.worker import Worker
    from bot.server.run import _settle as settle
    from bot.server.services import open_services

    state, meta, member, at = await make_template(redis_url, tmp, flows_dir)
    template_file = tmp / "template.json"
    template_file.write_text(json.dumps({"state": state.hex(), "meta": {f.hex(): v.hex() for f, v in meta.items()},
                                         "member": member, "at": at}))
    config = load_config(None, env={}, overrides={"redis_url": redis_url, "flows_dir": str(flows_dir),
                                                  "data_dir": str(tmp / "data"), "admin_token": "bench",
                                                  "log_level": "WARNING",
                                                  "automations_dir": str(tmp / "no-automations")})
    async with open_services(config, start_hub=False) as svc:
        worker = Worker(svc)
        settle()  # as the worker's process does: the collector's work per fire as in production
        for tag, n in (("tW", 20), ("tM", fires)):  # a warm-up round first, then the measured fires
            written_by_child(redis_url, template_file, tag, n, config.timer_shards)
            before = await _commands(svc.redis)
            started = time.process_time()
            while await worker.fire_timers():
                pass
            cpu = time.process_time() - started
            commands = await _commands(svc.redis) - before
        from timers import cid_of

        result = (await check(svc.redis, {cid_of("tM", i): 0.0 for i in range(fires)}) if check_all
                  else {"fired": fires, "lost": 0, "doubled": 0})
    checked = (f"{result['fired']} fired, {result['lost']} lost, {result['doubled']} doubled" if check_all
               else "not checked")
    print(f"{fires} fires: {checked}; "
          f"{cpu / max(1, fires) * 1e6:.0f} µs of CPU each, {commands / max(1, fires):.2f} Redis commands each")
    if result["fired"] != fires or result["doubled"]:
        raise SystemExit("not every timer fired exactly once")


async def _commands(redis: Any) -> int:
    """Commands Redis ran so far (``INFO commandstats``, scripts' inner calls included; not INFO)."""
    stats = await redis.info("commandstats")
    return sum(int(v["calls"]) for name, v in stats.items() if name != "cmdstat_info")


def main() -> None:
    if sys.argv[1:2] == ["--write"]:
        redis_url, template_file, tag, n, shards = sys.argv[2:7]
        asyncio.run(write(redis_url, Path(template_file).read_text(), tag, int(n), int(shards)))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("fires", type=int, nargs="?", default=450)
    parser.add_argument("--no-check", action="store_true",
                        help="skip reading every transcript back (its work grows with the fires: not for counts)")
    args = parser.parse_args()
    procs = Processes()
    with workspace(procs, "salesbot-timers-inproc-", BENCH_FLOW) as (tmp, flows_dir, redis_url):
        from bot import logs

        logs.configure("WARNING")
        asyncio.run(run(redis_url, tmp, flows_dir, args.fires, check_all=not args.no_check))


if __name__ == "__main__":
    main()
