"""Kommo's requests-per-second limit holds across processes: three processes, each with its own
Kommo client on the shared limiter in Redis, fire requests at once at the fake Kommo, which
refuses (429) beyond the limit in any second and logs when each request arrived."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from redis.asyncio import Redis

from bot.store.ratelimit import MARGIN
from tests.crm_bridge.fakes.kommo import TOKEN, FakeKommo
from tests.procs import stop_process

RATE = 5  # the account's rate_limit
EACH = 12  # requests per process, all at once
PROCESSES = ("p1", "p2", "p3")
ROOT = str(Path(__file__).resolve().parents[2])

#: One process: a Kommo client (as ``build_backend`` makes it: on the Redis limiter) firing its
#: requests at once; ``via`` marks them in the fake's log.
CLIENT = """
import asyncio, sys
from redis.asyncio import Redis
from bot.store.ratelimit import RedisLimiter
from crm_bridge.kommo.client import KommoClient

async def main(url, redis_url, token, name, rate, each):
    redis = Redis.from_url(redis_url)
    client = KommoClient(url, token, rate=int(rate), limiter=RedisLimiter(redis))
    try:
        await asyncio.gather(*(client.get("/api/v4/account", [("via", name)]) for _ in range(int(each))))
    finally:
        await client.aclose()
        await redis.aclose()

asyncio.run(main(*sys.argv[1:]))
"""


def _start(name: str, url: str, redis_url: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen([sys.executable, "-c", CLIENT, url, redis_url, TOKEN, name, str(RATE), str(EACH)],
                                cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT}, stdout=out, stderr=subprocess.STDOUT)


def _busiest_second(times: list[float]) -> int:
    times = sorted(times)
    return max(sum(1 for u in times[i:] if u < t + 1.0) for i, t in enumerate(times))


async def test_three_processes_keep_one_kommo_accounts_limit_and_use_it_in_full(
        redis: Redis, redis_url: str, tmp_path: Path) -> None:
    async with FakeKommo(rate_limit=RATE) as fake:
        logs = [tmp_path / f"{name}.log" for name in PROCESSES]
        procs = [await asyncio.to_thread(_start, name, fake.url, redis_url, log)
                 for name, log in zip(PROCESSES, logs, strict=True)]
        try:
            codes = [await asyncio.to_thread(p.wait, 120) for p in procs]
        finally:
            for p in procs:
                await asyncio.to_thread(stop_process, p)
        assert codes == [0, 0, 0], [log.read_text(errors="replace") for log in logs]
    served = [r for r in fake.requests if r.path == "/api/v4/account"]
    arrivals = sorted(r.at for r in served)
    by = {name: sum(1 for r in served if r.query.get("via") == [name]) for name in PROCESSES}
    span = arrivals[-1] - arrivals[0]
    ideal = (len(arrivals) - 1) * (1 + MARGIN) / RATE
    print(f"\n{len(arrivals)} Kommo requests at {RATE}/s from {by}: busiest second {_busiest_second(arrivals)}, "
          f"first to last {span:.2f}s (the limit in full: {ideal:.2f}s), 429s {fake.rate_limited}")
    assert by == dict.fromkeys(PROCESSES, EACH)  # every request arrived once, none was refused and retried
    assert _busiest_second(arrivals) <= RATE and fake.rate_limited == 0  # never more than the limit ...
    assert span <= 1.5 * ideal + 3.0  # ... and the limit in full, not a third of it each
