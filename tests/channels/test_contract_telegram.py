"""The channel contract suite run against the Telegram adapter and the fake Bot API server."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import AsyncIterator

from bot.channels.base import RawRequest
from bot.channels.contract import ChannelContract, ContractContext, Sent, SentButton
from bot.config import AccountConfig

from .fakes.telegram import FakeTelegram, callback_update, photo_update, text_update

TOKEN = "123456:contract-token"
SECRET = "contract-secret_token-1"
KINDS = {"sendPhoto": "image", "sendDocument": "document", "sendVideo": "video", "sendAudio": "audio",
         "sendVoice": "voice"}


def _update_id(message_id: str) -> int:
    return int(hashlib.sha1(message_id.encode()).hexdigest()[:8], 16)


class TestTelegramContract(ChannelContract):
    channel = "telegram"
    signature_headers = ("X-Telegram-Bot-Api-Secret-Token",)

    @contextlib.asynccontextmanager
    async def upstream(self) -> AsyncIterator[FakeTelegram]:
        async with FakeTelegram(enforce_limits=False) as fake:  # flood limits: see test_telegram.py
            fake.add_bot(TOKEN)
            yield fake

    def account_config(self, upstream: FakeTelegram) -> AccountConfig:
        return AccountConfig(channel="telegram", api_base_url=upstream.url,
                             credentials={"token": TOKEN, "secret_token": SECRET})

    def sent(self, ctx: ContractContext) -> list[Sent]:
        out = []
        for record in ctx.upstream.sent:
            buttons = [b for row in record.keyboard for b in row]
            out.append(Sent(
                chat_id=record.chat_id, text=record.text,
                buttons=[SentButton(b["text"], b["callback_data"]) for b in buttons if "callback_data" in b],
                links=[(b["text"], b["url"]) for b in buttons if "url" in b],
                attachments=[(KINDS[record.method], record.file or "")] if record.method in KINDS else [],
                raw=record))
        return out

    def fail_next(self, ctx: ContractContext, kind: str, retry_after: float | None = None) -> None:
        if kind == "temporary":
            ctx.upstream.fail_next(429, retry_after=int(retry_after or 1))
        else:
            ctx.upstream.fail_next(403)

    def signed(self, ctx: ContractContext, body: bytes) -> RawRequest:
        return RawRequest("POST", self.webhook_url, {"Content-Type": "application/json",
                                                     "X-Telegram-Bot-Api-Secret-Token": SECRET}, body)

    def inbound_text(self, ctx: ContractContext, chat_id: str, text: str, message_id: str) -> RawRequest:
        return self.signed(ctx, json.dumps(text_update(_update_id(message_id), int(chat_id), text)).encode())

    def inbound_button(self, ctx: ContractContext, chat_id: str, button: SentButton, message_id: str) -> RawRequest:
        record = next(r for r in reversed(ctx.upstream.sent)
                      if any(b.get("callback_data") == button.token for row in r.keyboard for b in row))
        update = callback_update(_update_id(message_id), int(chat_id), button.token, record)
        return self.signed(ctx, json.dumps(update).encode())

    def inbound_media(self, ctx: ContractContext, chat_id: str, message_id: str) -> RawRequest:
        return self.signed(ctx,
                           json.dumps(photo_update(_update_id(message_id), int(chat_id), caption="receipt")).encode())
