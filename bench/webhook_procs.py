"""The webhook bench's child processes (started and always stopped) and the CPU they use, from
/proc: the server's, redis-server's, the load generator's and the rest of the machine's."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """Terminate, then kill after 15 s: a child never outlives the bench."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def workspace(procs: Processes, prefix: str, flow: Mapping[str, Any] | Path) -> Iterator[tuple[Path, Path, str]]:
    """``(tmp, flows_dir, redis_url)``: a temporary folder whose ``flows/demo.json`` is ``flow``
    (a document, or a file copied) and a fresh redis-server without persistence kept in
    ``procs.redis``; both are gone at the end, also on an error or Ctrl-C."""
    from bot.store.embedded import EmbeddedRedis

    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        flows_dir = tmp / "flows"
        flows_dir.mkdir()
        if isinstance(flow, Path):
            shutil.copy(flow, flows_dir / "demo.json")
        else:
            (flows_dir / "demo.json").write_text(json.dumps(flow, indent=2), encoding="utf-8")
        procs.redis = EmbeddedRedis(None, persist=False)
        yield tmp, flows_dir, procs.redis.start()
    finally:
        if procs.redis is not None:
            procs.redis.stop()
            procs.redis = None
        shutil.rmtree(tmp, ignore_errors=True)


class Processes:
    """Child processes started by the bench; ``stop_all`` terminates (then kills) each one."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.redis: Any = None  # EmbeddedRedis

    def start(self, name: str, args: list[str], env: dict[str, str], log: Path, cwd: Path) -> subprocess.Popen[bytes]:
        with open(log, "wb") as fh:
            proc = subprocess.Popen(args, env=env, stdout=fh, stderr=subprocess.STDOUT, cwd=cwd)
        self.procs.append((name, proc))
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        stop_process(proc)
        self.procs = [(n, p) for n, p in self.procs if p is not proc]

    def stop_all(self) -> None:
        for _, proc in list(self.procs):
            with contextlib.suppress(Exception):
                self.stop(proc)
        if self.redis is not None:
            with contextlib.suppress(Exception):
                self.redis.stop()
            self.redis = None


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat (zeros elsewhere)."""
    try:
        with open("/proc/stat") as fh:
            values = [int(v) for v in fh.readline().split()[1:9]]
    except (OSError, ValueError):
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    idle = values[3] + values[4]
    return (sum(values) - idle) / tick, sum(values) / tick


class CpuMeter:
    """CPU used by the server, by redis-server, by this process and by everything else."""

    def __init__(self, server_pid: int | None, redis_pid: int | None) -> None:
        self.pids = {"server": server_pid, "redis": redis_pid, "loadgen": os.getpid()}
        self.start = self._read()

    def _read(self) -> dict[str, float]:
        out = {name: cpu_seconds(pid) if pid else 0.0 for name, pid in self.pids.items()}
        out["busy"], out["total"] = machine_cpu()
        out["wall"] = time.monotonic()
        return out

    def stop(self) -> dict[str, float]:
        end = self._read()
        d = {k: end[k] - self.start[k] for k in end}
        d["others"] = max(0.0, d["busy"] - d["server"] - d["redis"] - d["loadgen"])
        return d


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (0.0 where /proc is not available)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def run_with_processes(run: Callable[[Processes], Coroutine[Any, Any, dict[str, Any]]],
                       what: str) -> dict[str, Any] | None:
    """``run`` with the bench's child processes, stopped whatever happens (SIGTERM and Ctrl-C too);
    None when interrupted (``what`` names what is being stopped)."""
    procs = Processes()

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        return asyncio.run(run(procs))
    except KeyboardInterrupt:
        sys.stderr.write(f"interrupted: stopping {what}\n")
        return None
    finally:
        procs.stop_all()
