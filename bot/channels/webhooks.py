"""``/webhooks/{channel}/{account}``: verify, parse, and hand each item to its conversation.

A request with a wrong or missing signature gets 401/403 and changes nothing; a signed but
unreadable one gets 400; both are logged without their content. Messages are delivered with
the platform's message id as the dedupe key, so a redelivered webhook is handled once.
Statuses of messages we sent are matched to their conversation through the platform message
id recorded when the outbox sent them: ``failed`` becomes a ``DeliveryFailed`` event,
``delivered``/``read`` are recorded on the transcript.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from ..engine import events as ev
from ..server.http import error
from ..server.keys import SERVICES
from ..store import codec
from ..store.keys import conversation_id
from .base import BadInput, Inbound, MalformedWebhook, RawRequest, WebhookRejected, clean_inbound

log = logging.getLogger("salesbot.channels.webhooks")
routes = web.RouteTableDef()

#: How long a sent message's platform id is remembered for its statuses.
PLATFORM_ID_TTL = 14 * 86400


def platform_id_key(account: str, platform_id: str) -> str:
    return f"sb:pmid:{{{account}}}:{platform_id}"


async def _raw(request: web.Request) -> RawRequest:
    services = request.app[SERVICES]
    public = services.config.public_url
    url = str(request.url)
    if public:  # behind a proxy the platform signed the public URL, not ours
        url = public.rstrip("/") + request.path_qs
    return RawRequest(request.method, url, dict(request.headers), await request.read(), dict(request.query))


def _adapter(request: web.Request) -> tuple[str, Any] | web.Response:
    services = request.app[SERVICES]
    channel, account = request.match_info["channel"], request.match_info["account"]
    acc = services.config.account(account)
    adapter = services.adapters.get(account)
    if acc is None or adapter is None or acc.channel != channel:
        return error(404, "not_found", "no such channel account")
    return account, adapter


@routes.get("/webhooks/{channel}/{account}")
async def handshake(request: web.Request) -> web.Response:
    found = _adapter(request)
    if isinstance(found, web.Response):
        return found
    _, adapter = found
    answer = adapter.handshake(await _raw(request))
    if answer is None:
        return error(405, "method_not_allowed", "this channel has no GET verification")
    status, text = answer
    return web.Response(status=status, text=text)


@routes.post("/webhooks/{channel}/{account}")
async def receive(request: web.Request) -> web.Response:
    found = _adapter(request)
    if isinstance(found, web.Response):
        return found
    account, adapter = found
    raw = await _raw(request)
    try:
        adapter.verify(raw)
    except WebhookRejected as exc:
        log.warning("webhook.rejected", extra={"channel": adapter.name, "account": account, "reason": str(exc)})
        return error(exc.status, "bad_signature", str(exc))
    try:
        items = adapter.parse(raw)
    except MalformedWebhook as exc:
        log.warning("webhook.malformed", extra={"channel": adapter.name, "account": account, "reason": str(exc)})
        return error(400, "malformed", str(exc))
    handled = await dispatch(request.app[SERVICES], account, adapter, items)
    reply = getattr(adapter, "webhook_reply", None)  # (content type, body): Twilio expects TwiML
    if reply is not None:
        return web.Response(text=reply[1], content_type=reply[0])
    return web.json_response({"ok": True, "items": handled})


async def dispatch(services: Any, account: str, adapter: Any, items: list[Inbound]) -> int:
    """Hand verified, parsed items to their conversations (webhooks and pollers alike); every
    platform string is cleaned first (``clean_inbound``), an item with a non-string field is
    skipped with one ``webhook.bad_item`` line. Returns how many items were handled."""
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
            await _status(services, account, adapter.name, item)
        else:
            await _message(services, account, adapter.name, item)
        await adapter.acknowledge(item)
    return handled


async def _message(services: Any, account: str, channel: str, item: Inbound) -> None:
    cid = conversation_id(channel, account, item.chat_id)
    meta = {"channel": channel, "account": account, "external_id": item.chat_id}
    if item.profile_name:
        meta["name"] = item.profile_name
    if item.phone:
        meta["phone"] = item.phone
    meta["last_inbound_at"] = f"{__import__('time').time():.3f}"
    for key, value in item.reply.items():
        meta[f"reply_{key}"] = str(value)
    event = ev.InboundMessage(
        text=item.text, payload=item.payload, message_id=item.dedupe_id,
        attachments=tuple(ev.Attachment(a.kind, a.url, a.name, a.mime) for a in item.attachments),
        kind="comment" if item.kind == "comment" else ("button" if item.payload else ("media" if item.attachments and not item.text else "text")),
        start_param=item.start_param, greeting=services.greeting_bot(account))
    dedupe = f"{channel}:{item.dedupe_id}" if item.dedupe_id else None
    await services.conversations.deliver(cid, event, dedupe_id=dedupe, meta=meta)


async def _status(services: Any, account: str, channel: str, item: Inbound) -> None:
    if not item.platform_message_id:
        return
    found = await services.redis.get(platform_id_key(account, item.platform_message_id))
    if not found:
        log.info("webhook.status_unknown_message", extra={"channel": channel, "status": item.status})
        return
    cid, _, ref = found.decode().partition("|")
    if item.status == "failed":
        await services.conversations.deliver(
            cid, ev.DeliveryFailed(ref, item.error or "failed"),
            dedupe_id=f"status:{channel}:{item.platform_message_id}:failed")
    else:
        if item.dedupe_id and not await services.redis.set(
                f"sb:status_seen:{{{account}}}:{channel}:{item.dedupe_id}", 1, nx=True, ex=PLATFORM_ID_TTL):
            return  # a redelivered status: recorded once
        entry = {"role": "system", "event": "delivery", "status": item.status, "ref": ref,
                 "text": f"message {item.status}", "at": __import__("time").time()}
        await services.store.append_log(cid, [codec.pack(entry)])
