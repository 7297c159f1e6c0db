"""WhatsApp Business Cloud API (Meta Graph API).

Inbound: Meta's GET handshake and ``X-Hub-Signature-256`` (see ``meta.py``); ``messages``
changes of our phone number: text, interactive replies (``button_reply``, ``list_reply``; other
``interactive`` types, such as a Flows answer ``nfm_reply``, are ignored),
template quick-reply buttons (``button``), media (image, video, audio/voice, document,
sticker), location; ``statuses`` (sent, delivered, read, failed with its error code).
Events of other phone numbers of the same app are ignored.

Outbound (``POST /{version}/{phone_number_id}/messages``): text, up to 3 reply buttons, a list
message for 4–10 options, numbered text beyond (the renderer decides), media by link (one
captioned media message where it fits), templates.

The 24-hour customer-service window is decided here from the conversation's
``last_inbound_at`` (none: a conversation the bot opened, so outside): inside it the message is
sent as is; outside it a message whose step has a
``template`` is sent as that template, any other is ``DeliveryRejected`` (→ the step's
``failed`` branch) without calling the platform. A 131047 answer (the platform's own view of
the window) is handled the same way. Throughput (130429) and pair-rate (131056) errors are
``DeliveryTemporary`` with a ``retry_after``; the outbox paces the account with its ``rate``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from functools import partial
from typing import Any

import aiohttp

from ..config import AccountConfig
from ..store.ratelimit import SharedLimiter
from .base import (
    Capabilities,
    DeliveryRejected,
    DeliveryTemporary,
    Inbound,
    InboundAttachment,
    MalformedWebhook,
    RawRequest,
    credentials_refused,
    readable_items,
)
from .meta import (
    GRAPH_VERSION,
    WINDOW,
    GraphClient,
    GraphError,
    SentParts,
    answer_handshake,
    credentials,
    load_body,
    message_key,
    number,
    send_parts,
    verify_signature,
)
from .pacing import AccountPacing
from .render import Rendered, render, split_text

log = logging.getLogger("salesbot.channels.whatsapp")

CAPABILITIES = Capabilities(
    max_buttons=3, button_title_max=20, payload_max_bytes=256, lists=True, max_list_rows=10,
    list_title_max=24, list_description_max=72, list_button_max=20, text_max=4096, templates=True,
    attachments=frozenset({"image", "video", "audio", "voice", "document"}))

INTERACTIVE_BODY_MAX = 1024
CAPTION_MAX = 1024
HEADER_MAX = 60
FOOTER_MAX = 60

#: Errors worth retrying, and the pause before the retry when the platform gives none.
THROUGHPUT = 130429  # the number's messages-per-second limit
PAIR_RATE = 131056  # too many messages to one customer in a short time
REENGAGEMENT = 131047  # more than 24 hours since the customer's last message
#: The reason a step's ``failed`` branch sees when the window is closed and it has no template.
OUTSIDE_WINDOW = "outside_window"
_TEMPORARY = {1, 2, 4, 80007, THROUGHPUT, 131000, 131016, 131048, PAIR_RATE, 133004, 133005}

_MEDIA_KINDS = {"image": "image", "video": "video", "audio": "audio", "voice": "audio", "document": "document"}
_CAPTIONED = {"image", "video", "document"}
_INBOUND_MEDIA = ("image", "video", "audio", "document", "sticker")
#: The ``interactive`` answers a flow takes: a reply button or a list row we sent.
_INTERACTIVE_REPLIES = frozenset({"button_reply", "list_reply"})


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class WhatsAppAdapter:
    name = "whatsapp"
    capabilities = CAPABILITIES

    def __init__(self, *, account: str, config: AccountConfig, http: aiohttp.ClientSession,
                 public_url: str = "") -> None:
        self.account = account
        creds = credentials(config)
        settings = config.settings
        self._app_secret = creds.get("app_secret")
        self._verify_token = creds.get("verify_token")
        self.phone_number_id = creds.get("phone_number_id") or str(settings.get("phone_number_id") or "")
        if not self.phone_number_id:
            log.error("whatsapp.no_phone_number_id", extra={"account": account})
        self.throughput_retry_after = float(settings.get("throughput_retry_after", 1.0))
        self.pacing = AccountPacing(self.name, account, settings, {})  # per API call, every process
        self.graph = GraphClient(http, base_url=config.api_base_url,
                                 version=str(settings.get("api_version") or GRAPH_VERSION),
                                 token=creds.get("access_token", ""), pacing=self.pacing,
                                 rate_codes={THROUGHPUT: self.throughput_retry_after})
        self.template_language = str(settings.get("template_language") or "en_US")
        self.pair_retry_after = float(settings.get("pair_retry_after", 6.0))
        self.choose_text = str(settings.get("choose_text") or "Please choose:")
        self._parts = SentParts()

    def use_limiter(self, limiter: SharedLimiter) -> None:
        self.pacing.use(limiter)

    # -------------------------------------------------------------- inbound
    def handshake(self, request: RawRequest) -> tuple[int, str] | None:
        return answer_handshake(request, self._verify_token)

    def verify(self, request: RawRequest) -> None:
        verify_signature(request, self._app_secret)

    def parse(self, request: RawRequest) -> list[Inbound]:
        data = load_body(request)
        if data.get("object") != "whatsapp_business_account":
            log.info("webhook.other_object", extra={"channel": self.name, "object": str(data.get("object"))[:40]})
            return []
        items: list[Inbound] = []
        for entry in data["entry"]:  # an unreadable entry, change or item is skipped (readable_items)
            items.extend(readable_items(self.name, partial(self._entry, entry)))
        return items

    def _entry(self, entry: Any) -> Iterable[Inbound]:
        for change in entry.get("changes") or ():
            yield from readable_items(self.name, partial(self._change, change))

    def _change(self, change: Any) -> Iterable[Inbound]:
        if change.get("field") != "messages":
            return
        value = change.get("value") or {}
        number_id = str((value.get("metadata") or {}).get("phone_number_id") or "")
        if self.phone_number_id and number_id and number_id != self.phone_number_id:
            return  # another number of the same app
        names = {str(c.get("wa_id") or c.get("user_id")): (c.get("profile") or {}).get("name")
                 for c in value.get("contacts") or ()}
        for msg in value.get("messages") or ():
            yield from readable_items(self.name, partial(self._message, msg, names))
        for status in value.get("statuses") or ():
            yield from readable_items(self.name, partial(self._status, status))

    def _message(self, msg: dict[str, Any], names: Mapping[str, Any]) -> Iterable[Inbound]:
        sender = msg.get("from") or msg.get("from_user_id") or ""
        mid = msg.get("id")
        kind = msg.get("type")
        if not sender or not mid or not isinstance(sender, str):  # Meta sends ids as strings
            raise MalformedWebhook("a message without from or id")
        text = ""
        payload: str | None = None
        attachments: tuple[InboundAttachment, ...] = ()
        if kind == "text":
            text = (msg.get("text") or {}).get("body") or ""
        elif kind == "interactive":
            inter = msg.get("interactive") or {}
            answer = inter.get("type")
            if answer not in _INTERACTIVE_REPLIES:  # nfm_reply (a WhatsApp Flows answer), …: we send no
                log.info("webhook.ignored_message_type",  # Flows, so there is no step to take it
                         extra={"channel": self.name, "type": f"interactive.{str(answer)[:28]}"})
                return
            reply = inter.get(answer) or {}
            text, payload = reply.get("title") or "", reply.get("id")
        elif kind == "button":  # a template's quick-reply button
            button = msg.get("button") or {}
            text, payload = button.get("text") or "", button.get("payload")
        elif kind in _INBOUND_MEDIA:
            media = msg.get(kind) or {}
            att_kind = "voice" if kind == "audio" and media.get("voice") else kind
            attachments = (InboundAttachment(att_kind, media.get("url"), media.get("filename"),
                                             media.get("mime_type"), media.get("id")),)
            text = media.get("caption") or ""
        elif kind == "location":
            loc = msg.get("location") or {}
            text = " ".join(str(loc[k]) for k in ("name", "address") if loc.get(k))
            attachments = (InboundAttachment("location", f"geo:{loc.get('latitude')},{loc.get('longitude')}",
                                             loc.get("name")),)
        elif kind == "contacts":
            text = ", ".join(str((c.get("name") or {}).get("formatted_name") or "") for c in msg.get("contacts") or ())
        else:  # reaction, unsupported, system, request_welcome, order…: nothing for a flow
            log.info("webhook.ignored_message_type", extra={"channel": self.name, "type": str(kind)[:40]})
            return
        referral = msg.get("referral") or {}
        phone = msg.get("from")
        yield Inbound("message", sender, dedupe_id=mid, sender_id=sender, profile_name=names.get(sender),
                      phone=f"+{phone}" if phone and str(phone).isdigit() else None, text=text,
                      payload=payload, attachments=attachments, start_param=referral.get("source_id"))

    def _status(self, status: dict[str, Any]) -> Iterable[Inbound]:
        mid, value = status.get("id"), status.get("status")
        if not mid or not value:
            raise MalformedWebhook("a status without id or status")
        error = code = None
        errors = status.get("errors") or ()
        if errors:
            first = errors[0]
            code = str(first.get("code")) if first.get("code") is not None else None
            detail = (first.get("error_data") or {}).get("details")
            error = " ".join(str(x) for x in (first.get("title") or first.get("message"), detail) if x) or None
            if code == str(REENGAGEMENT):
                error = f"outside the 24-hour window: {error}"
        yield Inbound("status", str(status.get("recipient_id") or ""), dedupe_id=f"{mid}:{value}",
                      status=str(value), platform_message_id=str(mid), error=error, error_code=code)

    async def acknowledge(self, item: Inbound) -> None:
        return None

    async def close(self) -> None:
        return None

    # -------------------------------------------------------------- outbound
    async def send(self, account: str, chat: Mapping[str, str], message: Mapping[str, Any]) -> str | None:
        if message.get("kind") == "comment":  # WhatsApp has no public comments
            log.info("comment.not_on_channel", extra={"channel": self.name, "account": self.account})
            return None
        to = chat.get("external_id")
        if not to:
            raise DeliveryRejected("the conversation has no WhatsApp number")
        last = number(chat.get("last_inbound_at"))
        # No inbound message ever (a conversation the bot opened): the window was never open.
        outside = last is None or time.time() - last >= WINDOW
        template = message.get("template")
        has_content = bool(message.get("text") or message.get("attachments") or message.get("buttons")
                           or message.get("list"))
        try:
            if template and (outside or not has_content):
                return await self._post(self._template(to, message))
            if outside:
                raise DeliveryRejected("outside WhatsApp's 24-hour customer-service window, and the step "
                                       "has no template", reason=OUTSIDE_WINDOW)
            try:
                return await send_parts(self._parts, message_key(chat, message),
                                        self._free_form(to, message), self._post)
            except GraphError as err:
                if err.code != REENGAGEMENT:
                    raise
                if template:
                    return await self._post(self._template(to, message))
                raise DeliveryRejected(f"outside WhatsApp's 24-hour customer-service window ({err.code}), "
                                       "and the step has no template", reason=OUTSIDE_WINDOW) from err
        except GraphError as err:
            raise self._map_error(err) from err

    async def _post(self, body: dict[str, Any]) -> str | None:
        data = await self.graph.post(f"{self.phone_number_id}/messages", body=body)
        messages = data.get("messages") or [{}]
        return str(messages[0].get("id") or "") or None

    def _map_error(self, err: GraphError) -> DeliveryTemporary | DeliveryRejected:
        log.warning("send.graph_error", extra={"channel": self.name, "account": self.account,
                                               "code": err.code, "subcode": err.subcode, "status": err.status})
        if err.code in _TEMPORARY or err.status >= 500:
            retry = err.retry_after
            if retry is None and err.code == THROUGHPUT:
                retry = self.throughput_retry_after
            elif retry is None and err.code == PAIR_RATE:
                retry = self.pair_retry_after
            return DeliveryTemporary(str(err), retry_after=retry)
        if err.code in (0, 190):
            return credentials_refused(f"the access token was refused: {err}")
        return DeliveryRejected(str(err))

    # -------------------------------------------------------------- message bodies
    @staticmethod
    def _base(to: str, kind: str) -> dict[str, Any]:
        return {"messaging_product": "whatsapp", "recipient_type": "individual", "to": to, "type": kind}

    def _template(self, to: str, message: Mapping[str, Any]) -> dict[str, Any]:
        params = message.get("template_params", message.get("params"))
        language = self.template_language
        components: list[dict[str, Any]] = []
        if isinstance(params, Mapping):
            language = str(params.get("language") or language)
            if isinstance(params.get("components"), list):
                components = list(params["components"])
            else:
                named = [{"type": "text", "parameter_name": str(k), "text": str(v)}
                         for k, v in params.items() if k != "language"]
                if named:
                    components = [{"type": "body", "parameters": named}]
        elif isinstance(params, (list, tuple)) and params:
            components = [{"type": "body", "parameters": [{"type": "text", "text": str(v)} for v in params]}]
        template: dict[str, Any] = {"name": str(message["template"]), "language": {"code": language}}
        if components:
            template["components"] = components
        return {**self._base(to, "template"), "template": template}

    def _text(self, to: str, text: str) -> dict[str, Any]:
        return {**self._base(to, "text"), "text": {"preview_url": "http" in text, "body": text}}

    def _media(self, to: str, att: Mapping[str, Any], caption: str | None = None) -> dict[str, Any]:
        kind = _MEDIA_KINDS.get(att.get("kind", ""), "document")
        media: dict[str, Any] = {"link": att.get("url")}
        if caption and kind in _CAPTIONED:
            media["caption"] = caption
        if kind == "document" and att.get("name"):
            media["filename"] = att["name"]
        return {**self._base(to, kind), kind: media}

    def _interactive(self, to: str, text: str, part: Rendered) -> dict[str, Any]:
        body: dict[str, Any] = {"body": {"text": text or self.choose_text}}
        if part.buttons:
            body["type"] = "button"
            body["action"] = {"buttons": [{"type": "reply", "reply": {"id": b.payload, "title": b.title}}
                                          for b in part.buttons]}
        else:
            menu = part.menu
            assert menu is not None
            body["type"] = "list"
            if menu.header:
                body["header"] = {"type": "text", "text": _cut(menu.header, HEADER_MAX)}
            if menu.footer:
                body["footer"] = {"type": "text", "text": _cut(menu.footer, FOOTER_MAX)}
            sections = []
            for title, rows in menu.sections:
                section: dict[str, Any] = {"rows": [
                    {"id": r.id, "title": r.title, **({"description": r.description} if r.description else {})}
                    for r in rows]}
                if title:
                    section["title"] = title
                sections.append(section)
            if len(sections) > 1:
                for i, section in enumerate(sections, 1):
                    section.setdefault("title", str(i))
            body["action"] = {"button": menu.button or "Options", "sections": sections}
        return {**self._base(to, "interactive"), "interactive": body}

    def _free_form(self, to: str, message: Mapping[str, Any]) -> list[dict[str, Any]]:
        parts = render(dict(message), self.capabilities)
        out: list[dict[str, Any]] = []
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            if last and (part.buttons or part.menu):
                texts = split_text(part.text, INTERACTIVE_BODY_MAX) if part.text else [""]
                out.extend(self._text(to, t) for t in texts[:-1])
                out.extend(self._media(to, a) for a in part.attachments)
                out.append(self._interactive(to, texts[-1], part))
            elif (len(part.attachments) == 1 and part.text and len(part.text) <= CAPTION_MAX
                  and _MEDIA_KINDS.get(part.attachments[0].get("kind", "")) in _CAPTIONED):
                out.append(self._media(to, part.attachments[0], caption=part.text))
            else:
                if part.text:
                    out.append(self._text(to, part.text))
                out.extend(self._media(to, a) for a in part.attachments)
        if not out:
            raise DeliveryRejected("the message has nothing WhatsApp can show")
        return out


def create(*, account: str, config: AccountConfig, http: aiohttp.ClientSession, public_url: str = "",
           **_: Any) -> WhatsAppAdapter:
    return WhatsAppAdapter(account=account, config=config, http=http, public_url=public_url)
