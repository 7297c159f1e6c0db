"""Visitor text that makes a regex backtrack does not stall the server's event loop."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis

from bot.engine.predicates import REGEX_TIMEOUT
from tests.server.conftest import make_config, running
from tests.waiting import wait_for

# A catastrophic pattern: "aaaa…!" makes it backtrack for its whole time limit (0.2 s of CPU).
CATASTROPHIC = {
    "format": "salesbot.flow/1", "id": "demo", "start": "check",
    "steps": {
        "check": {"type": "validation", "rules": [{"check": "regex", "pattern": "^(a|aa)+$"}],
                  "pass": "yes", "fail": "no"},
        "yes": {"type": "message", "text": "matched"},
        "no": {"type": "message", "text": "no match"},
    },
}
MESSAGES = 20


@pytest.fixture
async def server(redis: Redis, redis_url: str, tmp_path: Path) -> AsyncIterator[TestServer]:
    (tmp_path / "demo.json").write_text(json.dumps(CATASTROPHIC))
    async with running(make_config(redis_url, flows_dir=tmp_path)) as srv:
        yield srv


class HealthProbe(threading.Thread):
    """``GET /healthz`` every 50 ms from its own thread: it measures how long the server takes
    to answer even when the event loop it shares with the test is stalled."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            t0 = time.perf_counter()
            try:
                with urllib.request.urlopen(self.url, timeout=10) as r:
                    r.read()
            except OSError as exc:
                self.errors.append(repr(exc))
            self.latencies.append(time.perf_counter() - t0)
            self.stop.wait(0.05)


async def _answers(http: ClientSession, session: str) -> list[str]:
    body = await (await http.get("/chat/demo/messages", params={"session": session})).json()
    return [m["text"] for m in body["messages"] if m["role"] == "bot"]


async def test_health_answers_quickly_while_redos_messages_are_checked(
        server: TestServer, http: ClientSession) -> None:
    sessions = [f"redos-session-{i:02d}" for i in range(MESSAGES)]
    assert await _answers(http, "warm-up-session") == []  # the app is up and the flow loaded

    async def all_answered() -> bool:
        return all([await _answers(http, s) == ["no match"] for s in sessions])

    probe = HealthProbe(str(server.make_url("/healthz")))
    probe.start()
    try:
        sent = await asyncio.gather(*(
            http.post("/chat/demo/messages", json={"session": s, "text": "a" * 60 + "!"})
            for s in sessions))
        await wait_for(all_answered, timeout=60, interval=0.05, what="every ReDoS message answered")
    finally:
        probe.stop.set()
        await asyncio.to_thread(probe.join, 15)
    # 20 messages of 0.2 s CPU each were checked meanwhile; none held up a health check. Checked
    # on the loop they would hold it up for their sum (measured: 4-6 s, a single probe answered
    # that late); a busy CI machine alone delays a probe by up to ~0.5 s, so the bound is half the sum.
    stalled = MESSAGES * REGEX_TIMEOUT
    assert max(probe.latencies) < stalled / 2, sorted(probe.latencies)[-5:]
    assert probe.errors == [] and len(probe.latencies) >= 5
    assert [r.status for r in sent] == [202] * MESSAGES
