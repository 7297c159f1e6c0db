"""A third-party adapter found ONLY through the ``salesbot.channels`` entry point group.

A temporary distribution (``toy_channel-0.1.dist-info`` with ``entry_points.txt``, plus the
module) is put on ``sys.path``; ``ChannelRegistry()`` must find it, and the contract suite runs
against it through the registry, the way the server creates adapters.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import importlib
import json
import shutil
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bot.channels.base import RawRequest
from bot.channels.contract import ChannelContract, ContractContext, Sent, SentButton
from bot.channels.registry import ENTRY_POINT_GROUP, ChannelRegistry, UnknownChannel
from bot.config import AccountConfig

TOY_SOURCE = Path(__file__).parent / "toy" / "toy_channel.py"
SECRET = "toy-secret"


@pytest.fixture(scope="module", autouse=True)
def toy_distribution(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("site")
    shutil.copy(TOY_SOURCE, root / "toy_channel.py")
    info = root / "toy_channel-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-channel\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\ntoy = toy_channel:create\n")
    sys.path.insert(0, str(root))
    importlib.invalidate_caches()
    try:
        yield root
    finally:
        sys.path.remove(str(root))
        sys.modules.pop("toy_channel", None)
        importlib.invalidate_caches()


def test_the_registry_finds_the_toy_only_through_its_entry_point() -> None:
    assert "toy" in ChannelRegistry().names()
    assert "toy" not in ChannelRegistry(use_entry_points=False).names()
    with pytest.raises(UnknownChannel):
        ChannelRegistry(use_entry_points=False).factory("toy")
    assert ChannelRegistry().factory("toy").__module__ == "toy_channel"


class FakeToyPlatform:
    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.failures: list[tuple[int, dict[str, str]]] = []
        app = web.Application()
        app.router.add_post("/messages", self.messages)
        self.server = TestServer(app, host="127.0.0.1")

    async def messages(self, request: web.Request) -> web.Response:
        if self.failures:
            status, headers = self.failures.pop(0)
            return web.json_response({"error": status}, status=status, headers=headers)
        body = await request.json()
        self.received.append(body)
        return web.json_response({"id": f"toy-{len(self.received)}"})

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")


class TestToyContract(ChannelContract):
    delivery_statuses = frozenset({"delivered", "read", "failed"})
    channel = "toy"
    signature_headers = ("X-Toy-Signature",)

    @contextlib.asynccontextmanager
    async def upstream(self) -> AsyncIterator[FakeToyPlatform]:
        fake = FakeToyPlatform()
        await fake.server.start_server()
        try:
            yield fake
        finally:
            await fake.server.close()

    def account_config(self, upstream: FakeToyPlatform) -> AccountConfig:
        return AccountConfig(channel="toy", api_base_url=upstream.url, credentials={"secret": SECRET})

    def sent(self, ctx: ContractContext) -> list[Sent]:
        return [Sent(chat_id=m["chat"], text=m["text"],
                     buttons=[SentButton(b["title"], b["payload"]) for b in m["buttons"]],
                     attachments=[("image", m["image"])] if m.get("image") else [], raw=m)
                for m in ctx.upstream.received]

    def fail_next(self, ctx: ContractContext, kind: str, retry_after: float | None = None) -> None:
        if kind == "temporary":
            ctx.upstream.failures.append((429, {"Retry-After": str(retry_after)} if retry_after else {}))
        else:
            ctx.upstream.failures.append((403, {}))

    def signed(self, ctx: ContractContext, body: bytes) -> RawRequest:
        sig = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        return RawRequest("POST", self.webhook_url, {"Content-Type": "application/json", "X-Toy-Signature": sig}, body)

    def inbound_text(self, ctx: ContractContext, chat_id: str, text: str, message_id: str) -> RawRequest:
        return self.signed(ctx, json.dumps({"id": message_id, "chat": chat_id, "text": text}).encode())

    def inbound_button(self, ctx: ContractContext, chat_id: str, button: SentButton, message_id: str) -> RawRequest:
        return self.signed(ctx, json.dumps({"id": message_id, "chat": chat_id, "text": button.title,
                                            "payload": button.token}).encode())

    def inbound_media(self, ctx: ContractContext, chat_id: str, message_id: str) -> RawRequest:
        return self.signed(ctx, json.dumps({"id": message_id, "chat": chat_id,
                                            "image": "https://toy.example/i.jpg"}).encode())

    def inbound_status(self, ctx: ContractContext, platform_message_id: str, status: str) -> RawRequest | None:
        body = {"id": platform_message_id, "chat": self.chat_id, "status": status}
        if status == "failed":
            body["error"] = "unreachable"
        return self.signed(ctx, json.dumps(body).encode())
