"""Outward actions of flows: ``send_webhook``, ``send_email``, ``create_form``, ``meta_conversion``.

``OutwardActions`` is the ``outward`` of ``ServerRequests``: it gets the action's parameters
already rendered by the interpreter and returns the value the step keeps (the webhook's
response, ``{"url": …}`` of a form, …). The conversation waits for it (its turn holds the
conversation's lock), so every call has a timeout.

Failures raise ``ActionFailed`` / ``ActionRefused`` and the run takes the step's ``failed``
branch (without one, the error is logged and the run goes on at ``next``). They are *permanent*:
the runtime does not retry an outward action, since the flow usually needs the answer now and a
late webhook or e-mail can do more harm than none. A flow that wants retries loops through a
``pause``. See docs/crm.md, "Outward actions".

Every e-mail the mail server accepts for a lead is reported as the lead's ``email.sent`` through
``OutwardActions.events`` (the lead queues, ``LeadEvents``; bot.outward does not import the
runtime), so rules can react to a flow's or a rule's e-mails.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time
import uuid
from collections.abc import Mapping
from email.utils import formataddr
from typing import TYPE_CHECKING, Any, Protocol

import aiohttp
from redis.asyncio import Redis
from redis.exceptions import RedisError

from crm_bridge import CrmBackend, CrmRef
from crm_bridge.card import card_of
from crm_bridge.directory import CrmDirectory

from ..builder.durations import DurationError, parse_duration
from ..engine.state import ConversationState
from ..errors import ActionFailed, ActionRefused, CrmError
from .email import (
    SUPPRESSED,
    SmtpSender,
    TemplateLibrary,
    UnsubscribeTokens,
    compose,
    fold_email,
    render_template,
)
from .forms import Forms
from .lists import EMAIL_LIST, ContactLists
from .netguard import GuardedResolver, WebhookPolicy, refused_cause
from .tracking import EmailTracking

if TYPE_CHECKING:
    from ..config import Config

log = logging.getLogger("salesbot.outward.actions")

USER_AGENT = "salesbot-webhook/1"


async def signing_secret(redis: Redis, config: Config) -> bytes:
    """``[actions] secret``, or one generated once and kept in the store."""
    if config.actions.secret is not None:
        return config.actions.secret.get_secret_value().encode()
    await redis.set("sb:actions:secret", secrets.token_urlsafe(32), nx=True)
    stored = await redis.get("sb:actions:secret")
    return stored if isinstance(stored, bytes) else str(stored).encode()


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def normalized_phone(phone: str) -> str | None:
    """Digits with the country code, as Meta hashes them (``+90 555 111 22 33`` -> ``905551112233``)."""
    import phonenumbers  # on first use: off the start path

    try:
        parsed = phonenumbers.parse(phone, None)
        return f"{parsed.country_code}{parsed.national_number}"
    except phonenumbers.NumberParseException:
        digits = "".join(c for c in phone if c.isdigit()).lstrip("0")
        return digits or None


class LeadEvents(Protocol):
    """Where an outward action reports what it did to a lead (``email.sent``): the lead queues,
    ``bot.runtime.leads.LeadService``. The event is stored before this returns and handled in
    the background, so the action never waits on the rules."""

    async def emit(self, type_: str, lead_id: str, *, id_: str, data: Mapping[str, Any], contact_id: str | None,
                   source: str, depth: int) -> None: ...


def crm_ref_of(state: ConversationState) -> CrmRef | None:
    """The CRM records the conversation loop attached to the state."""
    if not state.crm or not state.crm.get("lead_id"):
        return None
    return CrmRef(state.crm["contact_id"], state.crm["lead_id"], state.crm.get("company_id") or None)


class OutwardActions:
    def __init__(self, *, config: Config, redis: Redis, crm: CrmBackend, secret: bytes,
                 directory: CrmDirectory | None = None, public_url: str) -> None:
        self.config = config
        self.redis = redis
        self.crm = crm
        self.directory = directory
        self.public_url = public_url.rstrip("/")
        self.policy = WebhookPolicy(allow_private=config.actions.allow_private_webhooks,
                                    allowlist=config.actions.webhook_allowlist)
        self.tokens = UnsubscribeTokens(secret)
        # Links of e-mails sent while tracking was on keep working when it is switched off.
        self.tracking = EmailTracking(self.tokens, self.public_url, enabled=config.actions.email_tracking)
        self.templates = TemplateLibrary(config.actions.email_templates, config.actions.email_templates_dir)
        self.smtp = SmtpSender(config.smtp)
        self.forms = Forms(redis, crm, public_url=public_url, ttl_days=config.actions.form_ttl_days,
                           directory=directory)
        self._webhooks: aiohttp.ClientSession | None = None
        self._http: aiohttp.ClientSession | None = None
        #: Where ``email.sent`` goes (the lead queues); None: nowhere (set by the server's wiring).
        self.events: LeadEvents | None = None

    async def close(self) -> None:
        for session in (self._webhooks, self._http):
            if session is not None:
                await session.close()

    def _webhook_session(self) -> aiohttp.ClientSession:
        if self._webhooks is None:
            connector = aiohttp.TCPConnector(resolver=GuardedResolver(self.policy), limit=100)
            self._webhooks = aiohttp.ClientSession(connector=connector, headers={"User-Agent": USER_AGENT})
        return self._webhooks

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15))
        return self._http

    async def __call__(self, command: dict[str, Any], state: ConversationState) -> Any:
        do = command.get("do")
        handler = getattr(self, f"_{do}", None)
        if do not in ("send_webhook", "send_email", "create_form", "meta_conversion") or handler is None:
            raise ActionRefused(f"unknown outward action {do!r}")
        return await handler(command, state)

    async def _snapshot(self, state: ConversationState) -> tuple[CrmRef, dict[str, Any]]:
        ref = crm_ref_of(state)
        if ref is None:
            raise ActionRefused("this conversation has no CRM lead")
        try:
            return ref, dict(await self.crm.snapshot(ref))
        except CrmError as exc:
            raise ActionFailed(f"the CRM could not be read: {exc}") from None

    # ------------------------------------------------------------------ send_webhook
    async def _send_webhook(self, command: dict[str, Any], state: ConversationState) -> Any:
        url = str(command.get("url") or "").strip()
        method = str(command.get("method") or "POST").upper()
        try:
            timeout = float(parse_duration(command.get("timeout", 10)))
        except DurationError as exc:
            raise ActionRefused(f"send_webhook: timeout: {exc}") from None
        timeout = max(1.0, min(timeout, self.config.actions.webhook_max_timeout))
        await self.policy.check_url(url)
        headers = {str(k): str(v) for k, v in (command.get("headers") or {}).items()}
        body = command.get("body")
        kwargs: dict[str, Any] = {}
        if body is not None and body != "":
            if method == "GET" and isinstance(body, Mapping):
                kwargs["params"] = {str(k): "" if v is None else str(v) for k, v in body.items()}
            elif isinstance(body, (Mapping, list, int, float, bool)):
                kwargs["data"] = json.dumps(body, ensure_ascii=False, default=str).encode()
                headers.setdefault("Content-Type", "application/json")
            else:
                kwargs["data"] = str(body).encode()
                headers.setdefault("Content-Type", "text/plain; charset=utf-8")
        limit = self.config.actions.webhook_max_response
        started = time.monotonic()
        try:
            async with self._webhook_session().request(
                method, url, headers=headers, allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=timeout), **kwargs,
            ) as response:
                raw = await response.content.read(limit + 1)
                status, content_type = response.status, response.content_type
                charset = response.charset or "utf-8"
        except TimeoutError:
            raise ActionFailed(f"send_webhook: {url} did not answer within {timeout:g}s") from None
        except aiohttp.ClientError as exc:
            if refused_cause(exc):
                raise ActionRefused(f"send_webhook: {url} resolves to a private, loopback or link-local address; "
                                    "allow it with [actions] allow_private_webhooks or webhook_allowlist") from None
            raise ActionFailed(f"send_webhook: {url}: {type(exc).__name__}: {exc}") from None
        log.info("webhook.sent", extra={"status": status, "ms": round((time.monotonic() - started) * 1000)})
        if len(raw) > limit:
            raise ActionFailed(f"send_webhook: the response is larger than {limit} bytes")
        if not 200 <= status < 300:
            raise ActionFailed(f"send_webhook: {url} answered HTTP {status}")
        text = raw.decode(charset, errors="replace")
        if content_type == "application/json" or content_type.endswith("+json"):
            try:
                return json.loads(text) if text.strip() else None
            except ValueError:
                return text
        return text

    # ------------------------------------------------------------------ send_email
    async def _send_email(self, command: dict[str, Any], state: ConversationState) -> Any:
        if not self.config.smtp.host:
            raise ActionRefused("send_email is not configured on this server ([smtp] host)")
        ref, snapshot = await self._snapshot(state)
        contacts = [snapshot.get("contact") or {}]
        if command.get("to") == "all_contacts" and self.directory is not None:
            contacts = await self.directory.lead_contacts(ref.lead_id) or contacts
        with_email = [c for c in contacts if c.get("email")]
        if not with_email:
            raise ActionRefused("send_email: nobody to e-mail (the contact has no e-mail address)")
        folded = [fold_email(str(c["email"])) for c in with_email]
        suppressed = await self.redis.smismember(SUPPRESSED, folded)
        recipients = [c for c, s in zip(with_email, suppressed, strict=True) if not s and not c.get("unsubscribed")]
        skipped = [str(c["email"]) for c in with_email if c not in recipients]
        sender, reply_to = self._sender(command.get("sender"), snapshot)
        run_vars = dict(state.run.vars) if state.run else {}
        messages, outgoing = [], []
        for contact in recipients:
            token = self.tokens.make(str(contact.get("id") or ""), str(contact["email"]))
            link = f"{self.public_url}/unsubscribe/{token}" if command.get("unsubscribe_link", True) else None
            subject, text, html, mentions = self._content(command.get("template"), contact, snapshot, run_vars, link)
            message = secrets.token_urlsafe(9)  # this e-mail's id: its tracking tokens' and its email.sent's
            if html is not None and self.tracking.enabled:
                html = self.tracking.instrument(html, lead_id=ref.lead_id, contact_id=str(contact.get("id") or ""),
                                                message=message, keep=(f"{self.public_url}/unsubscribe/",))
            messages.append(compose(sender=sender, reply_to=reply_to, to=str(contact["email"]), subject=subject,
                                    text=text, html=html, unsubscribe_url=link, mentions_link=mentions))
            outgoing.append((contact, message))
        refused = await self.smtp.send(messages) if messages else {}
        sent = [m["To"] for m in messages if m["To"] not in refused]
        if messages and not sent:
            raise ActionFailed(f"send_email: the mail server refused every recipient: {refused}")
        log.info("email.sent", extra={"sent": len(sent), "skipped": len(skipped)})
        for msg, (contact, message) in zip(messages, outgoing, strict=True):
            if msg["To"] not in refused:
                await self._report_sent(command, ref.lead_id, contact, message, str(msg["Subject"]))
        return {"sent": sent, "skipped": skipped, "refused": sorted(refused)}

    async def _report_sent(self, command: Mapping[str, Any], lead_id: str, contact: Mapping[str, Any],
                           message: str, subject: str) -> None:
        """The lead's ``email.sent`` for one accepted e-mail. Its id comes from the e-mail's id (one
        event per e-mail); its ``depth`` is the command's (a rule's action is one deeper than its
        event), so rules that send e-mails on ``email.sent`` stop at the loop guard. The e-mail is
        gone: a store failure here is logged, the action does not fail."""
        if self.events is None:
            return
        template = command.get("template")
        depth = command.get("depth")
        data = {"to": str(contact["email"]), "subject": subject, "message": message,
                "template": template if isinstance(template, str) else None}
        try:
            await self.events.emit("email.sent", lead_id, id_=f"email:{message}:sent", data=data,
                                   contact_id=str(contact.get("id") or "") or None, source="email",
                                   depth=depth if isinstance(depth, int) and not isinstance(depth, bool) else 0)
        except (RedisError, OSError) as exc:
            log.warning("email.sent_event_failed", extra={"lead": lead_id, "error": type(exc).__name__})

    def _sender(self, sender: Any, snapshot: Mapping[str, Any]) -> tuple[str, str | None]:
        address = self.config.smtp.sender
        uid = (snapshot.get("lead") or {}).get("responsible") if sender in (None, "responsible") else (
            None if sender == "shared" else sender)
        user = next((u for u in self.config.embedded_crm.users if uid is not None and u.id == str(uid)), None)
        if user is None:
            return address, None
        return formataddr((user.name, address)) if user.name else address, user.email

    def _content(self, template: Any, contact: dict[str, Any], snapshot: Mapping[str, Any],
                 run_vars: dict[str, Any], link: str | None) -> tuple[str, str | None, str | None, bool]:
        if isinstance(template, Mapping):  # inline: rendered by the interpreter already
            return str(template.get("subject") or ""), str(template.get("body") or ""), None, False
        named = self.templates.get(str(template or ""))
        context = {"contact": {**card_of(contact), **contact}, "lead": snapshot.get("lead") or {},
                   "company": snapshot.get("company") or {}, "vars": run_vars, "unsubscribe_url": link or ""}
        text = None if named.text is None else render_template(named.text, context)
        html = None if named.html is None else render_template(named.html, context)
        return render_template(named.subject, context), text, html, named.mentions_link

    async def unsubscribe(self, token: str) -> tuple[str, bool] | None:
        """Honours an unsubscribe link: (address, first use) or None for a forged token."""
        found = self.tokens.read(token)
        if found is None:
            return None
        contact_id, address = found
        first = bool(await self.redis.set(UnsubscribeTokens.used_key(token), "1", nx=True, ex=400 * 86400))
        await self.redis.sadd(SUPPRESSED, fold_email(address))
        if self.directory is not None and contact_id:
            await self.directory.set_unsubscribed(contact_id)
        if contact_id:  # the contact's lists (docs/processes.md): processes send it no more e-mail
            await ContactLists(self.redis).change(contact_id, unsubscribe=[EMAIL_LIST])
        if first:
            log.info("email.unsubscribed", extra={"contact": contact_id})
        return address, first

    # ------------------------------------------------------------------ create_form
    async def _create_form(self, command: dict[str, Any], state: ConversationState) -> Any:
        ref = crm_ref_of(state)
        if ref is None:
            raise ActionRefused("create_form: this conversation has no CRM lead")
        return await self.forms.create(command, ref, state.id)

    # ------------------------------------------------------------------ meta_conversion
    async def _meta_conversion(self, command: dict[str, Any], state: ConversationState) -> Any:
        meta = self.config.meta_conversions
        if not meta.pixel_id or meta.access_token is None:
            raise ActionRefused("meta_conversion is not configured ([meta_conversions] pixel_id, access_token)")
        ref, snapshot = await self._snapshot(state)
        contact = snapshot.get("contact") or {}
        user_data: dict[str, list[str]] = {"external_id": [sha256_hex(f"contact:{ref.contact_id}")]}
        if contact.get("email"):
            user_data["em"] = [sha256_hex(str(contact["email"]).strip().lower())]
        phone = normalized_phone(str(contact["phone"])) if contact.get("phone") else None
        if phone:
            user_data["ph"] = [sha256_hex(phone)]
        if contact.get("first_name"):
            user_data["fn"] = [sha256_hex(str(contact["first_name"]).strip().lower())]
        event: dict[str, Any] = {
            "event_name": str(command.get("event") or "Lead"), "event_time": int(time.time()),
            "event_id": uuid.uuid4().hex, "action_source": meta.action_source, "user_data": user_data,
        }
        value = command.get("value")
        if value not in (None, ""):
            try:
                amount = float(value)
            except (TypeError, ValueError):
                raise ActionRefused(f"meta_conversion: value must be a number, not {value!r}") from None
            currency = command.get("currency") or contact.get("currency") or meta.default_currency
            event["custom_data"] = {"value": amount, "currency": str(currency).upper()}
        body: dict[str, Any] = {"data": [event], "access_token": meta.access_token.get_secret_value()}
        if meta.test_event_code:
            body["test_event_code"] = meta.test_event_code
        url = f"{meta.graph_base.rstrip('/')}/{meta.pixel_id}/events"
        try:
            async with self._session().post(url, json=body) as response:
                answer = await response.json(content_type=None)
                status = response.status
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            raise ActionFailed(f"meta_conversion: {type(exc).__name__}: {exc}") from None
        if status != 200:
            message = (answer or {}).get("error", {}).get("message") if isinstance(answer, dict) else None
            raise ActionFailed(f"meta_conversion: HTTP {status}: {message or answer}")
        return {"events_received": (answer or {}).get("events_received"), "event_id": event["event_id"],
                "fbtrace_id": (answer or {}).get("fbtrace_id")}
