"""Our app (web role) on loopback against the fake: channel accounts that point at it, the
``running_app`` harness and the flows files it loads."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp.test_utils import TestServer

from tests.waiting import WorkerDriver

from .api import GraphFake
from .flows import ALL_FLOWS
from .meta import APP_SECRET, IG_ID, PAGE_ID, PHONE_NUMBER_ID, TOKEN, VERIFY_TOKEN, VERSION

if TYPE_CHECKING:
    from bot.runtime.worker import Worker
    from bot.server.services import Services


def whatsapp_account(base_url: str, greeting_bot: str = "shop", **settings: Any) -> dict[str, Any]:
    return {"channel": "whatsapp", "greeting_bot": greeting_bot, "api_base_url": base_url,
            "credentials": {"access_token": TOKEN, "app_secret": APP_SECRET, "verify_token": VERIFY_TOKEN,
                            "phone_number_id": PHONE_NUMBER_ID},
            "settings": {"api_version": VERSION, "chat_interval": 0, "rate": 1000, "burst": 1000, **settings}}


def instagram_account(base_url: str, greeting_bot: str = "shop", **settings: Any) -> dict[str, Any]:
    return {"channel": "instagram", "greeting_bot": greeting_bot, "api_base_url": base_url,
            "credentials": {"access_token": TOKEN, "app_secret": APP_SECRET, "verify_token": VERIFY_TOKEN,
                            "page_id": PAGE_ID, "ig_id": IG_ID},
            "settings": {"api_version": VERSION, "chat_interval": 0, "rate": 1000, "burst": 1000, **settings}}


def messenger_account(base_url: str, greeting_bot: str = "shop", **settings: Any) -> dict[str, Any]:
    return {"channel": "messenger", "greeting_bot": greeting_bot, "api_base_url": base_url,
            "credentials": {"access_token": TOKEN, "app_secret": APP_SECRET, "verify_token": VERIFY_TOKEN,
                            "page_id": PAGE_ID},
            "settings": {"api_version": VERSION, "chat_interval": 0, "rate": 1000, "burst": 1000, **settings}}


@dataclass
class Harness(WorkerDriver):
    """Our app (web role) on loopback with the worker loops driven by the test."""

    fake: GraphFake
    server: TestServer
    services: Services
    worker: Worker
    admin: str

    def url(self, channel: str, account: str) -> str:
        return str(self.server.make_url(f"/webhooks/{channel}/{account}"))

    async def webhook(self, channel: str, account: str, payload: Any, **kw: Any) -> tuple[int, Any]:
        return await self.fake.post_webhook(self.url(channel, account), payload, **kw)

    async def state(self, cid: str) -> Any:
        from bot.store import codec
        return codec.decode_state(await self.services.store.state(cid))

    async def transcript(self, cid: str) -> list[dict[str, Any]]:
        from bot.store import codec
        return [codec.unpack(b) for _, b in await self.services.store.read_log(cid, 0, 1000)]

    async def api(self, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        assert self.fake._session is not None
        async with self.fake._session.request(method, str(self.server.make_url(path)),
                                              headers={"Authorization": f"Bearer {self.admin}"}, **kw) as r:
            return r.status, await r.json()


@contextlib.asynccontextmanager
async def running_app(redis_url: str, fake: GraphFake, accounts: dict[str, Any], flows_dir: Path,
                      **config: Any) -> AsyncIterator[Harness]:
    from bot.config import load_config
    from bot.runtime.worker import Worker
    from bot.server.app import create_app
    from bot.server.keys import SERVICES
    from tests.server.conftest import NO_AUTOMATIONS  # the example's rules would act on every test's leads

    admin = "test-admin-token"
    cfg = load_config(env={}, overrides={"redis_url": redis_url, "flows_dir": str(flows_dir), "admin_token": admin,
                                         "timer_poll_interval": 0.05, "accounts": accounts,
                                         "automations_dir": str(NO_AUTOMATIONS), **config})
    app = create_app(cfg, role="web")
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        services = app[SERVICES]
        yield Harness(fake, server, services, Worker(services), admin)
    finally:
        await server.close()


def write_flow(directory: Path, flow: dict[str, Any]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{flow['id']}.json").write_text(json.dumps(flow, indent=1), encoding="utf-8")


def write_flows(directory: Path) -> Path:
    for flow in ALL_FLOWS:
        write_flow(directory, flow)
    return directory

