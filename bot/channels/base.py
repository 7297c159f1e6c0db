"""The channel adapter interface: one small Protocol per messaging platform.

An adapter has two halves:

* **inbound** — ``verify`` the platform's signature over the raw request, then ``parse`` it into
  normalised ``Inbound`` items (customer messages, delivery statuses);
* **outbound** — ``send`` one transcript entry, already shaped by ``render`` to what the
  channel can show (``Capabilities``), through the platform's API.

Adapters compose the vendor SDK (python-telegram-bot's ``Bot``, the ``twilio`` client) rather
than inherit from it, take their HTTP session and base URL from outside, and map the platform's
errors to ``DeliveryTemporary`` (retry, with ``retry_after``) or ``DeliveryRejected``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ..errors import SalesbotError
from ..inputs import BadInput, clean_optional, clean_text
from ..store.outbox import DeliveryDeferred, DeliveryRejected, DeliveryTemporary
from .host import ChannelHost

__all__ = [
    "CREDENTIALS_RETRY_AFTER", "BadInput", "Capabilities", "ChannelAdapter", "ChannelError", "DeliveryDeferred",
    "DeliveryRejected",
    "DeliveryTemporary", "Inbound", "InboundAttachment", "MalformedWebhook", "Poller", "PollingAdapter", "RawRequest",
    "WebhookRejected", "clean_inbound", "credentials_refused", "readable_items",
]

log = logging.getLogger("salesbot.channels")


def credentials_refused(detail: str) -> DeliveryTemporary:
    """The platform refused our credentials (a revoked or rotated token, a changed auth token):
    not the message's fault, and fixed by an operator, so every adapter retries it the same way
    (after ``CREDENTIALS_RETRY_AFTER``) rather than fail each reply for good meanwhile."""
    return DeliveryTemporary(detail, retry_after=CREDENTIALS_RETRY_AFTER)


#: The pause before a send whose credentials were refused is tried again (seconds).
CREDENTIALS_RETRY_AFTER = 60.0


class ChannelError(SalesbotError):
    """Something went wrong in a channel adapter."""


class WebhookRejected(ChannelError):
    """The request is not from the platform (bad or missing signature): 401 or 403."""

    def __init__(self, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.status = status


class MalformedWebhook(ChannelError):
    """The request is signed but cannot be read: 400."""


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a channel can show; the renderer degrades to numbered text beyond it."""

    max_buttons: int  # reply buttons in one message (0: none; numbered text instead)
    button_title_max: int
    payload_max_bytes: int = 256
    lists: bool = False  # a native list message (WhatsApp)
    max_list_rows: int = 0
    list_title_max: int = 24
    list_description_max: int = 72
    list_button_max: int = 20
    url_buttons: bool = False
    quick_replies: bool = False  # buttons vanish after a reply (Instagram, Messenger)
    text_max: int = 4096
    attachments: frozenset[str] = frozenset({"image", "video", "audio", "voice", "document"})
    templates: bool = False
    mixed_buttons: bool = True  # reply and URL buttons in one message


@dataclass(frozen=True, slots=True)
class InboundAttachment:
    kind: str
    url: str | None = None
    name: str | None = None
    mime: str | None = None
    platform_id: str | None = None


@dataclass(frozen=True, slots=True)
class Inbound:
    """One normalised item of a webhook.

    ``kind``: ``message`` (text/button/list/media from the customer), ``comment`` (a public
    comment that may start a conversation), or ``status`` (delivered/read/failed of a message
    we sent, identified by ``platform_message_id``).
    """

    kind: str
    chat_id: str  # the conversation's key on the platform (chat id, wa_id, phone, IGSID)
    dedupe_id: str | None = None  # the platform's message id (update_id, wamid, MessageSid, mid)
    sender_id: str | None = None
    profile_name: str | None = None
    phone: str | None = None
    text: str = ""
    payload: str | None = None
    attachments: tuple[InboundAttachment, ...] = ()
    start_param: str | None = None  # deep link / referral parameter
    status: str | None = None  # delivered | read | failed | sent
    platform_message_id: str | None = None
    error: str | None = None
    error_code: str | None = None
    reply: dict[str, Any] = field(default_factory=dict)  # platform data needed to answer (callback id, comment id)


@dataclass(frozen=True, slots=True)
class RawRequest:
    """A webhook request as the platform sent it: verification needs the exact bytes and URL."""

    method: str
    url: str  # the public URL the platform called (Twilio signs it)
    headers: Mapping[str, str]
    body: bytes
    query: Mapping[str, str] = field(default_factory=dict)


@runtime_checkable
class ChannelAdapter(Protocol):
    name: str
    capabilities: Capabilities

    def handshake(self, request: RawRequest) -> tuple[int, str] | None:
        """Answer a platform's GET verification (Meta's hub.challenge); None if not supported."""
        ...

    def verify(self, request: RawRequest) -> None:
        """Raise ``WebhookRejected`` unless the request carries the platform's valid signature."""
        ...

    def parse(self, request: RawRequest) -> list[Inbound]:
        """The normalised items of a verified request; ``MalformedWebhook`` if it cannot be read."""
        ...

    async def send(self, account: str, chat: Mapping[str, str], message: Mapping[str, Any]) -> str | None:
        """Deliver one transcript entry; return the platform message id of the last part sent."""
        ...

    async def acknowledge(self, item: Inbound) -> None:
        """Anything the platform needs after an inbound item (Telegram's answerCallbackQuery)."""
        ...

    async def close(self) -> None: ...


class Poller(Protocol):
    """Fetches a platform's updates itself (no webhook) and hands them to ``webhooks.dispatch``."""

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until ``stop`` is set; return soon after."""
        ...


@runtime_checkable
class PollingAdapter(Protocol):
    """An adapter that can poll (Telegram's ``getUpdates``): the worker runs its poller for the
    accounts with ``settings.mode = "polling"``."""

    def poller(self, host: ChannelHost) -> Poller: ...


# ---------------------------------------------------------------------------- inbound hygiene

#: (limit, single line) of each string field of an ``Inbound``; ``text`` keeps its line breaks.
_ID = _LINE = (256, True)
_INBOUND_FIELDS: dict[str, tuple[int, bool]] = {
    "dedupe_id": _ID, "sender_id": _ID, "profile_name": (100, True), "phone": (32, True),
    "text": (8192, False), "payload": (1024, False), "start_param": _LINE, "status": (32, True),
    "platform_message_id": _ID, "error": (512, True), "error_code": (32, True)}
_ATTACHMENT_FIELDS: dict[str, tuple[int, bool]] = {
    "kind": (32, True), "url": (2048, True), "name": _LINE, "mime": (128, True), "platform_id": _ID}


def clean_inbound(item: Inbound) -> Inbound:
    """``item`` with every platform-supplied string cleaned by ``bot.inputs.clean_text`` before
    it reaches conversation metadata (names, texts, ids); ``BadInput`` names a field that is not
    a string (the item is then skipped: a platform never sends that)."""
    chat_id = clean_text(item.chat_id, "chat_id", limit=256, line=True)
    if not chat_id:
        raise BadInput("chat_id", "is empty")
    changes: dict[str, Any] = {"chat_id": chat_id}
    for name, (limit, line) in _INBOUND_FIELDS.items():
        changes[name] = clean_optional(getattr(item, name), name, limit=limit, line=line)
    changes["text"] = changes["text"] or ""
    changes["attachments"] = tuple(_clean_attachment(att) for att in item.attachments)
    if not isinstance(item.reply, Mapping):
        raise BadInput("reply", "is not an object")
    changes["reply"] = {str(k): clean_text(v if isinstance(v, str) else str(v), f"reply {k}",
                                           limit=256, line=True)
                        for k, v in item.reply.items() if isinstance(v, (str, int, float))}
    if all(getattr(item, name) == value for name, value in changes.items()):
        return item  # already clean (the usual item): no copy
    return dataclasses.replace(item, **changes)


def _clean_attachment(att: InboundAttachment) -> InboundAttachment:
    f = {name: clean_optional(getattr(att, name), f"attachment {name}", limit=limit, line=line)
         for name, (limit, line) in _ATTACHMENT_FIELDS.items()}
    return InboundAttachment(f["kind"] or "document", f["url"], f["name"], f["mime"], f["platform_id"])


def readable_items(channel: str, parse: Callable[[], Iterable[Inbound]]) -> list[Inbound]:
    """The items ``parse`` yields; an item whose shape is not the platform's is skipped with one
    ``webhook.bad_item`` line. Meta disables a webhook that keeps failing, so one odd item in a
    signed batch must not turn the whole delivery into an error."""
    try:
        return list(parse())
    except (MalformedWebhook, AttributeError, KeyError, TypeError, ValueError, OverflowError) as exc:
        reason = str(exc) if isinstance(exc, MalformedWebhook) else type(exc).__name__  # no content
        log.warning("webhook.bad_item", extra={"channel": channel, "reason": reason[:200]})
        return []
