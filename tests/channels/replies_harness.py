"""The Telegram side of the replies-at-once tests: a three-step bot (one reply per update) on
our app against the fake Bot API, every rate limit lifted."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestServer

from bot.config import load_config
from bot.server.app import create_app
from bot.server.keys import SERVICES
from bot.server.services import Services

from .fakes.telegram import FakeTelegram, text_update

TOKEN = "777001:replies-token"
SECRET = "replies-secret-token"
#: Three steps, one reply per update: name, city, thanks, and round again.
THREE = {
    "format": "salesbot.flow/1", "id": "three", "name": "Three steps", "start": "name",
    "steps": {
        "name": {"type": "message", "text": "What is your name?",
                 "buttons": [{"title": "Skip", "next": "city"}], "other_answer": "city"},
        "city": {"type": "message", "text": "Nice to meet you, {{ message.text }}. Which city?",
                 "buttons": [{"title": "Skip", "next": "done"}], "other_answer": "done"},
        "done": {"type": "message", "text": "Thanks, {{ message.text }} noted.",
                 "buttons": [{"title": "Skip", "next": "name"}], "other_answer": "name"},
    },
}
#: Limits lifted: ``rate = 0`` is no account limit (and no limiter call), ``chat_interval = 0`` none per chat.
NO_LIMITS = {"chat_interval": 0, "chat_burst": 1000, "rate": 0, "burst": 100000}


def expected(n: int, said: list[str]) -> list[str]:
    """The replies to ``said`` (the first message starts the flow)."""
    out = []
    for i, text in enumerate(said[:n]):
        step = i % 3
        out.append("What is your name?" if step == 0 else
                   f"Nice to meet you, {text}. Which city?" if step == 1 else f"Thanks, {text} noted.")
    return out


@contextlib.asynccontextmanager
async def telegram(redis_url: str, tmp_path: Path, fake: FakeTelegram, *, role: str,
                   settings: dict[str, Any] | None = None, **config: Any) -> AsyncIterator[Services]:
    flows = tmp_path / "flows"
    flows.mkdir(exist_ok=True)
    (flows / "three.json").write_text(json.dumps(THREE))
    cfg = load_config(env={}, overrides={
        "redis_url": redis_url, "flows_dir": str(flows), "admin_token": "t", "shutdown_grace": 5,
        "automations_dir": str(tmp_path / "no-automations"),
        "accounts": {"tg": {"channel": "telegram", "greeting_bot": "three", "api_base_url": fake.url,
                            "credentials": {"token": TOKEN, "secret_token": SECRET},
                            "settings": NO_LIMITS if settings is None else settings}},
        **config})
    server = TestServer(create_app(cfg, role=role), host="127.0.0.1")
    await server.start_server()
    fake.bots[TOKEN].webhook_url = str(server.make_url("/webhooks/telegram/tg"))
    fake.bots[TOKEN].webhook_secret = SECRET
    try:
        yield server.app[SERVICES]
    finally:
        await server.close()


async def say(fake: FakeTelegram, chat: int, text: str) -> None:
    assert await fake.send_update(TOKEN, text_update(fake.next_update_id(TOKEN), chat, text)) == 200


