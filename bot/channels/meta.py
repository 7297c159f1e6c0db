"""Meta's messaging platforms: the shared webhook and Graph API parts, and the Instagram and
Messenger adapters (WhatsApp Cloud is in ``whatsapp.py`` and uses the shared parts).

Shared by all three:

* the GET handshake: ``hub.mode=subscribe`` with the configured ``verify_token`` is answered
  with ``hub.challenge``, anything else with 403 and its reason (logged, never the token);
* ``X-Hub-Signature-256: sha256=<hex>``: HMAC-SHA256 of the **raw body bytes** with the app
  secret, compared in constant time (missing: 401, wrong: 403; an account without an app
  secret rejects every POST);
* a small Graph client: ``POST {api_base_url}/{version}/{path}`` with a Bearer token, errors
  parsed from Graph's ``{"error": {"message", "type", "code", "error_subcode", "fbtrace_id"}}``.

Instagram and Messenger (same Send API: ``POST /{version}/me/messages``):

* inbound DMs (text, quick-reply taps, postbacks, media, Instagram story mentions), Instagram
  comments (``changes`` field ``comments``/``live_comments``: an ``Inbound`` of kind ``comment``
  whose ``reply`` carries the comment id), delivery/read receipts where they name a message id;
  echoes of our own sends and our own comments are ignored; ``mid``/comment id dedupe; the
  entries of the app's other Pages / Instagram accounts are ignored when the account names its
  own (``page_id`` for Messenger, ``ig_id`` for Instagram);
* outbound: up to 13 quick replies, attachments by URL, long text split (Instagram counts
  1000 *bytes*); a ``comment`` transcript entry is a public reply
  (``POST /{comment-id}/replies?message=…``);
* the window: inside 24 h of the customer's last DM a normal reply; a conversation that began
  with a comment (and no DM since) gets one private reply (``recipient.comment_id``) within
  7 days of the comment; a person's reply (transcript role ``human``) after 24 h but within
  7 days is tagged ``HUMAN_AGENT``; anything else is ``DeliveryRejected`` (→ the step's
  ``failed`` branch) without calling the platform.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import quote

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
from .meta_webhooks import (
    DAY,
    SIGNATURE_HEADER,
    answer_handshake,
    header,
    load_body,
    number,
    seconds,
    signature,
    verify_signature,
)
from .pacing import AccountPacing
from .render import Rendered, render, split_text

__all__ = [  # the webhook side lives in ``meta_webhooks``; its names are importable from here too
    "DAY", "GRAPH_URL", "GRAPH_VERSION", "HUMAN_AGENT_WINDOW", "PRIVATE_REPLY_WINDOW", "SIGNATURE_HEADER", "WINDOW",
    "GraphClient", "GraphError", "MetaMessagingAdapter", "SentParts", "answer_handshake", "create_instagram",
    "create_messenger", "credentials", "fit_bytes", "header", "load_body", "message_key", "number", "seconds",
    "send_parts", "signature", "verify_signature",
]

log = logging.getLogger("salesbot.channels.meta")

GRAPH_URL = "https://graph.facebook.com"
GRAPH_VERSION = "v21.0"
WINDOW = 1 * DAY  # the standard messaging window after the customer's last message
HUMAN_AGENT_WINDOW = 7 * DAY  # HUMAN_AGENT tag: a person may answer up to 7 days later
PRIVATE_REPLY_WINDOW = 7 * DAY  # one private reply within 7 days of the comment


# ---------------------------------------------------------------------------- Graph client

@dataclass
class GraphError(Exception):
    """An error answer of the Graph API."""

    status: int
    code: int | None
    subcode: int | None
    message: str
    retry_after: float | None = None
    fbtrace_id: str | None = None

    def __str__(self) -> str:
        sub = f"/{self.subcode}" if self.subcode else ""
        return f"graph error {self.code}{sub} (HTTP {self.status}): {self.message}"


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


class GraphClient:
    """``POST`` to the Graph API with the account's token; the session comes from outside."""

    def __init__(self, http: aiohttp.ClientSession, *, base_url: str | None, version: str,
                 token: str, pacing: AccountPacing | None = None,
                 rate_codes: Mapping[int, float] | None = None) -> None:
        self.http = http
        #: the account's shared limit, taken before every call; error codes that mean "the account
        #: is over its rate" (with the pause when the answer gives none) hold every process
        self.pacing, self.rate_codes = pacing, dict(rate_codes or {})
        self.base = (base_url or GRAPH_URL).rstrip("/")
        self.version = version.strip("/")
        self._token = token

    def url(self, path: str) -> str:
        return f"{self.base}/{self.version}/{path.lstrip('/')}"

    async def post(self, path: str, *, body: Any = None,
                   params: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The JSON answer; ``GraphError`` for an error answer, ``DeliveryTemporary`` when the
        platform could not be reached or answered 5xx/429 without an error object."""
        headers = {"Authorization": f"Bearer {self._token}"}
        if self.pacing is not None:
            await self.pacing.acquire()
        try:
            async with self.http.post(self.url(path), json=body, params=params, headers=headers) as resp:
                status = resp.status
                text = await resp.text()
                retry = _retry_after(resp.headers.get("Retry-After"))
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise DeliveryTemporary(f"graph API unreachable: {exc!r}") from exc
        try:
            data = json.loads(text) if text else {}
        except ValueError:
            data = None
        if status < 400 and isinstance(data, dict) and "error" not in data:
            return data
        err = data.get("error") if isinstance(data, dict) else None
        code = err.get("code") if isinstance(err, dict) else None
        if self.pacing is not None and (status == 429 or code in self.rate_codes):
            await self.pacing.hold(retry, default=self.rate_codes.get(code, 1.0) if isinstance(code, int) else 1.0)
        if not isinstance(err, dict):
            if status >= 500 or status == 429:
                raise DeliveryTemporary(f"graph API answered HTTP {status}", retry_after=retry)
            raise DeliveryRejected(f"graph API answered HTTP {status}")

        def _int(v: Any) -> int | None:
            try:
                return int(v)
            except (TypeError, ValueError):
                return None

        raise GraphError(status, _int(err.get("code")), _int(err.get("error_subcode")),
                         str(err.get("message") or ""), retry, err.get("fbtrace_id"))


class SentParts:
    """Which parts of a multi-part message already left, so a retry does not repeat them.

    Kept in memory (bounded): after a restart a retried message may repeat its first parts,
    which is the at-least-once side of the trade."""

    def __init__(self, size: int = 10_000) -> None:
        self._done: OrderedDict[str, tuple[int, str | None]] = OrderedDict()
        self._size = size

    def get(self, key: str) -> tuple[int, str | None]:
        return self._done.get(key, (0, None))

    def put(self, key: str, count: int, last_id: str | None) -> None:
        self._done[key] = (count, last_id)
        self._done.move_to_end(key)
        while len(self._done) > self._size:
            self._done.popitem(last=False)

    def forget(self, key: str) -> None:
        self._done.pop(key, None)


async def send_parts(sent: SentParts, key: str, bodies: list[Any],
                     post: Callable[[Any], Awaitable[str | None]]) -> str | None:
    """Post ``bodies`` in order (``post(body) -> platform id``), skipping the ones a previous
    attempt of the same message already sent; returns the id of the last part."""
    done, last_id = sent.get(key) if key else (0, None)
    for index in range(done, len(bodies)):
        last_id = await post(bodies[index])
        if key:
            sent.put(key, index + 1, last_id)
    if key:
        sent.forget(key)
    return last_id


def message_key(chat: Mapping[str, str], message: Mapping[str, Any]) -> str:
    ref = message.get("ref")
    return f"{chat.get('external_id', '')}|{ref}|{message.get('at', '')}" if ref else ""


def credentials(config: AccountConfig) -> dict[str, str]:
    return {k: v.get_secret_value() for k, v in config.credentials.items()}


# ---------------------------------------------------------------------------- Instagram / Messenger

INSTAGRAM_CAPABILITIES = Capabilities(
    max_buttons=13, button_title_max=20, payload_max_bytes=1000, quick_replies=True,
    text_max=1000, attachments=frozenset({"image", "video", "audio", "voice"}))

MESSENGER_CAPABILITIES = Capabilities(
    max_buttons=13, button_title_max=20, payload_max_bytes=1000, quick_replies=True,
    text_max=2000, attachments=frozenset({"image", "video", "audio", "voice", "document"}))

#: Our attachment kinds -> the Send API's attachment types.
_OUT_TYPES = {"image": "image", "video": "video", "audio": "audio", "voice": "audio", "document": "file"}
#: The Send API's inbound attachment types -> our kinds.
_IN_KINDS = {"image": "image", "video": "video", "audio": "audio", "file": "document"}

_TEMPORARY_CODES = {1, 2, 4, 17, 32, 341, 613, 1200}
_RATE_CODES = {4, 17, 32, 613}


def fit_bytes(text: str, limit: int) -> list[str]:
    """Split ``text`` so each part is at most ``limit`` UTF-8 bytes (Instagram counts bytes)."""
    if len(text.encode()) <= limit:
        return [text]
    out: list[str] = []
    for part in split_text(text, limit):
        if len(part.encode()) <= limit:
            out.append(part)
            continue
        chars = limit
        while True:  # multi-byte text: fewer characters per part until every part fits
            chars = max(1, chars * 3 // 4)
            pieces = split_text(part, chars)
            if all(len(p.encode()) <= limit for p in pieces):
                out.extend(pieces)
                break
    return out


class MetaMessagingAdapter:
    """Instagram or Messenger (the same Send API and webhook format)."""

    def __init__(self, *, name: str, object_type: str, capabilities: Capabilities, text_bytes: int | None,
                 comments: bool, account_ids: tuple[str, ...], account: str, config: AccountConfig,
                 http: aiohttp.ClientSession, public_url: str = "") -> None:
        self.name = name
        self.capabilities = capabilities
        self.account = account
        self._object = object_type
        self._text_bytes = text_bytes
        self._comments = comments
        creds = credentials(config)
        settings = config.settings
        self._app_secret = creds.get("app_secret")
        self._verify_token = creds.get("verify_token")
        ids = {key: str(creds.get(key) or settings.get(key) or "") for key in ("page_id", "ig_id", "instagram_id")}
        #: Our own ids (page id, Instagram account id): events from them are echoes.
        self._own_ids = {v for v in ids.values() if v}
        #: Meta posts the events of every Page (or Instagram account) of an app to the one callback
        #: URL: with the id its entries carry configured, another account's entries are ignored.
        self._filters = any(ids[key] for key in account_ids)
        if not self._filters:
            log.warning("meta.no_account_id", extra={"channel": name, "account": account,
                                                     "setting": " or ".join(account_ids)})
        self._send_path = str(settings.get("send_path") or "me/messages")
        self.pacing = AccountPacing(name, account, settings, {})  # per API call, every process
        self.graph = GraphClient(http, base_url=config.api_base_url,
                                 version=str(settings.get("api_version") or GRAPH_VERSION),
                                 token=creds.get("access_token", ""), pacing=self.pacing,
                                 rate_codes=dict.fromkeys(_RATE_CODES, 60.0))
        self._parts = SentParts()
        self._private_replied: OrderedDict[str, float] = OrderedDict()

    def use_limiter(self, limiter: SharedLimiter) -> None:
        self.pacing.use(limiter)

    # -------------------------------------------------------------- inbound
    def handshake(self, request: RawRequest) -> tuple[int, str] | None:
        return answer_handshake(request, self._verify_token)

    def verify(self, request: RawRequest) -> None:
        verify_signature(request, self._app_secret)

    def parse(self, request: RawRequest) -> list[Inbound]:
        data = load_body(request)
        if data.get("object") != self._object:
            log.info("webhook.other_object", extra={"channel": self.name, "object": str(data.get("object"))[:40]})
            return []
        items: list[Inbound] = []
        for entry in data["entry"]:  # an unreadable entry or event is skipped (readable_items)
            items.extend(readable_items(self.name, partial(self._entry, entry)))
        return items

    def _entry(self, entry: Any) -> Iterable[Inbound]:
        if not isinstance(entry, dict):
            raise MalformedWebhook("an entry is not an object")
        entry_id = str(entry.get("id") or "")
        if self._filters and entry_id and entry_id not in self._own_ids:
            self._other_account(entry_id)
            return
        for event in entry.get("messaging") or ():
            yield from readable_items(self.name, partial(self._messaging, event, entry_id))
        for change in entry.get("changes") or ():
            yield from readable_items(self.name,
                                      partial(self._change, change, entry_id, entry.get("time")))

    def _other_account(self, account_id: str) -> None:
        log.info("webhook.other_account", extra={"channel": self.name, "account": self.account,
                                                 "id": account_id[:40]})

    def _is_own(self, sender: str, entry_id: str) -> bool:
        return bool(sender) and (sender == entry_id or sender in self._own_ids)

    def _messaging(self, event: dict[str, Any], entry_id: str) -> Iterable[Inbound]:
        sender = (event.get("sender") or {}).get("id") or ""
        if not isinstance(sender, str):  # Meta sends ids as strings
            raise MalformedWebhook("the sender id is not a string")
        recipient = str((event.get("recipient") or {}).get("id") or "")
        if self._filters and recipient and not {recipient, sender} & self._own_ids:
            self._other_account(recipient)  # an event between a customer and another of the app's accounts
            return
        at = seconds(event.get("timestamp")) or time.time()
        if "message" in event:
            msg = event["message"]
            if msg.get("is_echo") or self._is_own(sender, entry_id) or msg.get("is_deleted"):
                return
            mid = msg.get("mid")
            attachments = tuple(self._attachment(a) for a in msg.get("attachments") or ())
            text = msg.get("text") or ""
            if not text and not attachments:
                return  # unsupported content (is_unsupported) or a reaction-like event
            qr = msg.get("quick_reply") or {}
            referral = msg.get("referral") or {}
            yield Inbound("message", sender, dedupe_id=mid, sender_id=sender, text=text,
                          payload=qr.get("payload"), attachments=attachments,
                          start_param=referral.get("ref"), reply={"dm_at": f"{at:.3f}"})
        elif "postback" in event:
            if self._is_own(sender, entry_id):
                return
            pb = event["postback"]
            referral = pb.get("referral") or {}
            yield Inbound("message", sender, dedupe_id=pb.get("mid") or f"pb:{sender}:{event.get('timestamp')}",
                          sender_id=sender, text=pb.get("title") or "", payload=pb.get("payload"),
                          start_param=referral.get("ref"), reply={"dm_at": f"{at:.3f}"})
        elif "delivery" in event:
            for mid in event["delivery"].get("mids") or ():
                yield Inbound("status", sender, dedupe_id=f"{mid}:delivered", status="delivered",
                              platform_message_id=mid)
        elif "read" in event:
            mid = event["read"].get("mid")  # Instagram names the message; Messenger only a watermark
            if mid:
                yield Inbound("status", sender, dedupe_id=f"{mid}:read", status="read", platform_message_id=mid)

    def _attachment(self, att: dict[str, Any]) -> InboundAttachment:
        kind = str(att.get("type") or "file")
        payload = att.get("payload") or {}
        # A story mention's URL is the story itself: passed along, never downloaded or stored.
        return InboundAttachment(_IN_KINDS.get(kind, kind), payload.get("url"), att.get("title"),
                                 None, payload.get("id") or payload.get("reel_video_id"))

    def _change(self, change: dict[str, Any], entry_id: str, entry_time: Any) -> Iterable[Inbound]:
        if not self._comments or change.get("field") not in ("comments", "live_comments"):
            return
        value = change.get("value") or {}
        author = value.get("from") or {}
        author_id = str(author.get("id") or "")
        comment_id = value.get("id")
        if not author_id or not comment_id or self._is_own(author_id, entry_id):
            return  # our own public replies come back as comments too
        at = seconds(value.get("timestamp") or entry_time) or time.time()
        yield Inbound("comment", author_id, dedupe_id=f"comment:{comment_id}", sender_id=author_id,
                      profile_name=author.get("username"), text=value.get("text") or "",
                      reply={"comment_id": str(comment_id), "comment_at": f"{at:.3f}"})

    async def acknowledge(self, item: Inbound) -> None:
        return None

    async def close(self) -> None:
        return None

    # -------------------------------------------------------------- outbound
    async def send(self, account: str, chat: Mapping[str, str], message: Mapping[str, Any]) -> str | None:
        try:
            if message.get("kind") == "comment":
                return await self._comment_reply(chat, message)
            return await self._send_message(chat, message)
        except GraphError as err:
            raise self._map_error(err) from err

    async def _comment_reply(self, chat: Mapping[str, str], message: Mapping[str, Any]) -> str | None:
        comment_id = chat.get("reply_comment_id")
        if not self._comments or not comment_id:
            log.info("comment.nothing_to_reply_to", extra={"channel": self.name, "account": self.account})
            return None
        text = (message.get("text") or "").strip()
        if not text:
            return None
        data = await self.graph.post(f"{quote(comment_id, safe='')}/replies", params={"message": text[:2200]})
        return str(data.get("id") or "") or None

    def _route(self, chat: Mapping[str, str],
               message: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, str], bool]:
        """(recipient, messaging_type/tag fields, private reply?) or ``DeliveryRejected``."""
        now = time.time()
        external = chat.get("external_id", "")
        dm_at = number(chat.get("reply_dm_at"))
        comment_id = chat.get("reply_comment_id") if self._comments else None
        comment_at = number(chat.get("reply_comment_at"))
        if dm_at is None and not comment_id:
            dm_at = number(chat.get("last_inbound_at"))
        if dm_at is not None and now - dm_at < WINDOW:
            return {"id": external}, {"messaging_type": "RESPONSE"}, False
        if comment_id and (dm_at is None or (comment_at or 0) >= dm_at) and (
                comment_at is None or now - comment_at < PRIVATE_REPLY_WINDOW):
            if comment_id in self._private_replied:
                raise DeliveryRejected("a comment allows one private reply; the customer has not answered it yet")
            return {"comment_id": comment_id}, {}, True
        if message.get("role") == "human" and dm_at is not None and now - dm_at < HUMAN_AGENT_WINDOW:
            return {"id": external}, {"messaging_type": "MESSAGE_TAG", "tag": "HUMAN_AGENT"}, False
        if message.get("role") == "human":
            raise DeliveryRejected(
                "more than 7 days since the customer's last message: the HUMAN_AGENT tag no longer applies")
        raise DeliveryRejected("outside the 24-hour messaging window")

    def _texts(self, text: str) -> list[str]:
        if not text:
            return []
        return fit_bytes(text, self._text_bytes) if self._text_bytes else [text]

    @staticmethod
    def _quick_replies(part: Rendered) -> list[dict[str, str]]:
        return [{"content_type": "text", "title": b.title, "payload": b.payload} for b in part.buttons]

    @staticmethod
    def _attachment_message(att: Mapping[str, Any]) -> dict[str, Any]:
        return {"attachment": {"type": _OUT_TYPES.get(att.get("kind", ""), "file"),
                               "payload": {"url": att.get("url")}}}

    def _messages(self, message: Mapping[str, Any], private: bool) -> list[dict[str, Any]]:
        """The ``message`` objects to send, in order (quick replies on the last one)."""
        parts = render(dict(message), self.capabilities)
        if private:  # one message only: attachments become links, the text is cut to fit
            last = parts[-1]
            text = "\n\n".join(p.text for p in parts if p.text)
            for att in last.attachments:
                text += f"\n{att.get('name') or att.get('kind')}: {att.get('url')}"
            pieces = self._texts(text.strip())
            if len(pieces) == 1 and len(pieces[0]) > self.capabilities.text_max:
                pieces = split_text(pieces[0], self.capabilities.text_max)
            text = pieces[0] if pieces else ""
            if len(pieces) > 1:
                log.warning("private_reply.cut", extra={"channel": self.name, "account": self.account})
            if not text:
                raise DeliveryRejected(f"nothing {self.name} can show in a private reply")
            msg: dict[str, Any] = {"text": text}
            if last.buttons:
                msg["quick_replies"] = self._quick_replies(last)
            return [msg]
        out: list[dict[str, Any]] = []
        for index, part in enumerate(parts):
            texts = [{"text": t} for t in self._texts(part.text)]
            atts = [self._attachment_message(a) for a in part.attachments]
            if index == len(parts) - 1 and part.buttons:
                chunk = atts + texts  # the question with its quick replies comes last
                if chunk:
                    chunk[-1]["quick_replies"] = self._quick_replies(part)
                else:
                    chunk = [{"text": "…", "quick_replies": self._quick_replies(part)}]
                out.extend(chunk)
            else:
                out.extend(texts + atts)
        if not out:
            raise DeliveryRejected(f"the message has nothing {self.name} can show"
                                   + (" (message templates are WhatsApp only)" if message.get("template") else ""))
        return out

    async def _send_message(self, chat: Mapping[str, str], message: Mapping[str, Any]) -> str | None:
        recipient, fields, private = self._route(chat, message)
        bodies = [{"recipient": recipient, **fields, "message": m} for m in self._messages(message, private)]

        async def post(body: dict[str, Any]) -> str | None:
            data = await self.graph.post(self._send_path, body=body)
            return str(data.get("message_id") or "") or None

        last_id = await send_parts(self._parts, message_key(chat, message), bodies, post)
        if private:
            self._private_replied[recipient["comment_id"]] = time.time()
            while len(self._private_replied) > 10_000:
                self._private_replied.popitem(last=False)
        return last_id

    def _map_error(self, err: GraphError) -> DeliveryTemporary | DeliveryRejected:
        log.warning("send.graph_error", extra={"channel": self.name, "account": self.account,
                                               "code": err.code, "subcode": err.subcode, "status": err.status})
        if err.code in _TEMPORARY_CODES or err.status >= 500:
            retry = err.retry_after
            if retry is None and err.code in _RATE_CODES:
                retry = 60.0
            return DeliveryTemporary(str(err), retry_after=retry)
        if err.code == 10 and err.subcode == 2018278:
            return DeliveryRejected(f"outside the messaging window ({err.message})")
        if err.code == 551:
            return DeliveryRejected(f"the customer cannot be reached (blocked or deactivated): {err.message}")
        if err.code == 190:
            return credentials_refused(f"the access token was refused: {err}")
        return DeliveryRejected(str(err))


def create_instagram(*, account: str, config: AccountConfig, http: aiohttp.ClientSession,
                     public_url: str = "", **_: Any) -> MetaMessagingAdapter:
    return MetaMessagingAdapter(name="instagram", object_type="instagram", capabilities=INSTAGRAM_CAPABILITIES,
                                text_bytes=1000, comments=True, account_ids=("ig_id", "instagram_id"),
                                account=account, config=config, http=http,
                                public_url=public_url)


def create_messenger(*, account: str, config: AccountConfig, http: aiohttp.ClientSession,
                     public_url: str = "", **_: Any) -> MetaMessagingAdapter:
    return MetaMessagingAdapter(name="messenger", object_type="page", capabilities=MESSENGER_CAPABILITIES,
                                text_bytes=None, comments=False, account_ids=("page_id",),
                                account=account, config=config, http=http,
                                public_url=public_url)
