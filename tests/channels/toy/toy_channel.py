"""A toy third-party channel adapter, registered only through the ``salesbot.channels`` entry
point group (see ``tests/channels/test_toy_entry_point.py``).

Its "platform": webhooks are JSON ``{"id", "chat", "text"?, "payload"?, "image"?}`` signed with
``X-Toy-Signature: hex(HMAC-SHA256(secret, body))``; sends are ``POST {api_base_url}/messages``
with ``{"chat", "text", "buttons": [{"title", "payload"}], "image"?}``, answered
``{"id": ...}``, 429 (with ``Retry-After``) or 4xx.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

import aiohttp

from bot.channels.base import (
    Capabilities,
    DeliveryRejected,
    DeliveryTemporary,
    Inbound,
    InboundAttachment,
    MalformedWebhook,
    RawRequest,
    WebhookRejected,
)
from bot.channels.render import render
from bot.inputs import BadJson, header_bytes, loads


class ToyAdapter:
    name = "toy"
    capabilities = Capabilities(max_buttons=3, button_title_max=20, text_max=500,
                                attachments=frozenset({"image"}))

    def __init__(self, *, account: str, config: Any, http: aiohttp.ClientSession, public_url: str) -> None:
        self.account = account
        self.base = (config.api_base_url or "https://toy.invalid").rstrip("/")
        self.secret = config.credentials["secret"].get_secret_value().encode()
        self.http = http

    def handshake(self, request: RawRequest) -> None:
        return None

    def verify(self, request: RawRequest) -> None:
        given = {k.lower(): v for k, v in request.headers.items()}.get("x-toy-signature")
        if not given:
            raise WebhookRejected("missing signature", 401)
        expected = hmac.new(self.secret, request.body, hashlib.sha256).hexdigest()
        # header_bytes: None for a header aiohttp could not decode (str.encode would raise: a 500)
        if not hmac.compare_digest(header_bytes(given) or b"", expected.encode()):
            raise WebhookRejected("wrong signature", 403)

    def parse(self, request: RawRequest) -> list[Inbound]:
        try:
            data = loads(request.body)  # no NaN, no overflow, bounded depth: else BadJson
            chat, mid = str(data["chat"]), str(data["id"])
        except (BadJson, KeyError, TypeError) as exc:
            raise MalformedWebhook(f"not a toy message: {exc}") from exc
        if data.get("status"):
            return [Inbound("status", chat, status=data["status"], platform_message_id=mid,
                            error=data.get("error"))]
        attachments = (InboundAttachment("image", data["image"]),) if data.get("image") else ()
        return [Inbound("message", chat, dedupe_id=mid, text=data.get("text") or "",
                        payload=data.get("payload"), attachments=attachments)]

    async def send(self, account: str, chat: Mapping[str, str], message: Mapping[str, Any]) -> str | None:
        last = None
        for part in render(dict(message), self.capabilities):
            body: dict[str, Any] = {"chat": chat["external_id"], "text": part.text,
                                    "buttons": [{"title": b.title, "payload": b.payload} for b in part.buttons]}
            for a in part.attachments:
                body["image"] = a["url"]
            try:
                async with self.http.post(f"{self.base}/messages", json=body) as resp:
                    if resp.status == 429 or resp.status >= 500:
                        retry = resp.headers.get("Retry-After")
                        raise DeliveryTemporary(f"toy {resp.status}", retry_after=float(retry) if retry else None)
                    if resp.status >= 400:
                        raise DeliveryRejected(f"toy {resp.status}")
                    last = str((await resp.json())["id"])
            except (TimeoutError, aiohttp.ClientError) as exc:  # unreachable: the platform's outage
                raise DeliveryTemporary(f"toy unreachable: {type(exc).__name__}") from None
        return last

    async def acknowledge(self, item: Inbound) -> None:
        return None

    async def close(self) -> None:
        return None


def create(**kwargs: Any) -> ToyAdapter:
    return ToyAdapter(**kwargs)
