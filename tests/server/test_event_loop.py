"""``salesbot serve`` on uvloop (used when installed) and on the standard loop: both serve."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from tests.procs import free_port, post_json, salesbot

FLOWS = Path(__file__).resolve().parents[2] / "flows"


def _bot_texts(base: str, session: str) -> list[str]:
    with urllib.request.urlopen(f"{base}/chat/demo/messages?session={session}&after=0&wait=5", timeout=10) as r:
        return [m["text"] for m in json.loads(r.read())["messages"] if m["role"] == "bot"]


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_serve_answers_on_either_event_loop(tmp_path: Path, redis_url: str, loop: str) -> None:
    env = {"SALESBOT_REDIS_URL": redis_url, "SALESBOT_ADMIN_TOKEN": "t" * 16, "SALESBOT_EVENT_LOOP": loop,
           "SALESBOT_FLOWS_DIR": str(FLOWS)}
    with salesbot(["serve"], tmp=tmp_path, env=env, name=f"serve-{loop}", port=free_port()) as proc:
        assert f"{loop} event loop" in proc.output()
        session = f"loop-{loop}-session"
        assert post_json(f"{proc.url}/chat/demo/messages",
                         {"session": session, "text": "hi", "client_msg_id": "l1"}) == 202
        assert _bot_texts(proc.url, session)  # the demo bot answered
