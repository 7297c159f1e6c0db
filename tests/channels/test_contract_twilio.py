"""The channel contract suite run against Twilio WhatsApp (with and without Content API quick
replies) and Twilio SMS, each against the fake Twilio REST API."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlencode

import pytest

from bot.channels.base import RawRequest
from bot.channels.contract import ChannelContract, ContractContext, Sent, SentButton, button_entry
from bot.config import AccountConfig

from .fakes.twilio_api import FakeTwilio

ACCOUNT_SID = "AC" + "c0" * 16
AUTH_TOKEN = "contract-auth-token"
SENDER = "+15550001111"


def _options(n: int) -> str:
    return "|".join(f"Option {i}" for i in range(1, n + 1))


class _TwilioContract(ChannelContract):
    delivery_statuses = frozenset({"delivered", "read", "failed"})
    chat_id = "+15551234567"
    signature_headers = ("X-Twilio-Signature",)
    whatsapp = True
    settings: ClassVar[dict[str, Any]] = {}

    @contextlib.asynccontextmanager
    async def upstream(self) -> AsyncIterator[FakeTwilio]:
        async with FakeTwilio(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN) as fake:
            for n in (3, 10):  # the quick-reply contents some accounts map their buttons to
                fake.add_content(f"HX{n:032d}", [(f"Option {i}", f"opt_{i}") for i in range(1, n + 1)])
            yield fake

    def account_config(self, upstream: FakeTwilio) -> AccountConfig:
        return AccountConfig(channel=self.channel, api_base_url=upstream.url, settings=self.settings,
                             credentials={"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN,
                                          "from_number": SENDER})

    def _address(self, number: str) -> str:
        return f"whatsapp:{number}" if self.whatsapp else number

    def sent(self, ctx: ContractContext) -> list[Sent]:
        return [Sent(chat_id=m.number, text=m.text,
                     buttons=[SentButton(title, id_) for title, id_ in m.buttons],
                     attachments=[("media", url) for url in m.media_urls], raw=m)
                for m in ctx.upstream.sent]

    def fail_next(self, ctx: ContractContext, kind: str, retry_after: float | None = None) -> None:
        if kind == "temporary":
            ctx.upstream.fail_next(429, 20429, retry_after=retry_after)
        else:
            ctx.upstream.fail_next(400, 21610)

    def _request(self, ctx: ContractContext, params: list[tuple[str, str]]) -> RawRequest:
        return self.signed(ctx, urlencode(params).encode())

    def signed(self, ctx: ContractContext, body: bytes) -> RawRequest:
        params = parse_qsl(body.decode(), keep_blank_values=True)
        return RawRequest("POST", self.webhook_url, {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": ctx.upstream.sign(self.webhook_url, params)}, body)

    def inbound_text(self, ctx: ContractContext, chat_id: str, text: str, message_id: str) -> RawRequest:
        return self._request(ctx, ctx.upstream.inbound(to=self._address(SENDER), from_=self._address(chat_id),
                                                       body=text, sid=f"SM{message_id}"))

    def inbound_button(self, ctx: ContractContext, chat_id: str, button: SentButton, message_id: str) -> RawRequest:
        return self._request(ctx, ctx.upstream.inbound(to=self._address(SENDER), from_=self._address(chat_id),
                                                       button=(button.token, button.title), sid=f"SM{message_id}"))

    def inbound_media(self, ctx: ContractContext, chat_id: str, message_id: str) -> RawRequest:
        media = [(f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/MM1/Media/ME1", "image/jpeg")]
        return self._request(ctx, ctx.upstream.inbound(to=self._address(SENDER), from_=self._address(chat_id),
                                                       media=media, sid=f"MM{message_id}"))

    def inbound_status(self, ctx: ContractContext, platform_message_id: str, status: str) -> RawRequest | None:
        return self._request(ctx, ctx.upstream.status_params(
            platform_message_id, status, error_code="30008" if status == "failed" else None,
            to=self._address(self.chat_id), from_=self._address(SENDER)))


    @pytest.mark.asyncio
    async def test_long_text_is_split_at_the_channel_limit(self, channel_ctx: ContractContext) -> None:
        """The contract's version compares the words sent with the entry's text exactly, which
        a channel that shows buttons as a numbered menu (appended to the last part) cannot
        pass; this one checks the same and that the menu ends the last part."""
        limit = channel_ctx.caps.text_max
        paragraph = " ".join(f"word{i}" for i in range(60)) + "."
        text = "\n\n".join(f"{n}: {paragraph}" for n in range(max(3, (3 * limit) // len(paragraph) + 1)))
        sent = await self._send(channel_ctx, {**button_entry(2, text=text), "ref": "r:long"})
        assert len(sent) >= 2, "a text over the limit must be split"
        assert all(len(s.text) <= limit for s in sent), [len(s.text) for s in sent]
        menu = "\n\n1. Option 1\n2. Option 2"
        assert sent[-1].text.endswith(menu)
        joined = " ".join(s.text for s in sent)[: -len(menu)]
        assert joined.split() == text.split(), "the parts must carry the whole text, in order"


class TestTwilioWhatsAppContract(_TwilioContract):
    """WhatsApp with Content API quick replies for the 3- and 10-option button sets."""

    channel = "twilio"
    settings: ClassVar[dict[str, Any]] = {"content_sids": {_options(3): f"HX{3:032d}", _options(10): f"HX{10:032d}"}}


class TestTwilioWhatsAppNumberedContract(_TwilioContract):
    """WhatsApp without Content API mappings: every menu is numbered text."""

    channel = "twilio"


class TestTwilioSmsContract(_TwilioContract):
    channel = "sms"
    whatsapp = False
