"""The embedded Redis of ``salesbot serve``, against real processes: it dies with the server,
is restarted when it dies alone, never runs twice on one data dir, keeps its files private and
requires a password; an outage of the store is answered 503 with a bounded log."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import socket
import stat
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis as redis_client

from bot.store.embedded import (
    EmbeddedRedis,
    EmbeddedRedisError,
    default_maxmemory,
    redis_server_binary,
)
from tests.procs import Proc, free_port, salesbot

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
HELLO = "Hello! Anything I can help with?"
T = TypeVar("T")


def _wait(check: Callable[[], T], timeout: float = 20.0, what: str = "") -> T:
    """Poll ``check`` until truthy (bounded); fails naming the wait."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)  # polling another process, bounded by the deadline


def _alive(pid: int) -> bool:
    """A running process (a zombie waiting for its reaper counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _request(method: str, url: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, str], Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return int(r.status), dict(r.headers), json.loads(r.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read() or b"null")


def _say(base: str, session: str, text: str) -> int:
    status, _, _ = _request("POST", f"{base}/chat/demo/messages", {"session": session, "text": text})
    return status


def _bot_texts(base: str, session: str) -> list[str]:
    _, _, body = _request("GET", f"{base}/chat/demo/messages?session={session}&after=0")
    return [m["text"] for m in body["messages"] if m["role"] == "bot"]


def _setup(tmp: Path) -> tuple[list[str], Path]:
    """``serve`` arguments with the reminder flow and a data dir (no Redis URL: embedded)."""
    flows = tmp / "flows"
    flows.mkdir()
    shutil.copy(FIXTURES / "reminder.json", flows / "reminder.json")
    cfg = tmp / "salesbot.toml"
    cfg.write_text(f'flows_dir = "{flows}"\ntimer_poll_interval = 0.05\n\n'
                   '[accounts.demo]\nchannel = "livechat"\ngreeting_bot = "reminder"\n')
    data = tmp / "data"
    return ["serve", "--config", str(cfg), "--data-dir", str(data)], data


ENV = {"SALESBOT_ADMIN_TOKEN": "t", "SALESBOT_REDIS_URL": ""}


def _redis_pid(data: Path) -> int:
    """The pid in the pid file (0 while there is none: between a death and the restart)."""
    try:
        return int((data / "redis" / "redis-server.pid").read_text().split()[0])
    except FileNotFoundError:
        return 0


def _redis_servers_in(redis_dir: Path) -> list[int]:
    """Live redis-server processes working in ``redis_dir`` (it chdirs to its --dir)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if "redis" in (entry / "comm").read_text() and \
                    os.path.realpath(entry / "cwd") == os.path.realpath(redis_dir) and _alive(int(entry.name)):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_kill_9_of_the_server_ends_its_redis_server(tmp_path: Path) -> None:
    args, data = _setup(tmp_path)
    port = free_port()
    with salesbot(args, tmp=tmp_path, env=ENV, name="first", port=port) as first:
        assert _say(first.url, "killedserver01", "hi") == 202
        _wait(lambda: HELLO in _bot_texts(first.url, "killedserver01"), what="the greeting")
        [redis_pid] = _redis_servers_in(data / "redis")
        first.stop(signal.SIGKILL)
    try:
        _wait(lambda: not _alive(redis_pid), 10, "the orphaned redis-server to end")
    except AssertionError:
        os.kill(redis_pid, signal.SIGTERM)  # leave no orphan behind a failed test
        raise
    # The next server starts its own (only one on the data dir) and finds the conversation.
    with salesbot(args, tmp=tmp_path, env=ENV, name="second", port=port) as second:
        assert _redis_pid(data) != redis_pid
        assert _redis_servers_in(data / "redis") == [_redis_pid(data)]
        assert HELLO in _bot_texts(second.url, "killedserver01")


def test_a_second_server_on_the_same_data_dir_refuses_to_start(tmp_path: Path) -> None:
    args, data = _setup(tmp_path)
    with salesbot(args, tmp=tmp_path, env=ENV, name="owner", port=free_port()) as owner:
        intruder = Proc(args + ["--port", str(free_port())], {**os.environ, **ENV}, None, tmp_path / "intruder.log")
        try:
            assert intruder.popen.wait(timeout=60) != 0  # a start takes ~15 s on a loaded machine
        finally:
            intruder.stop()
        out = intruder.output()
        assert f"another salesbot process is using the data dir {data}" in out, out
        assert "Traceback" not in out
        assert _redis_servers_in(data / "redis") == [_redis_pid(data)]
        assert _request("GET", owner.url + "/healthz")[0] == 200


def test_a_stale_redis_server_on_the_data_dir_is_stopped_first(tmp_path: Path) -> None:
    """A redis-server a killed server left behind (its pid in the pid file) would write the
    same append-only file as the new one: the new server stops it before starting."""
    args, data = _setup(tmp_path)
    redis_dir = data / "redis"
    redis_dir.mkdir(parents=True)
    stale_port = free_port()
    stale = subprocess.Popen([redis_server_binary(), "--port", str(stale_port), "--bind", "127.0.0.1",
                              "--dir", str(redis_dir), "--appendonly", "yes", "--appendfilename", "salesbot.aof"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(lambda: _redis_servers_in(redis_dir) == [stale.pid], 10, "the stale redis-server")
        (redis_dir / "redis-server.pid").write_text(f"{stale.pid} {stale_port}\n")
        with salesbot(args, tmp=tmp_path, env=ENV, name="serve", port=free_port()) as server:
            assert stale.poll() is not None, "the stale redis-server still runs"
            assert _redis_servers_in(redis_dir) == [_redis_pid(data)]
            assert f"store.embedded_stale_stopped pid={stale.pid}" in server.output()
    finally:
        if stale.poll() is None:
            stale.kill()
        stale.wait()


def test_a_killed_redis_server_is_restarted_and_chat_works_again(tmp_path: Path) -> None:
    args, data = _setup(tmp_path)
    with salesbot(args, tmp=tmp_path, env=ENV, name="serve", port=free_port()) as server:
        assert _say(server.url, "beforekill0001", "hi") == 202
        _wait(lambda: HELLO in _bot_texts(server.url, "beforekill0001"), what="the greeting")
        lines_before = len(server.output().splitlines())
        [old] = _redis_servers_in(data / "redis")
        os.kill(old, signal.SIGKILL)
        _wait(lambda: _redis_servers_in(data / "redis") not in ([], [old])
              and _request("GET", server.url + "/healthz")[0] == 200, 20, "the restarted redis-server")
        assert _redis_servers_in(data / "redis") == [_redis_pid(data)]
        assert not _alive(old)
        # The conversations and bots of before are still there (append-only file), new ones work.
        assert HELLO in _bot_texts(server.url, "beforekill0001")
        _wait(lambda: _say(server.url, "afterkill00001", "hi") == 202, 10, "the first message after")
        _wait(lambda: HELLO in _bot_texts(server.url, "afterkill00001"), what="a greeting after the restart")
        # the supervisor's lines reach the log file on their own schedule: wait for them, bounded
        def supervised() -> str:
            out = server.output()
            return out if "store.embedded_died" in out and "store.embedded_restarted" in out else ""
        out = _wait(supervised, 10, "the supervisor's log lines")
        new_lines = out.splitlines()[lines_before:]
        assert len(new_lines) < 40, "\n".join(new_lines)


def test_data_dir_is_private_and_redis_requires_the_password(tmp_path: Path) -> None:
    args, data = _setup(tmp_path)
    (data / "redis").mkdir(parents=True)
    os.chmod(data, 0o755)  # an existing, world-readable data dir of an older version
    os.chmod(data / "redis", 0o755)
    (data / "redis" / "salesbot.aof").write_bytes(b"")
    os.chmod(data / "redis" / "salesbot.aof", 0o644)
    with salesbot(args, tmp=tmp_path, env=ENV, name="serve", port=free_port()) as server:
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        assert stat.S_IMODE((data / "redis").stat().st_mode) == 0o700
        files = [p for p in data.rglob("*") if p.is_file()]
        assert {p.name for p in files} >= {"salesbot.lock", "salesbot.aof", "password", "redis-server.pid"}
        assert {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in files} == \
            {p.name: "0o600" for p in files}
        port = int((data / "redis" / "redis-server.pid").read_text().split()[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"PING\r\n")
            assert s.recv(100).startswith(b"-NOAUTH")
        password = (data / "redis" / "password").read_text().strip()
        assert len(password) >= 32
        with redis_client.Redis(port=port, password=password) as client:  # maxmemory, no eviction
            config = client.config_get("maxmemory*")
            assert config["maxmemory-policy"] == "noeviction"
            assert 0 < int(config["maxmemory"]) <= default_maxmemory()
        _request("GET", server.url + "/healthz")
        first_password = password
    # Reused on the next start; never printed or logged.
    with salesbot(args, tmp=tmp_path, env=ENV, name="serve2", port=free_port()) as server:
        assert (data / "redis" / "password").read_text().strip() == first_password
    for log in ("serve.log", "serve2.log"):
        assert first_password not in (tmp_path / log).read_text()


def test_a_store_outage_is_answered_503_with_a_bounded_log_then_work_resumes(tmp_path: Path) -> None:
    """An external Redis goes away for a while: /healthz and requests answer 503 (with
    Retry-After), the log gets a few lines, not a flood; once it is back the same server works."""
    store_dir = tmp_path / "store"
    store = EmbeddedRedis(store_dir)
    url = store.start()
    try:
        args, _ = _setup(tmp_path)
        with salesbot(args, tmp=tmp_path, env={**ENV, "SALESBOT_REDIS_URL": url}, name="serve",
                      port=free_port()) as server:
            assert _say(server.url, "beforeoutage01", "hi") == 202
            _wait(lambda: HELLO in _bot_texts(server.url, "beforeoutage01"), what="the greeting")
            size_before = len(server.output().encode())
            store.stop()
            _wait(lambda: _request("GET", server.url + "/healthz")[0] == 503, 10, "healthz 503")
            status, headers, body = _request("POST", f"{server.url}/chat/demo/messages",
                                             {"session": "duringoutage01", "text": "hi"})
            assert status == 503 and body["error"]["code"] == "store_unavailable", body
            assert int(headers["Retry-After"]) > 0
            down_since = time.monotonic()
            for _ in range(20):  # requests keep failing while it is down ...
                _request("POST", f"{server.url}/chat/demo/messages", {"session": "duringoutage01", "text": "hi"})
            _wait(lambda: time.monotonic() - down_since > 3, 5, "3 s of outage")
            logged = server.output().encode()[size_before:]
            # ... and the worker loops keep polling: a few lines per kind, no tracebacks.
            assert len(logged) < 8_000, logged.decode(errors="replace")
            assert b"Traceback" not in logged
            store = EmbeddedRedis(store_dir, port=store.port)
            assert store.start() == url
            _wait(lambda: _request("GET", server.url + "/healthz")[0] == 200, 10, "healthz 200 again")
            _wait(lambda: _say(server.url, "afteroutage001", "hi") == 202, 10, "a message accepted again")
            _wait(lambda: HELLO in _bot_texts(server.url, "afteroutage001"), what="the greeting after")
    finally:
        store.stop()


async def test_the_supervisor_gives_up_after_repeated_failed_restarts(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A redis-server that cannot come back (its port taken): the supervision task fails after
    a few attempts, and ``serve`` turns that into exit code 1 with one log line."""
    from bot.server.run import _until_stopped

    redis = EmbeddedRedis(tmp_path / "data")
    await redis.astart()
    blocker = socket.socket()
    try:
        task = redis.supervise(interval=0.05, max_restarts=2, backoff=0.01)
        assert redis.process is not None
        redis.process.kill()
        await asyncio.to_thread(redis.process.wait)
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        blocker.bind(("127.0.0.1", redis.port))
        blocker.listen()
        with caplog.at_level(logging.INFO, logger="salesbot"):
            code = await asyncio.wait_for(_until_stopped(asyncio.Event(), task), 30)
    finally:
        blocker.close()
        await redis.astop()
    assert code == 1
    assert isinstance(task.exception(), EmbeddedRedisError)
    assert "giving up" in str(task.exception())
    events = [r.getMessage() for r in caplog.records]
    assert events.count("store.embedded_gave_up") == 1
    assert events.count("store.embedded_restart_failed") == 2, events

