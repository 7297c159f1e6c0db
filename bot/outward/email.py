"""``send_email``: Jinja2 templates, recipients from the CRM, unsubscribe links, SMTP.

A template is named (``[actions.email_templates.<name>]`` in the config, or the files
``<name>.txt`` / ``<name>.html`` in ``email_templates_dir``, each starting with a ``Subject: …``
line and a blank line) or inline in the flow (``{"subject", "body"}``, rendered by the
interpreter like every action value). Named templates are rendered here, once per recipient,
in a sandbox, with ``contact`` (that recipient), ``lead``, ``company``, ``vars`` and
``unsubscribe_url``; ``.html`` templates are auto-escaped.

Each recipient gets a message of their own with a signed unsubscribe link
(``GET``/``POST /unsubscribe/<token>``) in the body and in ``List-Unsubscribe`` (with
``List-Unsubscribe-Post`` for one-click, RFC 8058). Opening the link marks the contact
unsubscribed and adds the address to the store's suppression set; ``send_email`` skips both.
An HTML message also gets an open pixel and tracked links (``tracking.py``), signed the same way.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import re
import time
from collections.abc import Mapping
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ActionFailed, ActionRefused

if TYPE_CHECKING:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    from ..config import EmailTemplateConfig, SmtpConfig

SUPPRESSED = "sb:email:unsubscribed"  # set of folded e-mail addresses that unsubscribed
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_USED_TTL = 400 * 86400
#: The kind (``k``) of an unsubscribe token: the default, unsubscribe tokens have no ``k``.
UNSUBSCRIBE = "u"


def fold_email(address: str) -> str:
    return address.strip().lower()


class SignedTokens:
    """``<payload>.<signature>``: base64url JSON signed with HMAC-SHA256 (cut to 144 bits).

    One mechanism for every link the server signs (unsubscribe links, e-mail open pixels and
    click redirects): the payload's ``k`` names the kind, checked on reading, so a genuine token
    of one kind is never accepted as another. Unsubscribe tokens carry no ``k`` (the links in
    e-mails sent before tracking existed keep working)."""

    def __init__(self, secret: bytes) -> None:
        self.secret = secret

    def _sign(self, payload: bytes) -> str:
        digest = hmac.new(self.secret, payload, hashlib.sha256).digest()[:18]
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def dump(self, data: Mapping[str, Any]) -> str:
        payload = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
        return base64.urlsafe_b64encode(payload).decode().rstrip("=") + "." + self._sign(payload)

    def load(self, token: str, kind: str) -> dict[str, Any] | None:
        """The payload of a genuine token of ``kind``; None for a forged, damaged or other one."""
        body, _, signature = token.partition(".")
        try:
            payload = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except ValueError:
            return None
        if not signature or not hmac.compare_digest(self._sign(payload), signature):
            return None
        try:
            data = json.loads(payload)
        except ValueError:
            return None
        if not isinstance(data, dict) or data.get("k", UNSUBSCRIBE) != kind:
            return None
        return data


class UnsubscribeTokens(SignedTokens):
    """Unsubscribe links: the contact and the address."""

    def make(self, contact_id: str, email: str, *, now: float | None = None) -> str:
        return self.dump({"c": contact_id, "e": email, "t": int(now or time.time())})

    def read(self, token: str) -> tuple[str, str] | None:
        """The (contact id, address) of a genuine token; None for a forged or damaged one."""
        data = self.load(token, UNSUBSCRIBE)
        return None if data is None else (str(data.get("c", "")), str(data.get("e", "")))

    @staticmethod
    def used_key(token: str) -> str:
        return f"sb:unsub:used:{hashlib.sha256(token.encode()).hexdigest()[:32]}"


@functools.cache
def _environment(html: bool) -> ImmutableSandboxedEnvironment:
    """Built with the first template: jinja2 is imported by the first e-mail, not at start."""
    from jinja2 import ChainableUndefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    from ..builder.sandbox import make_environment

    env = ImmutableSandboxedEnvironment(undefined=ChainableUndefined, autoescape=html,
                                        finalize=lambda v: "" if v is None else v, keep_trailing_newline=True)
    env.filters["default"] = env.filters["d"] = make_environment().filters["default"]
    return env


class NamedTemplate:
    def __init__(self, subject: str, text: str | None, html: str | None) -> None:
        from jinja2 import TemplateError

        text_env, html_env = _environment(False), _environment(True)
        try:
            self.subject = text_env.from_string(subject)
            self.text = text_env.from_string(text) if text is not None else None
            self.html = html_env.from_string(html) if html is not None else None
        except TemplateError as exc:
            raise ActionRefused(f"send_email: the template does not compile: {exc}") from None
        self.mentions_link = "unsubscribe_url" in (text or "") + (html or "")


def _split_subject(source: str, path: Path) -> tuple[str, str]:
    first, _, rest = source.partition("\n")
    if not first.lower().startswith("subject:"):
        raise ActionRefused(f"send_email: {path} must start with a 'Subject: …' line")
    return first.split(":", 1)[1].strip(), rest.lstrip("\n")


class TemplateLibrary:
    """Named templates from the config and the templates folder, compiled on first use."""

    def __init__(self, configured: Mapping[str, EmailTemplateConfig], directory: Path | None) -> None:
        self.configured = dict(configured)
        self.directory = directory
        self._cache: dict[str, NamedTemplate] = {}

    def get(self, name: str) -> NamedTemplate:
        if name in self._cache:
            return self._cache[name]
        if name in self.configured:
            t = self.configured[name]
            if t.text is None and t.html is None:
                raise ActionRefused(f"send_email: template {name!r} has neither text nor html")
            template = NamedTemplate(t.subject, t.text, t.html)
        else:
            template = self._from_files(name)
        self._cache[name] = template
        return template

    def _from_files(self, name: str) -> NamedTemplate:
        if self.directory is None or not _NAME.match(name):
            raise ActionRefused(f"send_email: no e-mail template named {name!r}")
        text_path, html_path = self.directory / f"{name}.txt", self.directory / f"{name}.html"
        subject, text, html = None, None, None
        if text_path.is_file():
            subject, text = _split_subject(text_path.read_text(encoding="utf-8"), text_path)
        if html_path.is_file():
            html_subject, html = _split_subject(html_path.read_text(encoding="utf-8"), html_path)
            subject = subject or html_subject
        if subject is None:
            raise ActionRefused(f"send_email: no e-mail template named {name!r} in {self.directory}")
        return NamedTemplate(subject, text, html)


def render_template(template: Any, context: Mapping[str, Any]) -> str:
    from jinja2 import TemplateError

    try:
        return str(template.render(context))
    except (TemplateError, ArithmeticError, TypeError, ValueError) as exc:
        raise ActionFailed(f"send_email: the template failed: {exc}") from None


def compose(*, sender: str, reply_to: str | None, to: str, subject: str, text: str | None,
            html: str | None, unsubscribe_url: str | None, mentions_link: bool) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    if reply_to:
        msg["Reply-To"] = reply_to
    msg["Subject"] = " ".join(subject.split())
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2].strip("> ") or None)
    if unsubscribe_url:
        msg["List-Unsubscribe"] = f"<{unsubscribe_url}>"
        msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        if not mentions_link:
            if text is not None:
                text = text.rstrip() + f"\n\n--\nTo stop receiving these e-mails: {unsubscribe_url}\n"
            if html is not None:
                from markupsafe import escape

                link = f'<p style="font-size:12px;color:#666"><a href="{escape(unsubscribe_url)}">Unsubscribe</a></p>'
                html = html.replace("</body>", link + "</body>") if "</body>" in html else html + link
    msg.set_content(text if text is not None else "This message is HTML only.")
    if html is not None:
        msg.add_alternative(html, subtype="html")
    return msg


class SmtpSender:
    """One SMTP connection per ``send_email`` action, every recipient's message over it."""

    def __init__(self, config: SmtpConfig) -> None:
        self.config = config

    async def send(self, messages: list[EmailMessage]) -> dict[str, str]:
        """Sends; returns the addresses the server refused (address -> reply)."""
        import aiosmtplib  # on first use: off the start path

        c = self.config
        password = c.password.get_secret_value() if c.password else None
        client = aiosmtplib.SMTP(hostname=c.host, port=c.port, use_tls=c.use_tls,
                                 start_tls=False if c.use_tls else c.starttls, timeout=c.timeout)
        refused: dict[str, str] = {}
        try:
            await client.connect()
            if c.username:
                await client.login(c.username, password or "")
            for msg in messages:
                errors: dict[str, Any]
                try:
                    errors, _ = await client.send_message(msg)
                except aiosmtplib.SMTPRecipientsRefused as exc:
                    errors = {r.recipient: r for r in exc.recipients}
                refused.update({addr: str(err) for addr, err in errors.items()})
            await client.quit()
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise ActionFailed(f"send_email: the mail server failed: {type(exc).__name__}: {exc}") from None
        finally:
            if client.is_connected:
                client.close()
        return refused
