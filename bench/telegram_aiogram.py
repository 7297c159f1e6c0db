"""Telegram side by side: salesbot against an aiogram 3 bot, the same three-step bot through the
Telegram webhook, both against one fake Bot API (this process) and the same Redis.

    python bench/telegram_aiogram.py            # 3 interleaved runs of 10 s per load
    python bench/telegram_aiogram.py --quick    # 1 run of 5 s per load

The fake Bot API answers ``sendMessage`` (and ``getMe``, ``setWebhook``, …) and counts what it
gets; the load is closed-loop: ``--chats`` chats in flight (64 and 4), each posts its next
update to the bot's webhook as soon as the fake has received the bot's reply to the previous
one. Latency is update posted → reply seen at the fake. The bots: ``salesbot serve`` (role
``all``, its Telegram account pointing at the fake, every rate limit lifted) and
``telegram_aiogram_bot.py`` (webhook mode, ``RedisStorage`` FSM, updates handled in the
background as aiogram does by default). Runs alternate between the two so both see the same
machine; every chat has had a warm-up cycle (its first message) before any measured run.
salesbot runs from the checkout this file is in (``PYTHONPATH``), whatever is installed.

Printed per load: updates/s, p50/p99 latency of each run and their spread, the throughput
ratio and the p50 difference; Redis commands and reads per update, counted by Redis (``INFO
stats``: scripts' inner calls included; a read is one batch of requests from one connection)
with the background rate of an idle window subtracted. salesbot's hot-path client batches the
commands of concurrent callers into one write, so its reads fall below its round trips under
load (3 per update, counted by tests/runtime/test_telegram_round_trips.py); and replies a chat
got twice in a row (the three steps never repeat one) are counted.

aiogram comes from the ``bench`` extra (``pip install -e .[bench]``); when it cannot live beside
our pydantic (aiogram 3.31 wants pydantic < 2.14), ``--aiogram-python`` (default:
``.bench-venv/bin/python`` when present) runs its side with another interpreter.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.webhook_procs import Processes, cpu_seconds, free_port, machine_cpu, run_with_processes

TOKEN = "424242:bench-token"
SECRET = "bench-secret-token-42"
HERE = Path(__file__).resolve().parent

#: The three-step bot in salesbot's flow format (aiogram's twin: telegram_aiogram_bot.py).
FLOW: dict[str, Any] = {
    "format": "salesbot.flow/1", "id": "three", "name": "Three steps", "start": "name",
    "steps": {
        "name": {"type": "message", "text": "What is your name?",
                 "buttons": [{"title": "Skip", "next": "city"}], "other_answer": "city"},
        "city": {"type": "message", "text": "Nice to meet you, {{ message.text }}. Which city?",
                 "buttons": [{"title": "Skip", "next": "done"}], "other_answer": "done"},
        "done": {"type": "message", "text": "Thanks, {{ message.text }} noted.",
                 "buttons": [{"title": "Skip", "next": "name"}], "other_answer": "name"},
    },
}

SALESBOT_TOML = """\
[limits]
enabled = false

[accounts.tg]
channel = "telegram"
greeting_bot = "three"
api_base_url = "{api}"
credentials = {{ token = "{token}", secret_token = "{secret}" }}
# every limit lifted, as for aiogram (the fake enforces none): rate = 0 is no account limit
# (no limiter call), chat_interval = 0 none per chat
settings = {{ mode = "webhook", chat_interval = 0.0, chat_burst = 1000000, rate = 0, burst = 1000000 }}
"""


# ============================================================== the fake Bot API
class FakeApi:
    """Answers the Bot API calls the two bots make; hands each reply to the chat waiting for it."""

    def __init__(self) -> None:
        self.waiting: dict[int, asyncio.Future[float]] = {}
        self.sent = 0
        self.unexpected = 0  # replies no chat was waiting for (a duplicate, a reply to nothing)
        self.unexpected_chats: list[tuple[int, str]] = []
        self.last: dict[int, str] = {}
        self.repeated: list[tuple[int, str]] = []  # a chat's reply sent twice in a row
        self.message_ids = itertools.count(1)
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        await self.runner.cleanup()

    async def handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        if request.content_type == "application/json":
            params: dict[str, Any] = await request.json()
        else:
            params = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        if method == "sendMessage":
            at = time.perf_counter()
            chat = int(params["chat_id"])
            self.sent += 1
            text = str(params.get("text", ""))
            if self.last.get(chat) == text:  # the three steps never repeat a reply: a second send
                self.repeated.append((chat, text[:40]))
            self.last[chat] = text
            future = self.waiting.pop(chat, None)
            if future is None or future.done():
                self.unexpected += 1
                self.unexpected_chats.append((chat, str(params.get("text", ""))[:40]))
            else:
                future.set_result(at)
            result = {"message_id": next(self.message_ids), "date": int(time.time()), "text": params.get("text", ""),
                      "chat": {"id": chat, "type": "private"},
                      "from": {"id": 424242, "is_bot": True, "first_name": "Bot"}}
            return web.json_response({"ok": True, "result": result})
        if method == "getMe":
            return web.json_response({"ok": True, "result": {"id": 424242, "is_bot": True, "first_name": "Bot",
                                                             "username": "bench_bot"}})
        return web.json_response({"ok": True, "result": True})


# ============================================================== the load
@dataclass
class Run:
    bot: str
    chats: int
    seconds: float
    updates: int = 0
    latencies: list[float] = field(default_factory=list)
    timeouts: int = 0
    commands: float = 0.0
    reads: float = 0.0
    cpu_ms: float = 0.0  # the bot process's CPU per update
    redis_cpu_ms: float = 0.0  # redis-server's CPU per update (both bots share it; one runs at a time)
    others: float = 0.0  # cores busy with everything but this bench (bots, Redis, load): the machine's load

    @property
    def rate(self) -> float:
        return self.updates / self.seconds

    def pct(self, q: float) -> float:
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000 if xs else float("nan")


class Driver:
    """Chats posting updates to a bot's webhook, each waiting for the reply before the next."""

    def __init__(self, fake: FakeApi, http: aiohttp.ClientSession) -> None:
        self.fake = fake
        self.http = http
        self.update_ids = itertools.count(1)

    async def say(self, url: str, chat: int, text: str, timeout: float = 10.0) -> float | None:
        """Post one update; the seconds until the fake saw the reply (None: no reply in time)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[float] = loop.create_future()
        self.fake.waiting[chat] = future
        uid = next(self.update_ids)
        update = {"update_id": uid, "message": {
            "message_id": uid, "date": int(time.time()), "text": text,
            "chat": {"id": chat, "type": "private", "first_name": "Ana"},
            "from": {"id": chat, "is_bot": False, "first_name": "Ana"}}}
        posted = time.perf_counter()
        async with self.http.post(url, data=json.dumps(update).encode(),
                                  headers={"Content-Type": "application/json",
                                           "X-Telegram-Bot-Api-Secret-Token": SECRET}) as resp:
            await resp.read()
            if resp.status != 200:
                raise RuntimeError(f"webhook answered {resp.status}")
        try:
            return await asyncio.wait_for(future, timeout) - posted
        except TimeoutError:
            self.fake.waiting.pop(chat, None)
            return None

    async def run(self, url: str, chats: list[int], seconds: float, run: Run | None) -> None:
        deadline = time.perf_counter() + seconds

        async def chat_loop(chat: int) -> None:
            n = 0
            while time.perf_counter() < deadline:
                n += 1
                took = await self.say(url, chat, f"m{n}")
                if run is None:
                    continue
                if took is None:
                    run.timeouts += 1
                else:
                    run.updates += 1
                    run.latencies.append(took)

        await asyncio.gather(*(chat_loop(c) for c in chats))


async def redis_counts(redis: Any) -> tuple[float, float]:
    info = await redis.info("stats")
    return float(info["total_commands_processed"]), float(info.get("total_reads_processed", 0))


# ============================================================== the processes
async def wait_http(http: aiohttp.ClientSession, url: str, proc: Any, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = (await asyncio.to_thread(log.read_text, errors="replace"))[-3000:]
            raise RuntimeError(f"{url} exited with {proc.returncode}:\n{tail}")
        with contextlib.suppress(aiohttp.ClientError):
            async with http.get(url) as resp:
                if resp.status == 200:
                    return
        await asyncio.sleep(0.1)
    tail = (await asyncio.to_thread(log.read_text, errors="replace"))[-3000:]
    raise RuntimeError(f"{url} not ready after {timeout:.0f} s:\n{tail}")


def aiogram_python(given: str | None) -> str:
    if given:
        return given
    if importlib.util.find_spec("aiogram") is not None:
        return sys.executable
    venv = HERE.parent / ".bench-venv" / "bin" / "python"
    if venv.exists():
        return str(venv)
    raise SystemExit("aiogram is not installed: pip install -e .[bench] (or give --aiogram-python)")


def prepare(tmp: Path, api: str) -> Path:
    """salesbot's flow folder and configuration in ``tmp``; returns the flow folder."""
    flows = tmp / "flows"
    flows.mkdir()
    (flows / "three.json").write_text(json.dumps(FLOW))
    (tmp / "salesbot.toml").write_text(SALESBOT_TOML.format(api=api, token=TOKEN, secret=SECRET))
    return flows


async def bench(procs: Processes, args: argparse.Namespace) -> dict[str, Any]:
    import redis.asyncio as aioredis

    from bot.store.embedded import EmbeddedRedis

    tmp = Path(tempfile.mkdtemp(prefix="sb-tg-bench-"))
    procs.redis = EmbeddedRedis(None, persist=False)
    redis_url = procs.redis.start()
    redis = aioredis.Redis.from_url(redis_url)
    fake = FakeApi()
    await fake.start()
    flows = await asyncio.to_thread(prepare, tmp, fake.url)
    sb_port, ag_port = free_port(), free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "SALESBOT_REDIS_URL": redis_url,
           "SALESBOT_ADMIN_TOKEN": "bench-" + os.urandom(8).hex(), "SALESBOT_FLOWS_DIR": str(flows),
           "SALESBOT_DATA_DIR": str(tmp / "data"), "SALESBOT_HOST": "127.0.0.1",
           "SALESBOT_AUTOMATIONS_DIR": str(tmp / "no-automations"),  # none: conversations only
           # the checkout this bench is in, not whichever salesbot is installed
           "PYTHONPATH": os.pathsep.join(p for p in (str(HERE.parent), os.environ.get("PYTHONPATH", "")) if p)}
    sb = procs.start("salesbot", [sys.executable, "-m", "bot.cli", "serve", "--role", "all", "--port", str(sb_port)],
                     env, tmp / "salesbot.log", cwd=tmp)
    ag = procs.start("aiogram", [aiogram_python(args.aiogram_python), str(HERE / "telegram_aiogram_bot.py"),
                                 str(ag_port), redis_url, fake.url, TOKEN, SECRET],
                     {**os.environ, "PYTHONUNBUFFERED": "1"}, tmp / "aiogram.log", cwd=tmp)
    pids = {"salesbot": sb.pid, "aiogram": ag.pid}
    redis_pid = procs.redis.process.pid if procs.redis.process is not None else None
    hooks = {"salesbot": f"http://127.0.0.1:{sb_port}/webhooks/telegram/tg",
             "aiogram": f"http://127.0.0.1:{ag_port}/webhook"}
    results: dict[str, Any] = {"runs": []}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        await wait_http(http, f"http://127.0.0.1:{sb_port}/healthz", sb, tmp / "salesbot.log")
        await wait_http(http, f"http://127.0.0.1:{ag_port}/healthz", ag, tmp / "aiogram.log")
        driver = Driver(fake, http)
        loads = sorted(set(args.chats), reverse=True)
        base = {"salesbot": 10_000_000, "aiogram": 20_000_000}
        chats = {(bot, n): [base[bot] + n * 1000 + i for i in range(n)] for bot in hooks for n in loads}
        warm = Run("warm-up", 0, 0.0)
        for (bot, _n), ids in chats.items():  # warm-up: every chat's first message and a little more
            await driver.run(hooks[bot], ids, 1.0, warm)
        results["warmup_timeouts"] = warm.timeouts
        c0, r0 = await redis_counts(redis)  # the background rate (timers, outbox, recovery polls)
        await asyncio.sleep(args.idle)
        c1, r1 = await redis_counts(redis)
        idle_c, idle_r = (c1 - c0) / args.idle, (r1 - r0) / args.idle
        results["idle_per_second"] = {"commands": idle_c, "reads": idle_r}
        for rep in range(args.runs):
            for n in loads:
                order = ["salesbot", "aiogram"] if rep % 2 == 0 else ["aiogram", "salesbot"]
                for bot in order:
                    run = Run(bot, n, args.seconds)
                    c0, r0 = await redis_counts(redis)
                    mine0 = [cpu_seconds(p) for p in (pids["salesbot"], pids["aiogram"], redis_pid or 0, os.getpid())]
                    busy0, _ = machine_cpu()
                    started = time.perf_counter()
                    await driver.run(hooks[bot], chats[(bot, n)], args.seconds, run)
                    run.seconds = time.perf_counter() - started
                    mine1 = [cpu_seconds(p) for p in (pids["salesbot"], pids["aiogram"], redis_pid or 0, os.getpid())]
                    busy1, _ = machine_cpu()
                    cpu0, cpu1 = mine0[0 if bot == "salesbot" else 1], mine1[0 if bot == "salesbot" else 1]
                    rcpu0, rcpu1 = mine0[2], mine1[2]
                    ours = sum(mine1) - sum(mine0)
                    run.others = max(0.0, busy1 - busy0 - ours) / run.seconds
                    c1, r1 = await redis_counts(redis)
                    per = max(1, run.updates)
                    run.cpu_ms, run.redis_cpu_ms = (cpu1 - cpu0) * 1000 / per, (rcpu1 - rcpu0) * 1000 / per
                    run.commands = (c1 - c0 - idle_c * run.seconds) / per
                    run.reads = (r1 - r0 - idle_r * run.seconds) / per
                    results["runs"].append(run)
                    print(f"  run {rep + 1} {bot:8} {n:3} in flight: {run.rate:7.1f} updates/s, p50 {run.pct(0.5):6.1f}"
                          f" ms, p99 {run.pct(0.99):6.1f} ms, {run.commands:5.1f} cmds, {run.reads:4.1f} reads/update,"
                          f" CPU {run.cpu_ms:4.2f} ms + Redis {run.redis_cpu_ms:4.2f} ms/update;"
                          f" other work on the machine {run.others:.1f} cores"
                          f"{f', {run.timeouts} TIMEOUTS' if run.timeouts else ''}", flush=True)
                    await asyncio.sleep(0.5)  # replies of the last updates drain
    results["unexpected_replies"] = fake.unexpected
    results["unexpected_by_bot"] = {bot: sum(1 for c, _ in fake.unexpected_chats if c // 10_000_000 == i)
                                    for i, bot in ((1, "salesbot"), (2, "aiogram"))}
    results["repeated"] = len(fake.repeated)
    if fake.repeated:
        print("replies sent twice in a row (chat, text):", fake.repeated[:20])
    if fake.unexpected_chats:
        print("replies nobody waited for (chat, text):", fake.unexpected_chats[:20])
    await redis.aclose()
    await fake.stop()
    return results


def spread(xs: list[float], fmt: str = "{:.1f}") -> str:
    med = statistics.median(xs)
    return f"{fmt.format(med)} ({fmt.format(min(xs))}–{fmt.format(max(xs))})" if len(xs) > 1 else fmt.format(med)


def _cpu(run: Run) -> float:
    """CPU per update of the bot and redis-server together (ms; never zero)."""
    return max(1e-6, run.cpu_ms + run.redis_cpu_ms)


def report(results: dict[str, Any], args: argparse.Namespace) -> None:
    runs: list[Run] = results["runs"]
    idle = results["idle_per_second"]
    print(f"\nTelegram webhook, 3-step bot, fake Bot API; {args.runs} run(s) of {args.seconds:g} s per load; "
          f"median (min–max). Background Redis load subtracted: {idle['commands']:.0f} cmds/s, "
          f"{idle['reads']:.0f} reads/s.")
    for n in sorted(set(args.chats), reverse=True):
        print(f"\n{n} chats in flight")
        by = {bot: [r for r in runs if r.bot == bot and r.chats == n] for bot in ("salesbot", "aiogram")}
        for bot, rs in by.items():
            print(f"  {bot:8}  {spread([r.rate for r in rs]):>24} updates/s   p50 {spread([r.pct(0.5) for r in rs])} ms"
                  f"   p99 {spread([r.pct(0.99) for r in rs])} ms   {spread([r.commands for r in rs])} Redis cmds,"
                  f" {spread([r.reads for r in rs])} Redis reads per update")
            print(f"  {'':8}  CPU per update: the bot {spread([r.cpu_ms for r in rs], '{:.2f}')} ms,"
                  f" redis-server {spread([r.redis_cpu_ms for r in rs], '{:.2f}')} ms")
        pairs = list(zip(by["salesbot"], by["aiogram"], strict=True))
        print(f"  throughput salesbot/aiogram: {spread([s.rate / a.rate for s, a in pairs], '{:.2f}')}x;"
              f"  p50 salesbot − aiogram: {spread([s.pct(0.5) - a.pct(0.5) for s, a in pairs], '{:+.1f}')} ms;"
              f"  CPU per update (bot + redis-server) aiogram/salesbot:"
              f" {spread([_cpu(a) / _cpu(s) for s, a in pairs], '{:.2f}')}x")
    others = [r.others for r in runs]
    print(f"\nthe machine's other work during the runs: {spread(others)} cores busy of {os.cpu_count()}")
    timeouts = sum(r.timeouts for r in runs) + results["warmup_timeouts"]
    print(f"\nreplies that came without an update waiting for them: {results['unexpected_replies']} "
          f"{results['unexpected_by_bot']}; the same reply twice in a row: {results['repeated']}; "
          f"updates without a reply in 10 s: {timeouts}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 run of 5 s per load")
    parser.add_argument("--runs", type=int, help="interleaved runs per load (default 3)")
    parser.add_argument("--seconds", type=float, help="seconds per run (default 10)")
    parser.add_argument("--chats", type=int, nargs="+", default=[64, 4], help="chats in flight (default 64 4)")
    parser.add_argument("--idle", type=float, default=3.0, help="seconds of the idle window (background load)")
    parser.add_argument("--aiogram-python", help="interpreter with aiogram (default: this one, else .bench-venv)")
    args = parser.parse_args()
    args.runs = args.runs or (1 if args.quick else 3)
    args.seconds = args.seconds or (5.0 if args.quick else 10.0)
    results = run_with_processes(lambda procs: bench(procs, args), "the bots and Redis")
    if results is not None:
        report(results, args)


if __name__ == "__main__":
    main()
