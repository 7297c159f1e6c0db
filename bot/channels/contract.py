"""The channel adapter contract: a pytest suite any adapter (built-in or third-party) can run.

Subclass ``ChannelContract`` in a test module (the class name must start with ``Test`` for
pytest to collect it), point it at a fake of the platform's API, and implement the hooks
below. Every ``test_*`` method then runs against your adapter, created through the
``ChannelRegistry`` exactly as the server creates it (so a third-party adapter registered only
through the ``salesbot.channels`` entry point group is found the same way)::

    import contextlib
    from bot.channels.contract import ChannelContract, ContractContext, Sent, SentButton
    from bot.config import AccountConfig

    class TestMyChannelContract(ChannelContract):
        channel = "mychannel"
        signature_headers = ("X-My-Signature",)

        @contextlib.asynccontextmanager
        async def upstream(self):
            async with MyFakePlatform() as fake:   # an aiohttp server on 127.0.0.1
                yield fake

        def account_config(self, upstream):
            return AccountConfig(channel="mychannel", api_base_url=upstream.url,
                                 credentials={"token": "t", "secret": "s"})

        def sent(self, ctx): ...                  # the fake's received sends, as ``Sent``
        def fail_next(self, ctx, kind, retry_after=None): ...
        def inbound_text(self, ctx, chat_id, text, message_id): ...
        def inbound_button(self, ctx, chat_id, button, message_id): ...

The tests need ``pytest-asyncio`` (any mode: they are marked explicitly).

Hooks (stable names; the required ones raise ``NotImplementedError``):

Class attributes
    ``channel`` (required): the registry name (``adapter.name`` must equal it).
    ``account``: the account name used for the adapter (``"contract"``).
    ``chat_id``: the platform's chat key used in inbound and outbound tests (``"4242"``).
    ``public_url``: passed to the factory (``"https://bot.example.com"``); ``webhook_url``
    is ``{public_url}/webhooks/{channel}/{account}``, the URL a platform would call.
    ``signature_headers``: the headers carrying the platform's signature/secret; the default
    ``unsigned``/``wrongly_signed`` hooks drop or garble them.
    ``reports_retry_after``: the platform gives a retry delay on rate limiting (True).
    ``returns_message_id``: ``send`` returns the platform's message id (True).
    ``rejection_statuses``: HTTP statuses ``WebhookRejected`` may carry ((401, 403)).

Setup
    ``upstream(self)`` (required): an async context manager running the platform's fake API
    on loopback; what it yields is ``ctx.upstream``.
    ``account_config(self, upstream) -> AccountConfig`` (required): the account whose
    ``api_base_url`` points at the fake.
    ``create_adapter(self, upstream, http) -> ChannelAdapter``: by default
    ``ChannelRegistry().create(channel, account=..., config=..., http=..., public_url=...)``.
    ``chat_meta(self, ctx) -> dict``: the conversation meta ``send`` receives (the outbox
    passes ``channel``, ``account``, ``external_id`` and the ``reply_*`` keys of the last
    inbound item); override to add what your channel needs (e.g. ``last_inbound_at``).

Outbound observation
    ``sent(self, ctx) -> list[Sent]`` (required): every message the fake received so far, in
    order, normalised to ``Sent`` (text or caption, clickable reply options as
    ``SentButton(title, token)`` where ``token`` is what the platform sends back on a click,
    link buttons, attachments).
    ``fail_next(self, ctx, kind, retry_after=None)`` (required): make the fake fail the next
    send: ``kind="temporary"`` (rate limited / 5xx; with ``retry_after`` seconds when given)
    or ``kind="rejected"`` (a permanent refusal: blocked, invalid recipient).

Inbound requests (each returns a ``RawRequest`` signed as the platform signs it)
    ``inbound_text(self, ctx, chat_id, text, message_id)`` (required).
    ``inbound_button(self, ctx, chat_id, button: SentButton, message_id)`` (required): the
    customer clicked a button/row/quick reply we sent (``button`` comes from ``sent``).
    ``inbound_media(self, ctx, chat_id, message_id)``: an image from the customer; the
    default raises ``NotImplementedError``; a subclass that does not override it has no media test.
    ``inbound_status(self, ctx, platform_message_id, status)``: a delivery status callback for
    each status in the class attribute ``delivery_statuses`` (``delivered`` / ``read`` /
    ``failed``); a platform without statuses leaves ``delivery_statuses`` empty.
    ``malformed(self, ctx) -> RawRequest``: correctly signed but unreadable; default
    ``signed(ctx, b"{not json")``.
    ``signed(self, ctx, body: bytes) -> RawRequest``: a request with this body and a valid
    signature; needed only by the default ``malformed``.
    ``unsigned(self, ctx, request)`` / ``wrongly_signed(self, ctx, request)``: variants of a
    valid request; defaults drop / garble the ``signature_headers``.

What the suite checks: signature rejection (missing, wrong), malformed bodies, normalisation
of text, button clicks and media, stable dedupe ids for a redelivered request, rendering of 3,
10 and 13 buttons, a list, link buttons, long text split at the channel's limit, attachments,
send failures mapped to ``DeliveryTemporary``/``DeliveryRejected``, and failure statuses; and
what the runtime trusts without checking (``contract_checks.py``): the types of parsed items
(as ``dispatch`` cleans them), of ``send``'s id, ``handshake``'s answer and ``default_limits``,
sync/async methods; signatures that are not ASCII, hostile bodies, an unreachable platform, and
the shared limiter of an adapter with ``use_limiter`` taken per call. A status ``inbound_status``
builds that ``delivery_statuses`` does not list fails, rather than go untested.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
import pytest

from ..config import AccountConfig
from ..store.outbox import DeliveryDeferred, DeliveryRejected, DeliveryTemporary
from ..store.ratelimit import SharesLimits
from .base import Capabilities, ChannelAdapter, Inbound, MalformedWebhook, RawRequest, WebhookRejected
from .contract_checks import (
    CountingLimiter,
    RefusingLimiter,
    check_adapter_methods,
    check_default_limits,
    check_handshake,
    check_items,
    check_platform_id,
)
from .registry import ChannelRegistry

try:
    import pytest_asyncio
except ImportError as exc:  # pragma: no cover - the suite is meant for pytest with pytest-asyncio
    raise ImportError("bot.channels.contract needs pytest-asyncio") from exc

__all__ = ["ChannelContract", "ContractContext", "Sent", "SentButton", "button_entry", "list_entry"]

_asyncio = pytest.mark.asyncio


@dataclass
class SentButton:
    """A clickable reply option as the platform shows it."""

    title: str
    token: str  # what the platform sends back when it is clicked (callback data, payload, row id)


@dataclass
class Sent:
    """One message the fake platform received, in channel-neutral terms."""

    chat_id: str
    text: str = ""  # the text or caption
    buttons: list[SentButton] = field(default_factory=list)  # reply buttons, quick replies, list rows
    links: list[tuple[str, str]] = field(default_factory=list)  # (title, url) link buttons
    attachments: list[tuple[str, str]] = field(default_factory=list)  # (kind, url)
    raw: Any = None


@dataclass
class ContractContext:
    adapter: ChannelAdapter
    upstream: Any
    http: aiohttp.ClientSession
    contract: ChannelContract

    @property
    def caps(self) -> Capabilities:
        return self.adapter.capabilities


def button_entry(n: int, *, text: str = "Pick one", prefix: str = "Option") -> dict[str, Any]:
    """A bot transcript entry with ``n`` reply buttons, numbered as the interpreter numbers them."""
    return {"role": "bot", "kind": "message", "ref": f"r:buttons{n}", "text": text,
            "buttons": [{"title": f"{prefix} {i}", "payload": f"opt_{i}", "url": None, "number": i}
                        for i in range(1, n + 1)]}


def list_entry(rows: int = 12) -> dict[str, Any]:
    """A bot transcript entry with a list of ``rows`` rows in two sections."""
    half = rows // 2
    return {"role": "bot", "kind": "list", "ref": "r:list", "text": "Choose an item",
            "list": {"button": "See items", "header": None, "footer": None,
                     "sections": [{"title": "First", "rows": [_row(i) for i in range(1, half + 1)]},
                                  {"title": "Second", "rows": [_row(i) for i in range(half + 1, rows + 1)]}]}}


def _row(i: int) -> dict[str, Any]:
    return {"id": f"row_{i}", "title": f"Item {i}", "description": f"About item {i}", "number": i}


def _words(text: str) -> list[str]:
    return text.split()


def _title_matches(shown: str, title: str) -> bool:
    shown = shown.strip()
    if shown == title:
        return True
    stem = shown.rstrip("…").rstrip(".").strip()
    return bool(stem) and title.startswith(stem) and shown != stem


class ChannelContract:
    """Base class of the contract suite; see the module docstring for the hooks."""

    channel: str = ""
    account: str = "contract"
    chat_id: str = "4242"
    public_url: str = "https://bot.example.com"
    signature_headers: tuple[str, ...] = ()
    reports_retry_after: bool = True
    returns_message_id: bool = True
    rejection_statuses: tuple[int, ...] = (401, 403)
    #: The delivery statuses the platform reports (``inbound_status`` must build each one).
    delivery_statuses: frozenset[str] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # A check that does not apply to a platform is not collected (rather than skipped): CI
        # accepts no skips, and a platform without statuses has nothing to test there.
        super().__init_subclass__(**kwargs)
        applies = {"test_a_delivery_status_is_normalised": bool(cls.delivery_statuses),
                   "test_a_media_message_is_normalised": cls.inbound_media is not ChannelContract.inbound_media,
                   "test_a_signature_that_is_not_ascii_is_rejected": bool(cls.signature_headers)}
        for name, collected in applies.items():  # None: pytest collects nothing under that name
            setattr(cls, name, getattr(ChannelContract, name) if collected else None)

    def pytest_generate_tests(self, metafunc: Any) -> None:
        if metafunc.function.__name__ == "test_a_delivery_status_is_normalised":
            metafunc.parametrize("status", sorted(metafunc.cls.delivery_statuses))

    # ------------------------------------------------------------------ hooks: setup
    def upstream(self) -> contextlib.AbstractAsyncContextManager[Any]:
        raise NotImplementedError("upstream(): an async context manager running the platform's fake API")

    def account_config(self, upstream: Any) -> AccountConfig:
        raise NotImplementedError("account_config(upstream): the AccountConfig pointing at the fake")

    def create_adapter(self, upstream: Any, http: aiohttp.ClientSession) -> ChannelAdapter:
        return ChannelRegistry().create(self.channel, account=self.account, config=self.account_config(upstream),
                                        http=http, public_url=self.public_url)

    @property
    def webhook_url(self) -> str:
        return f"{self.public_url.rstrip('/')}/webhooks/{self.channel}/{self.account}"

    def chat_meta(self, ctx: ContractContext) -> dict[str, str]:
        return {"channel": self.channel, "account": self.account, "external_id": self.chat_id}

    # ------------------------------------------------------------------ hooks: outbound
    def sent(self, ctx: ContractContext) -> list[Sent]:
        raise NotImplementedError("sent(ctx): the messages the fake platform received, as Sent")

    def fail_next(self, ctx: ContractContext, kind: str, retry_after: float | None = None) -> None:
        raise NotImplementedError("fail_next(ctx, kind, retry_after): make the fake fail the next send")

    # ------------------------------------------------------------------ hooks: inbound
    def inbound_text(self, ctx: ContractContext, chat_id: str, text: str, message_id: str) -> RawRequest:
        raise NotImplementedError("inbound_text(ctx, chat_id, text, message_id)")

    def inbound_button(self, ctx: ContractContext, chat_id: str, button: SentButton, message_id: str) -> RawRequest:
        raise NotImplementedError("inbound_button(ctx, chat_id, button, message_id)")

    def inbound_media(self, ctx: ContractContext, chat_id: str, message_id: str) -> RawRequest:
        raise NotImplementedError

    def inbound_status(self, ctx: ContractContext, platform_message_id: str, status: str) -> RawRequest | None:
        return None

    def signed(self, ctx: ContractContext, body: bytes) -> RawRequest:
        raise NotImplementedError("signed(ctx, body): a validly signed request with this body")

    def malformed(self, ctx: ContractContext) -> RawRequest:
        return self.signed(ctx, b"{not json")

    def unsigned(self, ctx: ContractContext, request: RawRequest) -> RawRequest:
        drop = {h.lower() for h in self.signature_headers}
        return replace(request, headers={k: v for k, v in request.headers.items() if k.lower() not in drop})

    def wrongly_signed(self, ctx: ContractContext, request: RawRequest) -> RawRequest:
        names = {h.lower() for h in self.signature_headers}
        headers = {}
        for key, value in request.headers.items():
            if key.lower() in names:
                value = "".join("A" if c != "A" else "B" for c in value) or "wrong"
            headers[key] = value
        return replace(request, headers=headers)

    # ------------------------------------------------------------------ fixture and helpers
    @contextlib.asynccontextmanager
    async def context(self) -> AsyncIterator[ContractContext]:
        """The adapter, created through the registry, beside the platform's fake (the fixture)."""
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http, self.upstream() as up:
            adapter = self.create_adapter(up, http)
            try:
                yield ContractContext(adapter, up, http, self)
            finally:
                await adapter.close()

    @pytest_asyncio.fixture
    async def channel_ctx(self) -> AsyncIterator[ContractContext]:
        async with self.context() as ctx:
            yield ctx

    def _parse(self, ctx: ContractContext, request: RawRequest) -> list[Inbound]:
        ctx.adapter.verify(request)
        return check_items(ctx.adapter.parse(request))

    async def _send_entry(self, ctx: ContractContext, entry: dict[str, Any]) -> str | None:
        return check_platform_id(await ctx.adapter.send(self.account, self.chat_meta(ctx), entry))

    def _messages(self, items: list[Inbound]) -> list[Inbound]:
        return [i for i in items if i.kind in ("message", "comment")]

    async def _send(self, ctx: ContractContext, entry: dict[str, Any]) -> list[Sent]:
        before = len(self.sent(ctx))
        await self._send_entry(ctx, entry)
        out = self.sent(ctx)[before:]
        assert out, "send() reached the platform with no message"
        for s in out:
            assert str(s.chat_id) == str(self.chat_id), f"a message went to {s.chat_id!r}, not {self.chat_id!r}"
        return out

    async def _assert_reachable(self, ctx: ContractContext, sent: list[Sent],
                                options: list[tuple[str, str, int]]) -> None:
        """Every option (title, payload, number) is a clickable button that maps back to it, or
        a numbered line the customer can answer with its number."""
        buttons = [b for s in sent for b in s.buttons]
        text = "\n".join(s.text for s in sent)
        if buttons:
            assert len(buttons) == len(options), (
                f"{len(options)} options became {len(buttons)} buttons: {[b.title for b in buttons]}")
            for n, (button, (title, payload, number)) in enumerate(zip(buttons, options, strict=True), 1):
                assert _title_matches(button.title, title), f"button {n} shows {button.title!r}, not {title!r}"
                items = self._messages(self._parse(ctx, self.inbound_button(ctx, self.chat_id, button, f"click-{n}")))
                assert len(items) == 1, f"a click on {title!r} parsed to {items!r}"
                item = items[0]
                assert item.chat_id == self.chat_id
                by_number = item.payload is None and item.text.strip() in (str(number), title)
                assert item.payload == payload or by_number, (
                    f"a click on {title!r} came back as payload={item.payload!r} text={item.text!r}")
                await ctx.adapter.acknowledge(item)
        else:
            for title, _payload, number in options:
                assert re.search(rf"(?m)^\s*{number}[.)]\s*{re.escape(title)}", text), (
                    f"option {number} {title!r} is neither a button nor a numbered line in {text!r}")
            last = str(options[-1][2])
            numbered = self._messages(self._parse(ctx, self.inbound_text(ctx, self.chat_id, last, "numbered")))
            assert numbered and numbered[0].text.strip() == last

    # ------------------------------------------------------------------ the contract
    def test_adapter_shape(self) -> None:
        assert self.channel, "set ChannelContract.channel"
        assert self.channel in ChannelRegistry().names(), f"{self.channel!r} is not in the channel registry"

    @_asyncio
    async def test_adapter_is_a_channel_adapter(self, channel_ctx: ContractContext) -> None:
        adapter = channel_ctx.adapter
        assert isinstance(adapter, ChannelAdapter)
        assert adapter.name == self.channel
        assert isinstance(adapter.capabilities, Capabilities)
        assert adapter.capabilities.text_max > 0
        check_adapter_methods(adapter)
        check_default_limits(adapter)
        check_handshake(adapter.handshake(RawRequest("GET", self.webhook_url, {}, b"")))

    @_asyncio
    async def test_a_valid_signature_is_accepted(self, channel_ctx: ContractContext) -> None:
        channel_ctx.adapter.verify(self.inbound_text(channel_ctx, self.chat_id, "hello", "m-valid"))

    @_asyncio
    async def test_a_missing_signature_is_rejected(self, channel_ctx: ContractContext) -> None:
        request = self.unsigned(channel_ctx, self.inbound_text(channel_ctx, self.chat_id, "hello", "m-unsigned"))
        with pytest.raises(WebhookRejected) as caught:
            channel_ctx.adapter.verify(request)
        assert caught.value.status in self.rejection_statuses

    @_asyncio
    async def test_a_wrong_signature_is_rejected(self, channel_ctx: ContractContext) -> None:
        request = self.wrongly_signed(channel_ctx, self.inbound_text(channel_ctx, self.chat_id, "hello", "m-wrong"))
        with pytest.raises(WebhookRejected) as caught:
            channel_ctx.adapter.verify(request)
        assert caught.value.status in self.rejection_statuses

    @_asyncio
    async def test_a_malformed_body_is_malformed(self, channel_ctx: ContractContext) -> None:
        request = self.malformed(channel_ctx)
        channel_ctx.adapter.verify(request)  # signed correctly: only parsing fails
        with pytest.raises(MalformedWebhook):
            channel_ctx.adapter.parse(request)

    @_asyncio
    async def test_a_text_message_is_normalised(self, channel_ctx: ContractContext) -> None:
        request = self.inbound_text(channel_ctx, self.chat_id, "Hello there", "m-1")
        items = self._messages(self._parse(channel_ctx, request))
        assert len(items) == 1, items
        item = items[0]
        assert item.kind == "message"
        assert item.chat_id == self.chat_id
        assert item.text == "Hello there"
        assert item.payload is None
        assert item.dedupe_id, "a message needs the platform's id to dedupe redeliveries"
        await channel_ctx.adapter.acknowledge(item)

    @_asyncio
    async def test_a_redelivered_request_has_the_same_dedupe_id(self, channel_ctx: ContractContext) -> None:
        first = self._parse(channel_ctx, self.inbound_text(channel_ctx, self.chat_id, "again", "m-dup"))
        second = self._parse(channel_ctx, self.inbound_text(channel_ctx, self.chat_id, "again", "m-dup"))
        other = self._parse(channel_ctx, self.inbound_text(channel_ctx, self.chat_id, "again", "m-other"))
        ids = [i.dedupe_id for i in self._messages(first)]
        assert ids and all(ids)
        assert ids == [i.dedupe_id for i in self._messages(second)]
        assert not set(ids) & {i.dedupe_id for i in self._messages(other)}

    @_asyncio
    async def test_a_media_message_is_normalised(self, channel_ctx: ContractContext) -> None:
        request = self.inbound_media(channel_ctx, self.chat_id, "m-media")
        items = self._messages(self._parse(channel_ctx, request))
        assert len(items) == 1
        assert items[0].attachments, "the media became no attachment"
        assert items[0].attachments[0].kind in {"image", "video", "audio", "voice", "document", "sticker", "file"}
        assert items[0].dedupe_id

    @pytest.mark.parametrize("count", [3, 10, 13])
    @_asyncio
    async def test_buttons_render_and_map_back(self, channel_ctx: ContractContext, count: int) -> None:
        entry = button_entry(count)
        sent = await self._send(channel_ctx, entry)
        assert sent[-1].text.startswith("Pick one") or any(s.text.startswith("Pick one") for s in sent)
        if count <= channel_ctx.caps.max_buttons:
            assert sum(len(s.buttons) for s in sent) == count, "buttons within the channel's limit stay buttons"
        options = [(b["title"], b["payload"], b["number"]) for b in entry["buttons"]]
        await self._assert_reachable(channel_ctx, sent, options)

    @_asyncio
    async def test_a_list_renders_and_maps_back(self, channel_ctx: ContractContext) -> None:
        entry = list_entry(12)
        sent = await self._send(channel_ctx, entry)
        options = [(r["title"], r["id"], r["number"]) for s in entry["list"]["sections"] for r in s["rows"]]
        await self._assert_reachable(channel_ctx, sent, options)

    @_asyncio
    async def test_link_buttons_are_reachable(self, channel_ctx: ContractContext) -> None:
        entry = {"role": "bot", "kind": "message", "ref": "r:links", "text": "Read more",
                 "buttons": [{"title": "Yes", "payload": "yes", "url": None, "number": 1},
                             {"title": "Website", "payload": None, "url": "https://example.com/page", "number": None}]}
        sent = await self._send(channel_ctx, entry)
        links = [url for s in sent for _, url in s.links]
        text = "\n".join(s.text for s in sent)
        assert "https://example.com/page" in links or "https://example.com/page" in text
        await self._assert_reachable(channel_ctx, sent, [("Yes", "yes", 1)])

    @_asyncio
    async def test_long_text_is_split_at_the_channel_limit(self, channel_ctx: ContractContext) -> None:
        limit = channel_ctx.caps.text_max
        paragraph = " ".join(f"word{i}" for i in range(60)) + "."
        text = "\n\n".join(f"{n}: {paragraph}" for n in range(max(3, (3 * limit) // len(paragraph) + 1)))
        entry = {**button_entry(2, text=text), "ref": "r:long"}
        sent = await self._send(channel_ctx, entry)
        assert len(sent) >= 2, "a text over the limit must be split"
        assert all(len(s.text) <= limit for s in sent), [len(s.text) for s in sent]
        assert _words(" ".join(s.text for s in sent)) == _words(text), "the parts must carry the whole text, in order"
        assert all(not s.buttons for s in sent[:-1]), "buttons go with the last part"

    @_asyncio
    async def test_attachments_are_sent(self, channel_ctx: ContractContext) -> None:
        entry = {"role": "bot", "kind": "message", "ref": "r:media", "text": "Your documents",
                 "attachments": [{"kind": "image", "url": "https://example.com/photo.jpg", "name": "photo.jpg"},
                                 {"kind": "document", "url": "https://example.com/invoice.pdf", "name": "invoice.pdf"}]}
        sent = await self._send(channel_ctx, entry)
        urls = {url for s in sent for _, url in s.attachments}
        text = "\n".join(s.text for s in sent)
        for url in ("https://example.com/photo.jpg", "https://example.com/invoice.pdf"):
            assert url in urls or url in text, f"{url} was neither attached nor linked"
        assert "Your documents" in text

    @_asyncio
    async def test_send_returns_the_platform_message_id(self, channel_ctx: ContractContext) -> None:
        before = len(self.sent(channel_ctx))
        platform_id = await self._send_entry(channel_ctx, {"role": "bot", "text": "Hi", "ref": "r:id"})
        assert len(self.sent(channel_ctx)) > before, "send() returned but nothing reached the platform"
        if self.returns_message_id:
            assert platform_id, "send() returned no platform message id (set returns_message_id = False)"

    @_asyncio
    async def test_a_temporary_failure_is_delivery_temporary(self, channel_ctx: ContractContext) -> None:
        self.fail_next(channel_ctx, "temporary", retry_after=7)
        with pytest.raises(DeliveryTemporary) as caught:
            await self._send_entry(channel_ctx, {"role": "bot", "text": "Hi", "ref": "r:tmp"})
        if self.reports_retry_after:
            assert caught.value.retry_after is not None and abs(caught.value.retry_after - 7) < 1.5

    @_asyncio
    async def test_a_permanent_failure_is_delivery_rejected(self, channel_ctx: ContractContext) -> None:
        self.fail_next(channel_ctx, "rejected")
        with pytest.raises(DeliveryRejected):
            await self._send_entry(channel_ctx, {"role": "bot", "text": "Hi", "ref": "r:rej"})

    @_asyncio
    async def test_a_delivery_status_is_normalised(self, channel_ctx: ContractContext, status: str) -> None:
        request = self.inbound_status(channel_ctx, "pm-1", status)
        assert request is not None, f"delivery_statuses lists {status!r} but inbound_status builds none"
        items = [i for i in self._parse(channel_ctx, request) if i.kind == "status"]
        assert len(items) == 1, items
        assert items[0].platform_message_id == "pm-1"
        assert items[0].status == status
        if status == "failed":
            assert items[0].error or items[0].error_code, "a failure status carries the platform's reason"

    @_asyncio
    async def test_inbound_status_builds_only_declared_statuses(self, channel_ctx: ContractContext) -> None:
        # ``inbound_status`` alone tests nothing: the status test runs for ``delivery_statuses``.
        for status in ("delivered", "read", "failed"):
            if status not in self.delivery_statuses:
                assert self.inbound_status(channel_ctx, "pm-1", status) is None, (
                    f"inbound_status builds a {status!r} status but delivery_statuses does not list it, "
                    f"so no status is tested: set delivery_statuses = frozenset({{...}})")

    @_asyncio
    async def test_a_signature_that_is_not_ascii_is_rejected(self, channel_ctx: ContractContext) -> None:
        # aiohttp keeps a header's undecodable bytes as lone surrogates: str.encode and
        # hmac.compare_digest raise on them (a 500); ``bot.inputs.header_bytes`` does not.
        names = {h.lower() for h in self.signature_headers}
        request = self.inbound_text(channel_ctx, self.chat_id, "hello", "m-bytes")
        for odd in ("\udcff\udcfe", "signé"):
            headers = {k: (odd if k.lower() in names else v) for k, v in request.headers.items()}
            with pytest.raises(WebhookRejected) as caught:
                channel_ctx.adapter.verify(replace(request, headers=headers))
            assert caught.value.status in self.rejection_statuses

    @_asyncio
    async def test_a_hostile_body_is_malformed_not_an_error(self, channel_ctx: ContractContext) -> None:
        # Anything but ``MalformedWebhook`` escaping ``parse`` is a 500 to the platform (which then
        # retries it, or disables the webhook); ``bot.inputs.loads`` refuses these as BadJson.
        for body in (b"[" * 100_000, b"[]", b'"text"', b"null", b'{"id": NaN}', b"1e999999"):
            request = self.signed(channel_ctx, body)
            channel_ctx.adapter.verify(request)
            try:
                check_items(channel_ctx.adapter.parse(request))
            except MalformedWebhook:
                pass
            except Exception as exc:
                raise AssertionError(f"parse() raised {type(exc).__name__} on a signed body "
                                     f"{body[:20]!r}: only MalformedWebhook is a 400, the rest is a 500") from None

    @_asyncio
    async def test_an_unreachable_platform_is_delivery_temporary(self) -> None:
        # A refused connection or a timeout is the platform's outage, not the message's: an adapter
        # that lets aiohttp's error through is logged as outbox.unexpected_error on every retry.
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            async with self.upstream() as up:
                adapter = self.create_adapter(up, http)
            try:  # the fake has stopped: its port refuses connections
                ctx = ContractContext(adapter, up, http, self)
                with pytest.raises(DeliveryTemporary):
                    await self._send_entry(ctx, {"role": "bot", "text": "Hi", "ref": "r:down"})
            finally:
                await adapter.close()

    @_asyncio
    async def test_a_limit_sharing_adapter_takes_the_limit_per_call(self, channel_ctx: ContractContext) -> None:
        # An adapter with ``use_limiter`` is trusted with its account's rate: the outbox no longer
        # limits its sends. One that never asks the limiter sends without any limit at all.
        adapter = channel_ctx.adapter
        if not isinstance(adapter, SharesLimits):
            return  # the outbox limits each send of this adapter itself
        counting = CountingLimiter()
        adapter.use_limiter(counting)
        limit = channel_ctx.caps.text_max
        text = "\n\n".join(f"{n}: " + " ".join(f"w{i}" for i in range(60)) for n in range(3 * limit // 200 + 3))
        sent = await self._send(channel_ctx, {"role": "bot", "text": text, "ref": "r:paced"})
        assert len(counting.acquired) >= len(sent), (
            f"{len(sent)} API calls took {len(counting.acquired)} turns of the shared limiter: "
            f"use_limiter's limiter must be acquired before every call that sends")
        refusing = RefusingLimiter(wait=30.0)
        adapter.use_limiter(refusing)
        before = len(self.sent(channel_ctx))
        with pytest.raises(DeliveryDeferred) as caught:
            await self._send_entry(channel_ctx, {"role": "bot", "text": "Hi", "ref": "r:spent"})
        assert caught.value.retry_after is not None and caught.value.retry_after > 1, (
            "a spent limit is DeliveryDeferred with the limiter's wait as retry_after")
        assert len(self.sent(channel_ctx)) == before, "a send went out past a spent limit"
