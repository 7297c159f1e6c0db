"""The fake Graph API itself: the WhatsApp Cloud and Instagram / Messenger Send API rules, what Meta
knows of each customer (24-hour windows, comments), every call it received, and the webhooks it
posts to our server."""

from __future__ import annotations

import hmac
import itertools
import json
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Self

from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer

from .meta import APP_SECRET, DAY, IG_ID, PAGE_ID, PHONE_NUMBER_ID, TOKEN, dumps, sign


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

    async def __aenter__(self) -> Self:
        """Started for a ``with`` block, closed at its end (as the Telegram and Twilio fakes)."""
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

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

