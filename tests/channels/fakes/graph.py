"""A fake Meta Graph API on loopback, following the documented API closely enough to catch
mistakes, plus builders for the webhooks Meta posts and a harness that runs our app against it.

Graph side (``GraphFake``):

* WhatsApp Cloud: ``POST /{version}/{PHONE_NUMBER_ID}/messages`` answers
  ``{"messaging_product": "whatsapp", "contacts": [...], "messages": [{"id": "wamid..."}]}``;
  bodies are checked against the documented limits (3 reply buttons, titles ≤ 20 and unique,
  ≤ 10 list rows, row title ≤ 24, description ≤ 72, list button ≤ 20, interactive body
  ≤ 1024, text ≤ 4096, media by link or id, templates with name and language); a free-form
  message outside the customer's 24-hour window gets 131047 (or, with
  ``window_errors="async"``, is accepted and fails later in a status webhook); more than
  ``throughput`` messages per second on the number get 130429.
* Instagram / Messenger: ``POST /{version}/me/messages`` (recipient ``id`` or ``comment_id``)
  answers ``{"recipient_id", "message_id"}``; ≤ 13 quick replies with titles ≤ 20; text
  ≤ 1000 bytes (Instagram) or 2000 characters (Messenger); the 24-hour window (code 10,
  subcode 2018278), the ``HUMAN_AGENT`` tag for 7 days, one private reply per comment within
  7 days; ``POST /{version}/{comment-id}/replies?message=…`` answers ``{"id"}``.
* Every error has Graph's shape ``{"error": {"message", "type", "code", "error_subcode",
  "fbtrace_id"}}``. The Bearer token (or ``access_token``) is checked (190 otherwise).

The customer side: ``customer_wrote`` / ``commented`` tell the fake what Meta would know (the
webhook helpers call them), and ``GraphFake.post_webhook`` posts a payload to our server the
way Meta does: compact JSON with non-ASCII escaped, ``X-Hub-Signature-256`` over those bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import itertools
import json
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer

from tests.waiting import WorkerDriver

if TYPE_CHECKING:
    from bot.runtime.worker import Worker
    from bot.server.services import Services

VERSION = "v21.0"
TOKEN = "EAAG-test-token"
APP_SECRET = "app_secret_123"
VERIFY_TOKEN = "verify-me"
PHONE_NUMBER_ID = "106540352242922"
WABA_ID = "102290129340398"
DISPLAY_NUMBER = "15550783881"
PAGE_ID = "1122334455"
IG_ID = "17841400000000001"
DAY = 86400.0


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def dumps(payload: Any) -> bytes:
    """Meta's encoding: compact JSON with non-ASCII as \\uXXXX escapes."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=True).encode()


@dataclass
class Call:
    """One request the fake received."""

    path: str
    body: Any
    query: dict[str, str]
    at: float
    status: int = 200
    answer: Any = None

    @property
    def ok(self) -> bool:
        return self.status < 400

    @property
    def error_code(self) -> int | None:
        if isinstance(self.answer, dict) and "error" in self.answer:
            return int(self.answer["error"]["code"])
        return None


@dataclass
class Comment:
    id: str
    author: str
    at: float
    text: str = ""
    replies: list[str] = field(default_factory=list)
    private_replied: bool = False


class GraphError(Exception):
    def __init__(self, code: int, message: str, *, subcode: int | None = None, status: int = 400,
                 type_: str = "OAuthException", data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.subcode = code, message, subcode
        self.status, self.type, self.data = status, type_, data

    def body(self, trace: str) -> dict[str, Any]:
        err: dict[str, Any] = {"message": self.message, "type": self.type, "code": self.code, "fbtrace_id": trace}
        if self.subcode is not None:
            err["error_subcode"] = self.subcode
        if self.data is not None:
            err["error_data"] = self.data
        return {"error": err}


def _invalid(detail: str) -> GraphError:
    return GraphError(100, "(#100) Invalid parameter", data={"messaging_product": "whatsapp", "details": detail})


class GraphFake:
    def __init__(self, *, messaging: str = "instagram", throughput: float | None = None,
                 window_errors: str = "sync", token: str = TOKEN, app_secret: str = APP_SECRET,
                 phone_number_id: str = PHONE_NUMBER_ID) -> None:
        self.messaging = messaging  # which Send API limits /me/messages applies: instagram | messenger
        self.throughput = throughput  # WhatsApp messages per second per number (None: unlimited)
        self.window_errors = window_errors  # 131047 "sync" in the answer, or "async" in a status
        self.token = token
        self.app_secret = app_secret
        self.phone_number_id = phone_number_id
        self.calls: list[Call] = []
        self.windows: dict[str, float] = {}  # customer id -> their last message (opens the window)
        self.comments: dict[str, Comment] = {}
        self.scripted: deque[GraphError | None] = deque()  # errors to answer the next sends with
        self.pending_statuses: list[dict[str, Any]] = []  # WhatsApp statuses Meta would post later
        self.errors: Counter[int] = Counter()
        self._recent: deque[float] = deque()
        self._ids = itertools.count(1)
        self._server: TestServer | None = None
        self._session: ClientSession | None = None
        self.webhook_url: str | None = None

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/{version}/{node}/messages", self._messages)
        app.router.add_post("/{version}/{node}/replies", self._replies)
        self._server = TestServer(app, host="127.0.0.1")
        await self._server.start_server()
        self._session = ClientSession()
        return self.base_url

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return str(self._server.make_url("")).rstrip("/")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._server is not None:
            await self._server.close()

    # ------------------------------------------------------------------ what Meta knows of the customer
    def customer_wrote(self, customer: str, at: float | None = None) -> None:
        self.windows[customer] = time.time() if at is None else at

    def commented(self, comment_id: str, author: str, text: str = "", at: float | None = None) -> None:
        self.comments[comment_id] = Comment(comment_id, author, time.time() if at is None else at, text)

    # ------------------------------------------------------------------ inspection
    @property
    def sent(self) -> list[Call]:
        """Accepted message sends (not comment replies), in order."""
        return [c for c in self.calls if c.ok and c.path.endswith("/messages")]

    def sent_to(self, customer: str) -> list[dict[str, Any]]:
        out = []
        for c in self.sent:
            body = c.body
            to = body.get("to") if "messaging_product" in body else (body.get("recipient") or {}).get("id")
            if to == customer or (body.get("recipient") or {}).get("comment_id") in self._comments_of(customer):
                out.append(body)
        return out

    def _comments_of(self, customer: str) -> set[str]:
        return {c.id for c in self.comments.values() if c.author == customer}

    @staticmethod
    def describe(body: Mapping[str, Any]) -> str:
        """A short readable form of one send (for assertions)."""
        if body.get("messaging_product") == "whatsapp":
            kind = body["type"]
            if kind == "text":
                return body["text"]["body"]
            if kind == "interactive":
                inter = body["interactive"]
                if inter["type"] == "button":
                    titles = [b["reply"]["title"] for b in inter["action"]["buttons"]]
                    return f"{inter['body']['text']} [buttons: {', '.join(titles)}]"
                rows = [r["title"] for s in inter["action"]["sections"] for r in s["rows"]]
                return f"{inter['body']['text']} [list {inter['action']['button']}: {', '.join(rows)}]"
            if kind == "template":
                return f"[template {body['template']['name']}]"
            media = body[kind]
            caption = f" {media['caption']}" if media.get("caption") else ""
            return f"[{kind} {media.get('link') or media.get('id')}]{caption}"
        msg = body["message"]
        if "attachment" in msg:
            text = f"[{msg['attachment']['type']} {msg['attachment']['payload'].get('url')}]"
        else:
            text = msg["text"]
        if msg.get("quick_replies"):
            text += f" [quick: {', '.join(q['title'] for q in msg['quick_replies'])}]"
        return text

    def log_for(self, customer: str) -> list[str]:
        return [self.describe(b) for b in self.sent_to(customer)]

    # ------------------------------------------------------------------ handlers
    def _trace(self) -> str:
        return f"AfakeTrace{next(self._ids)}"

    def _check_auth(self, request: web.Request) -> None:
        auth = request.headers.get("Authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else request.query.get("access_token", "")
        if not hmac.compare_digest(token.encode(), self.token.encode()):
            raise GraphError(190, "Invalid OAuth access token - Cannot parse access token", status=401)

    async def _handle(self, request: web.Request, work: Callable[[web.Request, Any], Any]) -> web.Response:
        body: Any = None
        raw = await request.read()
        call = Call(request.path, None, dict(request.query), time.time())
        self.calls.append(call)
        try:
            self._check_auth(request)
            if raw:
                try:
                    body = json.loads(raw)
                except ValueError:
                    raise GraphError(100, "(#100) The request body is not valid JSON") from None
            call.body = body
            answer = work(request, body)
            call.answer = answer
            return web.json_response(answer)
        except GraphError as exc:
            self.errors[exc.code] += 1
            call.status, call.answer = exc.status, exc.body(self._trace())
            return web.json_response(call.answer, status=exc.status)

    async def _messages(self, request: web.Request) -> web.Response:
        node = request.match_info["node"]
        if node == "me" or node in (PAGE_ID, IG_ID):
            return await self._handle(request, self._meta_send)
        return await self._handle(request, lambda r, b: self._wa_send(node, b))

    async def _replies(self, request: web.Request) -> web.Response:
        return await self._handle(request, lambda r, b: self._comment_reply(r.match_info["node"], r.query))

    def _scripted(self) -> None:
        """Answer with the next scripted error (a ``None`` in the queue lets one send through)."""
        if self.scripted:
            error = self.scripted.popleft()
            if error is not None:
                raise error

    # ------------------------------------------------------------------ WhatsApp
    def _wa_send(self, node: str, body: Any) -> dict[str, Any]:
        if node != self.phone_number_id:
            raise GraphError(100, f"(#100) Unsupported post request. Object with ID '{node}' does not exist",
                             subcode=33)
        if not isinstance(body, dict) or body.get("messaging_product") != "whatsapp":
            raise _invalid("messaging_product must be whatsapp")
        self._scripted()
        now = time.time()
        if self.throughput is not None:
            while self._recent and now - self._recent[0] >= 1.0:
                self._recent.popleft()
            if len(self._recent) >= self.throughput:
                raise GraphError(130429, "(#130429) Rate limit hit",
                                 data={"messaging_product": "whatsapp",
                                       "details": "Cloud API message throughput has been reached."})
        to = body.get("to")
        if not isinstance(to, str) or not to:
            raise _invalid("to is required")
        kind = body.get("type", "text")
        self._wa_validate(kind, body)
        wamid = f"wamid.FAKE{next(self._ids):08d}"
        last = self.windows.get(to)
        closed = kind != "template" and (last is None or now - last >= DAY)
        if closed and self.window_errors == "sync":
            raise GraphError(131047, "(#131047) Re-engagement message", data={
                "messaging_product": "whatsapp",
                "details": "Message failed to send because more than 24 hours have passed since the "
                           "customer last replied to this number."})
        if self.throughput is not None:
            self._recent.append(now)
        if closed:
            self.pending_statuses.append(self.wa_status_value(wamid, to, "failed", errors=[{
                "code": 131047, "title": "Re-engagement message", "message": "Re-engagement message",
                "error_data": {"details": "Message failed to send because more than 24 hours have passed "
                                          "since the customer last replied to this number."}}]))
        answer: dict[str, Any] = {"messaging_product": "whatsapp", "contacts": [{"input": to, "wa_id": to}],
                                  "messages": [{"id": wamid}]}
        if kind == "template":
            answer["messages"][0]["message_status"] = "accepted"
        return answer

    def _wa_validate(self, kind: str, body: dict[str, Any]) -> None:
        if kind == "text":
            text = (body.get("text") or {}).get("body")
            if not isinstance(text, str) or not text or len(text) > 4096:
                raise _invalid("text.body is required, at most 4096 characters")
        elif kind == "interactive":
            inter = body.get("interactive") or {}
            text = (inter.get("body") or {}).get("text")
            if not isinstance(text, str) or not text or len(text) > 1024:
                raise _invalid("interactive.body.text is required, at most 1024 characters")
            for part in ("header", "footer"):
                if part in inter and len(inter[part].get("text", "")) > 60:
                    raise _invalid(f"{part} text at most 60 characters")
            action = inter.get("action") or {}
            if inter.get("type") == "button":
                buttons = action.get("buttons") or []
                if not 1 <= len(buttons) <= 3:
                    raise _invalid("1 to 3 reply buttons")
                titles = [b["reply"]["title"] for b in buttons]
                ids = [b["reply"]["id"] for b in buttons]
                if any(not t or len(t) > 20 for t in titles) or len(set(titles)) != len(titles):
                    raise _invalid("button titles: 1 to 20 characters, unique")
                if any(not i or len(i) > 256 for i in ids) or len(set(ids)) != len(ids):
                    raise _invalid("button ids: 1 to 256 characters, unique")
            elif inter.get("type") == "list":
                button = action.get("button")
                sections = action.get("sections") or []
                rows = [r for s in sections for r in s.get("rows") or []]
                if not button or len(button) > 20:
                    raise _invalid("action.button: 1 to 20 characters")
                if not 1 <= len(sections) <= 10 or not 1 <= len(rows) <= 10:
                    raise _invalid("1 to 10 sections and 1 to 10 rows in all")
                if len(sections) > 1 and any(not s.get("title") for s in sections):
                    raise _invalid("section titles are required with more than one section")
                if any(len(s.get("title", "")) > 24 for s in sections):
                    raise _invalid("section title at most 24 characters")
                for r in rows:
                    if not r.get("id") or len(r["id"]) > 200 or not r.get("title") or len(r["title"]) > 24 \
                            or len(r.get("description", "")) > 72:
                        raise _invalid("row id ≤ 200, title 1 to 24, description ≤ 72 characters")
                if len({r["id"] for r in rows}) != len(rows):
                    raise _invalid("row ids are unique")
            else:
                raise _invalid(f"unsupported interactive type {inter.get('type')!r}")
        elif kind in ("image", "video", "audio", "document", "sticker"):
            media = body.get(kind) or {}
            if not (media.get("link") or media.get("id")):
                raise _invalid(f"{kind} needs a link or an id")
            if "caption" in media and (kind in ("audio", "sticker") or len(media["caption"]) > 1024):
                raise _invalid("caption not allowed or longer than 1024 characters")
        elif kind == "template":
            template = body.get("template") or {}
            if not template.get("name") or not (template.get("language") or {}).get("code"):
                raise _invalid("template.name and template.language.code are required")
        else:
            raise _invalid(f"unsupported message type {kind!r}")

    # ------------------------------------------------------------------ Instagram / Messenger
    def _meta_send(self, request: web.Request, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise GraphError(100, "(#100) param recipient must be non-empty.")
        recipient = body.get("recipient") or {}
        message = body.get("message")
        if not isinstance(message, dict):
            raise GraphError(100, "(#100) param message must be non-empty.")
        self._scripted()
        text = message.get("text")
        if ("text" in message) == ("attachment" in message):
            raise GraphError(100, "(#100) Exactly one of text or attachment is required")
        if text is not None:
            if not isinstance(text, str) or not text:
                raise GraphError(100, "(#100) message.text must be non-empty")
            if self.messaging == "instagram" and len(text.encode()) > 1000:
                raise GraphError(100, "(#100) Length of param message[text] must be less than or equal to 1000")
            if self.messaging == "messenger" and len(text) > 2000:
                raise GraphError(100, "(#100) Length of param message[text] must be less than or equal to 2000")
        else:
            att = message["attachment"]
            if att.get("type") not in ("image", "video", "audio", "file", "template") or not (att.get("payload") or {}):
                raise GraphError(100, "(#100) Invalid attachment")
            if self.messaging == "instagram" and att.get("type") == "file":
                raise GraphError(100, "(#100) Unsupported attachment type")
        quick = message.get("quick_replies") or []
        if len(quick) > 13 or any(q.get("content_type") == "text" and (not q.get("title") or len(q["title"]) > 20
                                                                        or len(q.get("payload", "")) > 1000)
                                  for q in quick):
            raise GraphError(100, "(#100) quick_replies: at most 13, titles 1 to 20 characters")
        now = time.time()
        if "comment_id" in recipient:
            comment = self.comments.get(str(recipient["comment_id"]))
            if comment is None:
                raise GraphError(100, "(#100) No matching comment found", subcode=2018001)
            if comment.private_replied or now - comment.at > 7 * DAY:
                raise GraphError(10, "(#10) This message is sent outside of allowed window.", subcode=2018278,
                                 type_="OAuthException")
            comment.private_replied = True
            return {"recipient_id": comment.author, "message_id": f"m_FAKE{next(self._ids):08d}"}
        customer = str(recipient.get("id") or "")
        if not customer:
            raise GraphError(100, "(#100) param recipient must be non-empty.")
        last = self.windows.get(customer)
        tagged = body.get("messaging_type") == "MESSAGE_TAG" and body.get("tag") == "HUMAN_AGENT"
        limit = 7 * DAY if tagged else DAY
        if last is None or now - last > limit:
            raise GraphError(10, "(#10) This message is sent outside of allowed window.", subcode=2018278)
        return {"recipient_id": customer, "message_id": f"m_FAKE{next(self._ids):08d}"}

    def _comment_reply(self, comment_id: str, query: Mapping[str, str]) -> dict[str, Any]:
        comment = self.comments.get(comment_id)
        if comment is None:
            raise GraphError(100, f"(#100) Unsupported post request. Object with ID '{comment_id}' does not exist",
                             subcode=33)
        message = query.get("message")
        if not message:
            raise GraphError(100, "(#100) The parameter message is required")
        self._scripted()
        reply_id = f"1787{next(self._ids):011d}"
        comment.replies.append(message)
        return {"id": reply_id}

    @property
    def comment_replies(self) -> list[tuple[str, str]]:
        return [(c.path.split("/")[2], c.query.get("message", "")) for c in self.calls
                if c.ok and c.path.endswith("/replies")]

    # ------------------------------------------------------------------ webhooks Meta posts to us
    async def post_webhook(self, url: str, payload: Any, *, signature: str | bool | None = True,
                           raw: bytes | None = None) -> tuple[int, Any]:
        """POST ``payload`` to ``url`` as Meta does. ``signature``: True (correct), False/None
        (missing) or a string (sent as is)."""
        assert self._session is not None
        body = raw if raw is not None else dumps(payload)
        headers = {"Content-Type": "application/json", "User-Agent": "facebookexternalua"}
        if signature is True:
            headers["X-Hub-Signature-256"] = sign(self.app_secret, body)
        elif isinstance(signature, str):
            headers["X-Hub-Signature-256"] = signature
        if raw is None:
            self._learn(payload)
        async with self._session.post(url, data=body, headers=headers) as resp:
            text = await resp.text()
            try:
                return resp.status, json.loads(text)
            except ValueError:
                return resp.status, text

    def _learn(self, payload: Any) -> None:
        """What Meta knows when it posts this: the customer wrote (window), or commented."""
        if not isinstance(payload, dict):
            return
        for entry in payload.get("entry") or ():
            for change in entry.get("changes") or ():
                value = change.get("value") or {}
                for msg in value.get("messages") or ():
                    self.customer_wrote(msg["from"], float(msg.get("timestamp", time.time())))
                if change.get("field") in ("comments", "live_comments"):
                    self.commented(value["id"], value["from"]["id"], value.get("text", ""),
                                   float(entry.get("time") or time.time()))
            for event in entry.get("messaging") or ():
                if ("message" in event and not event["message"].get("is_echo")) or "postback" in event:
                    self.customer_wrote(event["sender"]["id"], event.get("timestamp", time.time() * 1000) / 1000)

    @staticmethod
    def wa_status_value(wamid: str, recipient: str, status: str,
                        errors: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        item: dict[str, Any] = {"id": wamid, "status": status, "timestamp": str(int(time.time())),
                                "recipient_id": recipient}
        if errors:
            item["errors"] = errors
        else:
            item["conversation"] = {"id": "CONV1", "origin": {"type": "service"}}
            item["pricing"] = {"billable": True, "pricing_model": "PMP", "category": "service",
                               "type": "free_customer_service"}
        return item


# ---------------------------------------------------------------------- payload builders

_mids = itertools.count(1)


def wa_webhook(*, messages: list[dict[str, Any]] | None = None, statuses: list[dict[str, Any]] | None = None,
               contacts: list[dict[str, Any]] | None = None, phone_number_id: str = PHONE_NUMBER_ID) -> dict[str, Any]:
    value: dict[str, Any] = {"messaging_product": "whatsapp",
                             "metadata": {"display_phone_number": DISPLAY_NUMBER, "phone_number_id": phone_number_id}}
    if contacts:
        value["contacts"] = contacts
    if messages:
        value["messages"] = messages
    if statuses:
        value["statuses"] = statuses
    return {"object": "whatsapp_business_account",
            "entry": [{"id": WABA_ID, "changes": [{"value": value, "field": "messages"}]}]}


def wa_message(sender: str, kind: str, content: dict[str, Any], *, name: str = "Sheena Nelson",
               mid: str | None = None, context: str | None = None) -> dict[str, Any]:
    msg: dict[str, Any] = {"from": sender, "id": mid or f"wamid.IN{next(_mids):010d}",
                           "timestamp": str(int(time.time())), "type": kind, kind: content}
    if context:
        msg["context"] = {"from": DISPLAY_NUMBER, "id": context}
    return wa_webhook(messages=[msg], contacts=[{"profile": {"name": name}, "wa_id": sender}])


def wa_text(sender: str, text: str, **kw: Any) -> dict[str, Any]:
    return wa_message(sender, "text", {"body": text}, **kw)


def wa_button_reply(sender: str, payload: str, title: str, **kw: Any) -> dict[str, Any]:
    return wa_message(sender, "interactive", {"type": "button_reply", "button_reply": {"id": payload, "title": title}},
                      **kw)


def wa_list_reply(sender: str, row_id: str, title: str, description: str = "", **kw: Any) -> dict[str, Any]:
    reply = {"id": row_id, "title": title, **({"description": description} if description else {})}
    return wa_message(sender, "interactive", {"type": "list_reply", "list_reply": reply}, **kw)


def wa_template_button(sender: str, payload: str, text: str, **kw: Any) -> dict[str, Any]:
    return wa_message(sender, "button", {"payload": payload, "text": text}, **kw)


def wa_image(sender: str, media_id: str, caption: str = "", **kw: Any) -> dict[str, Any]:
    content = {"mime_type": "image/jpeg", "sha256": "c2hhMjU2", "id": media_id}
    if caption:
        content["caption"] = caption
    return wa_message(sender, "image", content, **kw)


def wa_status(wamid: str, recipient: str, status: str, errors: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return wa_webhook(statuses=[GraphFake.wa_status_value(wamid, recipient, status, errors)])


def messaging_webhook(obj: str, events: list[dict[str, Any]], entry_id: str) -> dict[str, Any]:
    return {"object": obj, "entry": [{"id": entry_id, "time": int(time.time() * 1000), "messaging": events}]}


def dm(sender: str, recipient: str, *, text: str | None = None, quick_reply: str | None = None,
       attachments: list[dict[str, Any]] | None = None, mid: str | None = None, echo: bool = False) -> dict[str, Any]:
    message: dict[str, Any] = {"mid": mid or f"aWdfZAG1{next(_mids):010d}"}
    if text is not None:
        message["text"] = text
    if quick_reply is not None:
        message["quick_reply"] = {"payload": quick_reply}
    if attachments:
        message["attachments"] = attachments
    if echo:
        message["is_echo"] = True
    return {"sender": {"id": sender}, "recipient": {"id": recipient}, "timestamp": int(time.time() * 1000),
            "message": message}


def ig_dm(sender: str, **kw: Any) -> dict[str, Any]:
    return messaging_webhook("instagram", [dm(sender, IG_ID, **kw)], IG_ID)


def ig_echo(customer: str, text: str) -> dict[str, Any]:
    return messaging_webhook("instagram", [dm(IG_ID, customer, text=text, echo=True)], IG_ID)


def ig_story_mention(sender: str,
                     url: str = "https://lookaside.fbsbx.com/ig_messaging_cdn/?asset_id=1") -> dict[str, Any]:
    return ig_dm(sender, attachments=[{"type": "story_mention", "payload": {"url": url}}])


def ig_comment(author: str, comment_id: str, text: str, *, username: str = "ana",
               media_id: str = "17900000000000001") -> dict[str, Any]:
    return {"object": "instagram", "entry": [{"id": IG_ID, "time": int(time.time()), "changes": [{
        "field": "comments", "value": {"id": comment_id, "from": {"id": author, "username": username},
                                       "text": text, "media": {"id": media_id, "media_product_type": "FEED"}}}]}]}


def ig_read(sender: str, mid: str) -> dict[str, Any]:
    return messaging_webhook("instagram", [{"sender": {"id": sender}, "recipient": {"id": IG_ID},
                                            "timestamp": int(time.time() * 1000), "read": {"mid": mid}}], IG_ID)


def fb_dm(sender: str, **kw: Any) -> dict[str, Any]:
    return messaging_webhook("page", [dm(sender, PAGE_ID, **kw)], PAGE_ID)


def fb_postback(sender: str, payload: str, title: str, mid: str | None = None) -> dict[str, Any]:
    return messaging_webhook("page", [{"sender": {"id": sender}, "recipient": {"id": PAGE_ID},
                                       "timestamp": int(time.time() * 1000),
                                       "postback": {"mid": mid or f"m_pb{next(_mids):010d}", "title": title,
                                                    "payload": payload}}], PAGE_ID)


def fb_delivery(sender: str, mids: list[str]) -> dict[str, Any]:
    return messaging_webhook("page", [{"sender": {"id": sender}, "recipient": {"id": PAGE_ID},
                                       "timestamp": int(time.time() * 1000),
                                       "delivery": {"mids": mids, "watermark": int(time.time() * 1000)}}], PAGE_ID)


# ---------------------------------------------------------------------- accounts and the app harness

def whatsapp_account(base_url: str, greeting_bot: str = "shop", **settings: Any) -> dict[str, Any]:
    return {"channel": "whatsapp", "greeting_bot": greeting_bot, "api_base_url": base_url,
            "credentials": {"access_token": TOKEN, "app_secret": APP_SECRET, "verify_token": VERIFY_TOKEN,
                            "phone_number_id": PHONE_NUMBER_ID},
            "settings": {"api_version": VERSION, "chat_interval": 0, "rate": 1000, "burst": 1000, **settings}}


def instagram_account(base_url: str, greeting_bot: str = "shop", **settings: Any) -> dict[str, Any]:
    return {"channel": "instagram", "greeting_bot": greeting_bot, "api_base_url": base_url,
            "credentials": {"access_token": TOKEN, "app_secret": APP_SECRET, "verify_token": VERIFY_TOKEN,
                            "page_id": PAGE_ID, "ig_id": IG_ID},
            "settings": {"api_version": VERSION, "chat_interval": 0, "rate": 1000, "burst": 1000, **settings}}


def messenger_account(base_url: str, greeting_bot: str = "shop", **settings: Any) -> dict[str, Any]:
    return {"channel": "messenger", "greeting_bot": greeting_bot, "api_base_url": base_url,
            "credentials": {"access_token": TOKEN, "app_secret": APP_SECRET, "verify_token": VERIFY_TOKEN,
                            "page_id": PAGE_ID},
            "settings": {"api_version": VERSION, "chat_interval": 0, "rate": 1000, "burst": 1000, **settings}}


@dataclass
class Harness(WorkerDriver):
    """Our app (web role) on loopback with the worker loops driven by the test."""

    fake: GraphFake
    server: TestServer
    services: Services
    worker: Worker
    admin: str

    def url(self, channel: str, account: str) -> str:
        return str(self.server.make_url(f"/webhooks/{channel}/{account}"))

    async def webhook(self, channel: str, account: str, payload: Any, **kw: Any) -> tuple[int, Any]:
        return await self.fake.post_webhook(self.url(channel, account), payload, **kw)

    async def state(self, cid: str) -> Any:
        from bot.store import codec
        return codec.decode_state(await self.services.store.state(cid))

    async def transcript(self, cid: str) -> list[dict[str, Any]]:
        from bot.store import codec
        return [codec.unpack(b) for _, b in await self.services.store.read_log(cid, 0, 1000)]

    async def api(self, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        assert self.fake._session is not None
        async with self.fake._session.request(method, str(self.server.make_url(path)),
                                              headers={"Authorization": f"Bearer {self.admin}"}, **kw) as r:
            return r.status, await r.json()


@contextlib.asynccontextmanager
async def running_app(redis_url: str, fake: GraphFake, accounts: dict[str, Any], flows_dir: Path,
                      **config: Any) -> AsyncIterator[Harness]:
    from bot.config import load_config
    from bot.runtime.worker import Worker
    from bot.server.app import create_app
    from bot.server.keys import SERVICES

    admin = "test-admin-token"
    cfg = load_config(env={}, overrides={"redis_url": redis_url, "flows_dir": str(flows_dir), "admin_token": admin,
                                         "timer_poll_interval": 0.05, "accounts": accounts, **config})
    app = create_app(cfg, role="web")
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        services = app[SERVICES]
        yield Harness(fake, server, services, Worker(services), admin)
    finally:
        await server.close()


def write_flow(directory: Path, flow: dict[str, Any]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{flow['id']}.json").write_text(json.dumps(flow, indent=1), encoding="utf-8")


#: The conversation the acceptance tests walk through on every channel: a public comment reply
#: when it began with a comment, 3 reply buttons, a list, a 2-second pause, an image, 5 and 13
#: options (list / quick replies / numbered text depending on the channel).
SHOP_FLOW: dict[str, Any] = {
    "format": "salesbot.flow/1", "id": "shop", "name": "Shop", "start": "origin",
    "steps": {
        "origin": {"type": "condition",
                   "branches": [{"if": {"field": "chat.origin", "op": "eq", "value": "comment"}, "next": "public"}],
                   "else": "menu"},
        "public": {"type": "comment", "text": "Thanks! We sent you a DM.", "next": "menu"},
        "menu": {"type": "message", "text": "Hi! What would you like?",
                 "buttons": [{"title": "Drinks", "next": "drinks"}, {"title": "Sizes", "next": "sizes"},
                             {"title": "Nothing", "next": "bye"}],
                 "other_answer": "sorry"},
        "sorry": {"type": "message", "text": "Please pick one of the options.", "next": "bye"},
        "drinks": {"type": "list", "header": "Menu", "text": "Pick a drink", "footer": "Prices incl. VAT",
                   "button": "Open menu",
                   "sections": [{"title": "Hot", "rows": [
                       {"id": "tea", "title": "Tea", "description": "Black or green", "next": "brew"},
                       {"id": "coffee", "title": "Coffee", "next": "brew"}]},
                       {"title": "Cold", "rows": [{"id": "lemonade", "title": "Lemonade", "next": "brew"}]}]},
        "brew": {"type": "message", "text": "One {{ message.text }} coming up.", "next": "wait"},
        "wait": {"type": "pause", "until": [{"on": "timer", "after": "2s", "next": "receipt"}]},
        "receipt": {"type": "message", "text": "Here is your receipt.",
                    "attachments": [{"kind": "image", "url": "https://example.com/receipt.jpg", "name": "receipt"}],
                    "next": "sizes"},
        "sizes": {"type": "message", "text": "Which size?",
                  "buttons": [{"title": t, "next": "flavours"} for t in ("XS", "S", "M", "L", "XL")]},
        "flavours": {"type": "message", "text": "Which flavour?",
                     "buttons": [{"title": f"Flavour {i}", "next": "thanks"} for i in range(1, 14)]},
        "thanks": {"type": "message", "text": "Thanks, {{ message.text }} it is!", "next": "bye"},
        "bye": {"type": "stop"},
    },
}

#: Business-initiated messages, for the 24-hour window: one with a template, one without.
REMIND_FLOW: dict[str, Any] = {
    "format": "salesbot.flow/1", "id": "remind", "name": "Reminder", "start": "nudge",
    "steps": {
        "nudge": {"type": "message", "text": "Your order is ready.", "template": "order_ready",
                  "next": "plain", "failed": "nudge_failed"},
        "plain": {"type": "message", "text": "Anything else?", "next": "hold", "failed": "plain_failed"},
        # The run must still be active when the outbox reports the failure.
        "hold": {"type": "pause",
                 "until": [{"on": "message", "next": "done"}, {"on": "timer", "after": "1h", "next": "done"}]},
        "nudge_failed": {"type": "internal_message", "text": "template failed", "next": "plain"},
        "plain_failed": {"type": "internal_message", "text": "window closed: could not send", "next": "done"},
        "done": {"type": "stop"},
    },
}

#: A waiting question whose delivery may fail (statuses arrive while it waits).
ASK_FLOW: dict[str, Any] = {
    "format": "salesbot.flow/1", "id": "ask", "name": "Ask", "start": "ask",
    "steps": {
        "ask": {"type": "message", "text": "Still interested?", "buttons": [{"title": "Yes", "next": "done"}],
                "failed": "ask_failed", "no_answer": {"after": "1h", "next": "done"}},
        "ask_failed": {"type": "internal_message", "text": "delivery failed", "next": "done"},
        "done": {"type": "stop"},
    },
}

#: One message per conversation, for bursts.
HELLO_FLOW: dict[str, Any] = {
    "format": "salesbot.flow/1", "id": "hello", "name": "Hello", "start": "hello",
    "steps": {"hello": {"type": "message", "text": "Hello {{ contact.name }}!", "next": "done"},
              "done": {"type": "stop"}},
}

ALL_FLOWS = (SHOP_FLOW, REMIND_FLOW, ASK_FLOW, HELLO_FLOW)


def write_flows(directory: Path) -> Path:
    for flow in ALL_FLOWS:
        write_flow(directory, flow)
    return directory
