"""An account's rate limit holds across processes: three real worker processes send one
Telegram account's messages through the fake Bot API, which logs when each request arrived."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

from redis.asyncio import Redis

from bot.config import load_config
from bot.engine import events as ev
from bot.server.services import open_services
from bot.store.ratelimit import MARGIN
from tests.channels.fakes.telegram import FakeTelegram
from tests.procs import salesbot
from tests.server.conftest import NO_AUTOMATIONS

TOKEN = "654321:shared-limits"
SECRET = "shared-Limits-secret"
LIMIT = 5  # messages a second for the whole account
CHATS = 40  # one message each: only the account's limit applies
WORKERS = ("w1", "w2", "w3")
HELLO = {"format": "salesbot.flow/1", "id": "hello", "name": "One message", "start": "m",
         "steps": {"m": {"type": "message", "text": "Hello!", "next": "done"}, "done": {"type": "stop"}}}


def _account(url: str) -> dict[str, object]:
    return {"channel": "telegram", "greeting_bot": "hello", "api_base_url": url,
            "credentials": {"token": TOKEN, "secret_token": SECRET}, "settings": {"rate": LIMIT, "burst": 1}}


def _worker_config(tmp: Path, flows: Path, url: str, name: str) -> Path:
    """A worker's config: the same account, its calls marked with the worker's name (``/via/<name>``)."""
    cfg = tmp / f"{name}.toml"
    cfg.write_text(f'flows_dir = "{flows}"\ntimer_poll_interval = 0.05\n\n'
                   f'[accounts.tg]\n{_toml(_account(f"{url}/via/{name}"))}')
    return cfg


def _toml(table: dict[str, object]) -> str:
    flat = "".join(f"{k} = {json.dumps(v)}\n" for k, v in table.items() if not isinstance(v, dict))
    subs = "".join(f"\n[accounts.tg.{k}]\n" + "".join(f"{a} = {json.dumps(b)}\n" for a, b in v.items())
                   for k, v in table.items() if isinstance(v, dict))
    return flat + subs


def _busiest_second(times: list[float]) -> int:
    """The most arrivals in any window [t, t + 1 s) (windows starting at an arrival are enough)."""
    times = sorted(times)
    return max(sum(1 for u in times[i:] if u < t + 1.0) for i, t in enumerate(times))


async def test_three_workers_keep_one_accounts_limit_and_use_it_in_full(
        redis: Redis, redis_url: str, tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "hello.json").write_text(json.dumps(HELLO))
    env = {"SALESBOT_REDIS_URL": redis_url, "SALESBOT_ADMIN_TOKEN": "t"}
    # The fake refuses (429) a message beyond LIMIT in any second, as Telegram does beyond 30.
    async with FakeTelegram(bot_rate=LIMIT) as fake, contextlib.AsyncExitStack() as stack:
        fake.add_bot(TOKEN)
        procs = contextlib.ExitStack()
        stack.push_async_callback(asyncio.to_thread, procs.close)  # stopped (and waited for) off the event loop
        for name in WORKERS:  # started (and ready) before there is anything to send
            cfg = _worker_config(tmp_path, flows, fake.url, name)
            await asyncio.to_thread(procs.enter_context, salesbot(["worker", "--config", str(cfg)], tmp=tmp_path,
                                                                  env=env, name=name))
        config = load_config(env={}, overrides={"redis_url": redis_url, "flows_dir": str(flows), "admin_token": "t",
                                                "automations_dir": str(NO_AUTOMATIONS),
                                                "accounts": {"tg": _account(f"{fake.url}/via/test")}})
        async with open_services(config, start_hub=False) as svc:  # the turns run here; the workers send
            chats = [str(7000 + i) for i in range(CHATS)]
            for chat in chats:
                await svc.conversations.deliver(f"telegram:tg:{chat}", ev.InboundMessage(text="hi", greeting="hello"),
                                                meta={"channel": "telegram", "account": "tg", "external_id": chat})
            await fake.wait_for(lambda f: len(f.sent) >= CHATS, timeout=120)
        arrivals = sorted(a.at for a in fake.arrivals)
        by = {name: sum(1 for a in fake.arrivals if a.via == name) for name in (*WORKERS, "test")}
        span = arrivals[-1] - arrivals[0]
        ideal = (CHATS - 1) * (1 + MARGIN) / LIMIT
        print(f"\n{CHATS} messages at {LIMIT}/s from {by}: busiest second {_busiest_second(arrivals)}, "
              f"first to last {span:.2f}s (the limit in full: {ideal:.2f}s), 429s {fake.rate_limited}")
        assert sorted(s.chat_id for s in fake.sent) == chats  # each chat's message, once
        # Several processes sent (which one polls an entry first is chance: one may get none), so
        # what follows holds for a limit shared across processes.
        assert sum(by[name] >= 1 for name in WORKERS) >= 2, by
        # Never more than the limit: no second the platform sees holds more than LIMIT arrivals ...
        assert _busiest_second(arrivals) <= LIMIT
        assert fake.rate_limited == 0 and fake.retry_violations == 0
        # ... and the limit is used in full: not a third of it each (3x the ideal), with generous slack.
        assert span <= 1.5 * ideal + 3.0
