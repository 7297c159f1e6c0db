"""The browser tier: a real ``salesbot serve`` process and a headless Chromium driven by Playwright.

The server runs every role (web + worker, so timers fire) against the session's test Redis, with a
copy of ``flows/demo.json`` whose no-answer reminder comes after 2 s instead of 2 min. Each test
gets a fresh browser context, so a fresh widget session (= a fresh conversation).

Without Chromium or Playwright the tier is skipped, unless ``SALESBOT_REQUIRE_ALL_TIERS=1`` (CI),
where it fails.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts" / "browser"
ADMIN_TOKEN = "browser-admin-token"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
#: Playwright's auto-waiting default; generous for a loaded 2-core CI machine.
EXPECT_TIMEOUT_MS = 10_000


def _unavailable(reason: str) -> None:
    if os.environ.get("SALESBOT_REQUIRE_ALL_TIERS") == "1":
        pytest.fail(f"browser tier required (SALESBOT_REQUIRE_ALL_TIERS=1) but {reason}", pytrace=False)
    pytest.skip(f"browser tier skipped: {reason}")


@pytest.fixture(scope="session")
def chromium_executable() -> str:
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} does not exist (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        _unavailable(f"the playwright package is not importable ({exc})")
    return str(CHROMIUM)


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def demo_flow_with_short_timer(flows_dir: Path) -> Path:
    """A copy of flows/demo.json whose greeting reminds after 2 s of silence (not 2 min)."""
    doc = json.loads((ROOT / "flows" / "demo.json").read_text(encoding="utf-8"))
    no_answer = doc["steps"]["hello"]["no_answer"]
    assert no_answer["after"] == "2m", "flows/demo.json changed: update the browser tests"
    no_answer["after"] = "2s"
    flows_dir.mkdir(parents=True, exist_ok=True)
    path = flows_dir / "demo.json"
    path.write_text(json.dumps(doc, ensure_ascii=False, indent=2), encoding="utf-8")
    return path


@dataclass
class Server:
    url: str
    admin_token: str
    log_path: Path
    popen: subprocess.Popen[bytes]

    def output(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def history(self, session: str, after: int = 0, wait: float = 0) -> list[dict[str, Any]]:
        """What the server holds for a widget session (through the public long-poll route)."""
        url = f"{self.url}/chat/demo/messages?after={after}&wait={wait}"
        request = urllib.request.Request(url, headers={"X-Salesbot-Session": session})
        with urllib.request.urlopen(request, timeout=wait + 10) as r:
            return list(json.loads(r.read())["messages"])


def _wait_healthy(popen: subprocess.Popen[bytes], url: str, log_path: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout  # a bound: a start takes ~15 s on a loaded 2-core machine
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            raise RuntimeError(f"salesbot serve exited with {popen.returncode}:\n"
                               + log_path.read_text(errors="replace"))
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)  # the interval between readiness probes (bounded by the deadline)
    raise RuntimeError("salesbot serve did not become healthy:\n" + log_path.read_text(errors="replace"))


def _flush(redis_url: str) -> None:
    import redis as sync_redis

    client = sync_redis.Redis.from_url(redis_url)
    try:
        client.flushdb()
    finally:
        client.close()


# Module scope: the server (a worker role among them) must be gone before other test modules use
# the same Redis, or it would fire their timers.
@pytest.fixture(scope="module")
def salesbot_server(chromium_executable: str, redis_url: str, artifacts: Path,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    _flush(redis_url)  # bots, conversations and timers of earlier tests must not leak in
    tmp = tmp_path_factory.mktemp("salesbot-browser")
    flows = tmp / "flows"
    demo_flow_with_short_timer(flows)
    port = _free_port()
    env = {
        **os.environ,
        "SALESBOT_REDIS_URL": redis_url,
        "SALESBOT_ADMIN_TOKEN": ADMIN_TOKEN,
        "SALESBOT_TIMER_POLL_INTERVAL": "0.05",
        "SALESBOT_FLOWS_DIR": str(flows),
        "PYTHONUNBUFFERED": "1",
        # The code of this checkout, not whichever one the virtualenv installed (cwd is elsewhere).
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
    }
    log_path = artifacts / "server.log"
    with open(log_path, "wb") as log:
        # cwd: the temporary folder, so no ./salesbot.toml of the developer's checkout is read.
        popen = subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
             "--role", "all", "--data-dir", str(tmp / "data")],
            env=env, cwd=tmp, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_healthy(popen, url, log_path)
            yield Server(url=url, admin_token=ADMIN_TOKEN, log_path=log_path, popen=popen)
        finally:
            if popen.poll() is None:
                popen.send_signal(signal.SIGTERM)
                try:
                    popen.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    popen.kill()
                    popen.wait()
            _flush(redis_url)  # nor ours into later tests


# Module scope too: while Playwright's sync API is started, its event loop counts as the running
# loop of the main thread, which breaks the asyncio tests of later modules.
@pytest.fixture(scope="module")
def browser(chromium_executable: str) -> Iterator[Any]:
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    pw = sync_playwright().start()
    try:
        b = pw.chromium.launch(executable_path=chromium_executable, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()
    finally:
        pw.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[_FAILED] = report.failed
    return report


_FAILED = pytest.StashKey[bool]()


@pytest.fixture
def page(browser: Any, salesbot_server: Server, artifacts: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A page in a fresh context (its own localStorage: a new chat session) on the test server.

    Uncaught JavaScript errors fail the test; a failing test leaves a screenshot behind.
    """
    context = browser.new_context(base_url=salesbot_server.url, viewport={"width": 420, "height": 760})
    context.set_default_timeout(EXPECT_TIMEOUT_MS)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.on("console", lambda msg: errors.append(f"console.{msg.type}: {msg.text}") if msg.type == "error" else None)
    try:
        yield pg
        if request.node.stash.get(_FAILED, False):
            pg.screenshot(path=str(artifacts / f"FAILED-{request.node.name}.png"), full_page=True)
        else:
            assert errors == [], f"JavaScript errors in the page: {errors}"
    finally:
        context.close()
