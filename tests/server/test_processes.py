"""Real processes: web and worker roles, a worker killed with SIGKILL, a restart of serve."""

from __future__ import annotations

import json
import shutil
import signal
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.procs import free_port, post_json, salesbot

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _history(base: str, session: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{base}/chat/demo/messages?session={session}&after=0", timeout=10) as r:
        return list(json.loads(r.read())["messages"])


def _flows(tmp: Path) -> Path:
    d = tmp / "flows"
    d.mkdir()
    shutil.copy(FIXTURES / "reminder.json", d / "reminder.json")
    return d


def _config(tmp: Path, flows: Path) -> Path:
    cfg = tmp / "salesbot.toml"
    cfg.write_text(f'flows_dir = "{flows}"\ntimer_poll_interval = 0.05\n\n'
                   '[accounts.demo]\nchannel = "livechat"\ngreeting_bot = "reminder"\n'
                   '\n[limits]\nenabled = false\n')  # 60 chats from one address in a second
    return cfg


def _wait_until(check: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.05)
    return check()


def _timers_left(client: Any) -> int:
    return sum(client.zcard(k) for k in client.scan_iter("sb:timers:*") if not k.endswith(b":tops"))


def test_killed_worker_loses_no_timer_and_fires_none_twice(tmp_path: Path, redis_url: str, redis: Any) -> None:
    import redis as sync_redis

    client = sync_redis.Redis.from_url(redis_url)
    flows = _flows(tmp_path)
    cfg = _config(tmp_path, flows)
    env = {"SALESBOT_REDIS_URL": redis_url, "SALESBOT_ADMIN_TOKEN": "t"}
    port = free_port()
    early = [f"early{i:04d}xxx" for i in range(30)]
    late = [f"late{i:04d}xxxx" for i in range(30)]
    with salesbot(["serve", "--role", "web", "--config", str(cfg)], tmp=tmp_path, env=env, name="web",
                  port=port) as web:
        with salesbot(["worker", "--config", str(cfg)], tmp=tmp_path, env=env, name="worker1") as worker:
            for s in early:  # 2 s no-answer timers
                assert post_json(f"{web.url}/chat/demo/messages",
                                 {"session": s, "text": "hi", "client_msg_id": f"{s}-1"}) == 202
            # The early reminders go out through worker 1 ...
            assert _wait_until(lambda: sum(len(_history(web.url, s)) >= 3 for s in early) >= 10, 30)
            for s in late:  # ... and these timers are still pending when it dies
                assert post_json(f"{web.url}/chat/demo/messages",
                                 {"session": s, "text": "hi", "client_msg_id": f"{s}-1"}) == 202
            assert _timers_left(client) > 0
            worker.stop(signal.SIGKILL)
        with salesbot(["worker", "--config", str(cfg)], tmp=tmp_path, env=env, name="worker2"):
            every = early + late
            assert _wait_until(lambda: all(len(_history(web.url, s)) >= 3 for s in every), 60), "timers were lost"
            # Nothing is left that could fire later: no timer due or claimed, no queued event.
            assert _wait_until(lambda: _timers_left(client) == 0 and not list(client.scan_iter("sb:c:*:inbox")), 30)
            for s in early + late:
                texts = [m["text"] for m in _history(web.url, s)]
                assert texts == ["hi", "Hello! Anything I can help with?", "Just checking in: still there?"], (s, texts)
    client.close()


def test_restarted_serve_keeps_conversations_and_timers(tmp_path: Path) -> None:
    flows = _flows(tmp_path)
    cfg = _config(tmp_path, flows)
    data = tmp_path / "data"
    port = free_port()
    env = {"SALESBOT_ADMIN_TOKEN": "t"}  # no Redis URL: the embedded, persisted one
    session = "restartsession01"
    with salesbot(["serve", "--config", str(cfg), "--data-dir", str(data)], tmp=tmp_path, env=env,
                  name="serve1", port=port) as first:
        assert post_json(f"{first.url}/chat/demo/messages",
                         {"session": session, "text": "hi", "client_msg_id": "r1"}) == 202
        assert [m["text"] for m in _history(first.url, session)] == ["hi", "Hello! Anything I can help with?"]
        first.stop(signal.SIGTERM)  # before the 2 s timer falls due
    assert (data / "redis" / "salesbot.aof").exists() or any((data / "redis").rglob("*.aof*"))
    with salesbot(["serve", "--config", str(cfg), "--data-dir", str(data)], tmp=tmp_path, env=env,
                  name="serve2", port=port) as second:
        history = _wait_until(lambda: (h := _history(second.url, session)) and len(h) >= 3 and h, 30)
        assert [m["text"] for m in history] == ["hi", "Hello! Anything I can help with?",
                                                "Just checking in: still there?"]
