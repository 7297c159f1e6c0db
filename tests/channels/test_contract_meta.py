"""The channel contract suite run against WhatsApp, Instagram and Messenger and the fake Graph API.

Meta's Graph API gives no retry delay with its rate-limit errors (no ``Retry-After``), so
``reports_retry_after`` is off: the adapters still raise ``DeliveryTemporary`` (WhatsApp with
its own configured pause for 130429/131056)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

from bot.channels.base import RawRequest
from bot.channels.contract import ChannelContract, ContractContext, Sent, SentButton
from bot.config import AccountConfig

from .fakes.graph import (
    APP_SECRET,
    GraphError,
    GraphFake,
    dumps,
    fb_delivery,
    fb_dm,
    ig_dm,
    ig_read,
    instagram_account,
    messenger_account,
    sign,
    wa_button_reply,
    wa_image,
    wa_list_reply,
    wa_status,
    wa_text,
    whatsapp_account,
)

_KINDS = {"file": "document"}


class _MetaContract(ChannelContract):
    signature_headers = ("X-Hub-Signature-256",)
    reports_retry_after = False
    messaging = "instagram"

    @contextlib.asynccontextmanager
    async def upstream(self) -> AsyncIterator[GraphFake]:
        fake = GraphFake(messaging=self.messaging)
        await fake.start()
        fake.customer_wrote(self.chat_id)
        try:
            yield fake
        finally:
            await fake.close()

    def chat_meta(self, ctx: ContractContext) -> dict[str, str]:
        now = f"{time.time():.3f}"
        return {**super().chat_meta(ctx), "last_inbound_at": now, "reply_dm_at": now}

    def signed(self, ctx: ContractContext, body: bytes) -> RawRequest:
        return RawRequest("POST", self.webhook_url, {"Content-Type": "application/json",
                                                     "X-Hub-Signature-256": sign(APP_SECRET, body)}, body)

    def _signed(self, ctx: ContractContext, payload: Any) -> RawRequest:
        return self.signed(ctx, dumps(payload))

    # Instagram and Messenger share these.
    def sent(self, ctx: ContractContext) -> list[Sent]:
        out = []
        for call in ctx.upstream.sent:
            body = call.body
            msg = body["message"]
            att = msg.get("attachment")
            out.append(Sent(
                chat_id=str(body["recipient"].get("id")), text=msg.get("text", ""),
                buttons=[SentButton(q["title"], q["payload"]) for q in msg.get("quick_replies") or ()],
                attachments=[(_KINDS.get(att["type"], att["type"]), att["payload"]["url"])] if att else [],
                raw=body))
        return out

    def fail_next(self, ctx: ContractContext, kind: str, retry_after: float | None = None) -> None:
        if kind == "temporary":
            ctx.upstream.scripted.append(GraphError(613, "Calls to this api have exceeded the rate limit."))
        else:
            ctx.upstream.scripted.append(GraphError(551, "This person isn't available right now."))


class TestWhatsAppContract(_MetaContract):
    delivery_statuses = frozenset({"delivered", "read", "failed"})
    channel = "whatsapp"
    chat_id = "905321234567"

    def account_config(self, upstream: GraphFake) -> AccountConfig:
        return AccountConfig(**whatsapp_account(upstream.base_url))

    def sent(self, ctx: ContractContext) -> list[Sent]:
        out = []
        for call in ctx.upstream.sent:
            body = call.body
            kind = body["type"]
            sent = Sent(chat_id=body["to"], raw=body)
            if kind == "text":
                sent.text = body["text"]["body"]
            elif kind == "interactive":
                inter = body["interactive"]
                sent.text = inter["body"]["text"]
                if inter["type"] == "button":
                    sent.buttons = [SentButton(b["reply"]["title"], b["reply"]["id"])
                                    for b in inter["action"]["buttons"]]
                else:
                    sent.buttons = [SentButton(r["title"], r["id"])
                                    for s in inter["action"]["sections"] for r in s["rows"]]
            elif kind in ("image", "video", "audio", "document", "sticker"):
                sent.text = body[kind].get("caption", "")
                sent.attachments = [(kind, body[kind]["link"])]
            out.append(sent)
        return out

    def fail_next(self, ctx: ContractContext, kind: str, retry_after: float | None = None) -> None:
        if kind == "temporary":
            ctx.upstream.scripted.append(GraphError(130429, "(#130429) Rate limit hit"))
        else:
            ctx.upstream.scripted.append(GraphError(131026, "(#131026) Message Undeliverable"))

    def inbound_text(self, ctx: ContractContext, chat_id: str, text: str, message_id: str) -> RawRequest:
        return self._signed(ctx, wa_text(chat_id, text, mid=f"wamid.{message_id}"))

    def inbound_button(self, ctx: ContractContext, chat_id: str, button: SentButton, message_id: str) -> RawRequest:
        call = next(c for c in reversed(ctx.upstream.sent) if button.token in str(c.body))
        if call.body["interactive"]["type"] == "list":
            payload = wa_list_reply(chat_id, button.token, button.title, mid=f"wamid.{message_id}")
        else:
            payload = wa_button_reply(chat_id, button.token, button.title, mid=f"wamid.{message_id}")
        return self._signed(ctx, payload)

    def inbound_media(self, ctx: ContractContext, chat_id: str, message_id: str) -> RawRequest:
        return self._signed(ctx, wa_image(chat_id, "1003383421387256", caption="receipt", mid=f"wamid.{message_id}"))

    def inbound_status(self, ctx: ContractContext, platform_message_id: str, status: str) -> RawRequest | None:
        errors = [{"code": 131026, "title": "Message undeliverable"}] if status == "failed" else None
        return self._signed(ctx, wa_status(platform_message_id, self.chat_id, status, errors))


class TestInstagramContract(_MetaContract):
    delivery_statuses = frozenset({"read"})
    channel = "instagram"
    messaging = "instagram"

    def account_config(self, upstream: GraphFake) -> AccountConfig:
        return AccountConfig(**instagram_account(upstream.base_url))

    def inbound_text(self, ctx: ContractContext, chat_id: str, text: str, message_id: str) -> RawRequest:
        return self._signed(ctx, ig_dm(chat_id, text=text, mid=f"aWdf{message_id}"))

    def inbound_button(self, ctx: ContractContext, chat_id: str, button: SentButton, message_id: str) -> RawRequest:
        return self._signed(ctx, ig_dm(chat_id, text=button.title, quick_reply=button.token, mid=f"aWdf{message_id}"))

    def inbound_media(self, ctx: ContractContext, chat_id: str, message_id: str) -> RawRequest:
        return self._signed(ctx, ig_dm(chat_id, mid=f"aWdf{message_id}", attachments=[
            {"type": "image", "payload": {"url": "https://lookaside.fbsbx.com/ig_messaging_cdn/?asset_id=7"}}]))

    def inbound_status(self, ctx: ContractContext, platform_message_id: str, status: str) -> RawRequest | None:
        # Instagram reports reads (messaging_seen, naming the message); no deliveries or failures.
        return self._signed(ctx, ig_read(self.chat_id, platform_message_id)) if status == "read" else None


class TestMessengerContract(_MetaContract):
    delivery_statuses = frozenset({"delivered"})
    channel = "messenger"
    messaging = "messenger"

    def account_config(self, upstream: GraphFake) -> AccountConfig:
        return AccountConfig(**messenger_account(upstream.base_url))

    def inbound_text(self, ctx: ContractContext, chat_id: str, text: str, message_id: str) -> RawRequest:
        return self._signed(ctx, fb_dm(chat_id, text=text, mid=f"m_{message_id}"))

    def inbound_button(self, ctx: ContractContext, chat_id: str, button: SentButton, message_id: str) -> RawRequest:
        return self._signed(ctx, fb_dm(chat_id, text=button.title, quick_reply=button.token, mid=f"m_{message_id}"))

    def inbound_media(self, ctx: ContractContext, chat_id: str, message_id: str) -> RawRequest:
        return self._signed(ctx, fb_dm(chat_id, mid=f"m_{message_id}", attachments=[
            {"type": "image", "payload": {"url": "https://scontent.xx.fbcdn.net/v/photo.jpg"}}]))

    def inbound_status(self, ctx: ContractContext, platform_message_id: str, status: str) -> RawRequest | None:
        # Messenger's message_deliveries name the messages; reads carry only a watermark.
        return self._signed(ctx, fb_delivery(self.chat_id, [platform_message_id])) if status == "delivered" else None
