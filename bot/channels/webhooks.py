"""Verified, parsed webhook items handed to their conversations (webhooks and pollers alike).

The HTTP route that verifies and parses a webhook is ``bot.server.channel_webhooks``; pollers
(Telegram's ``getUpdates``) call ``dispatch`` directly. Messages are delivered with the
platform's message id as the dedupe key, so a redelivered webhook is handled once. Statuses of
messages we sent are matched to their conversation through the platform message id recorded
when the outbox sent them (``bot.store.keys.platform_id_key``): ``failed`` becomes a
``DeliveryFailed`` event, ``delivered``/``read`` are recorded on the transcript.
"""

from __future__ import annotations

import logging
import time

from ..engine import events as ev
from ..store import codec, replies
from ..store.keys import PLATFORM_ID_TTL, conversation_id, platform_id_key
from .base import BadInput, ChannelAdapter, Inbound, clean_inbound
from .host import ChannelHost

log = logging.getLogger("salesbot.channels.webhooks")


async def dispatch(host: ChannelHost, account: str, adapter: ChannelAdapter, items: list[Inbound]) -> int:
    """Hand verified, parsed items to their conversations; every platform string is cleaned
    first (``clean_inbound``), an item with a non-string field is skipped with one
    ``webhook.bad_item`` line. Returns how many items were handled."""
    handled = 0
    for raw_item in items:
        try:
            item = clean_inbound(raw_item)
        except BadInput as exc:
            log.warning("webhook.bad_item", extra={"channel": adapter.name, "account": account,
                                                   "field": exc.field, "reason": exc.reason})
            continue
        handled += 1
        if item.kind == "status":
            await _status(host, account, adapter.name, item)
        elif not await _message(host, account, adapter.name, item):
            continue  # a redelivery: acknowledged when it first came (answerCallbackQuery once per click)
        await adapter.acknowledge(item)
    return handled


def _kind(item: Inbound) -> str:
    """The event kind a flow sees: a comment, a click, media alone, or text."""
    if item.kind == "comment":
        return "comment"
    if item.payload:
        return "button"
    return "media" if item.attachments and not item.text else "text"


async def _message(host: ChannelHost, account: str, channel: str, item: Inbound) -> bool:
    """Deliver a customer's message; False when its conversation had it already (a redelivery)."""
    cid = conversation_id(channel, account, item.chat_id)
    meta = {"channel": channel, "account": account, "external_id": item.chat_id}
    if item.profile_name:
        meta["name"] = item.profile_name
    if item.phone:
        meta["phone"] = item.phone
    meta["last_inbound_at"] = f"{time.time():.3f}"
    for key, value in item.reply.items():
        meta[f"reply_{key}"] = str(value)
    event = ev.InboundMessage(
        text=item.text, payload=item.payload, message_id=item.dedupe_id,
        attachments=tuple(ev.Attachment(a.kind, a.url, a.name, a.mime) for a in item.attachments),
        kind=_kind(item), start_param=item.start_param, greeting=host.greeting_bot(account))
    dedupe = f"{channel}:{item.dedupe_id}" if item.dedupe_id else None
    return not (await host.conversations.deliver(cid, event, dedupe_id=dedupe, meta=meta)).duplicate


async def _status(host: ChannelHost, account: str, channel: str, item: Inbound) -> None:
    if not item.platform_message_id:
        return
    found = await host.redis.get(platform_id_key(account, item.platform_message_id))
    if not found:
        log.info("webhook.status_unknown_message", extra={"channel": channel, "status": item.status})
        return
    cid, _, ref = replies.text(found).partition("|")
    if item.status == "failed":
        await host.conversations.deliver(
            cid, ev.DeliveryFailed(ref, item.error or "failed"),
            dedupe_id=f"status:{channel}:{item.platform_message_id}:failed")
    else:
        if item.dedupe_id and not await host.redis.set(
                f"sb:status_seen:{{{account}}}:{channel}:{item.dedupe_id}", 1, nx=True, ex=PLATFORM_ID_TTL):
            return  # a redelivered status: recorded once
        entry = {"role": "system", "event": "delivery", "status": item.status, "ref": ref,
                 "text": f"message {item.status}", "at": time.time()}
        await host.store.append_log(cid, [codec.pack_entry(entry)])
