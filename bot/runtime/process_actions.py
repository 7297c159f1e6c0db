"""The process actions as the server answers them (``bot.runtime.requests.ServerRequests``).

``start_process``, ``lists``, ``notify``, ``send_sms`` and ``send_message`` are answered here;
``score`` becomes the CRM's ``set_field`` of ``contact.score`` (``bot.engine.process.score_command``) and goes the
way of every CRM command; ``end_process`` never leaves the interpreter. Valid in every flow and
in automation rules (``do.actions``), not only in processes: a rule's or a chat flow's
``send_message`` writes to the contact the same way.

``send_sms`` / ``send_message`` write in the contact's own conversation on ``account``
(``OutboundService.reach``: its identity there, or its phone for WhatsApp, Twilio and SMS) as a
``Relayed`` message, deduplicated by the conversation and request that asked (a turn redone
after a crash sends nothing twice). On WhatsApp outside the 24-hour window (no customer message
in that conversation for 24 hours, or never) a ``send_message`` with a ``template`` is sent as
that template, one without fails with ``outside_window`` (the step's ``failed`` branch).
Failures are ``ActionFailed`` / ``ActionRefused``: the step's ``failed`` branch, never retried.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..engine.process import EMAIL_LIST, PROCESS_ANSWERED
from ..engine.state import ConversationState
from ..engine.transcript import outbound_entry
from ..errors import ActionFailed, ActionRefused, SalesbotError
from ..outward.actions import crm_ref_of
from ..outward.email import SmtpSender, compose
from ..outward.lists import ContactLists
from .outbound import Contact, OutboundService, UnknownAccount
from .processes import Processes

if TYPE_CHECKING:
    from ..config import AccountConfig, SmtpConfig

log = logging.getLogger("salesbot.processes.actions")

#: The actions answered here.
ANSWERED = PROCESS_ANSWERED
#: Channels ``send_sms`` may use.
SMS_CHANNELS = frozenset({"twilio", "sms"})
#: WhatsApp's customer-service window.
WINDOW = 24 * 3600
OUTSIDE_WINDOW = "outside_window"


class ProcessActions:
    def __init__(self, *, processes: Processes, outbound: OutboundService | None, lists: ContactLists,
                 accounts: Mapping[str, AccountConfig], smtp: SmtpConfig,
                 unsubscribe: Callable[[str], Any] | None = None, clock: Callable[[], float] = time.time) -> None:
        self.processes = processes
        self.outbound = outbound
        self.lists = lists
        self.accounts = accounts
        self.smtp_config = smtp
        self.smtp = SmtpSender(smtp)
        #: Marks the contact unsubscribed in the CRM (the embedded CRM's ``set_unsubscribed``).
        self.unsubscribe = unsubscribe
        self.clock = clock

    async def unsubscribed(self, state: ConversationState, snapshot: Mapping[str, Any]) -> bool:
        """Whether the conversation's contact unsubscribed from e-mail: its ``email`` list (the
        ``lists`` action, the unsubscribe link), or the CRM's own flag on the contact."""
        if (snapshot.get("contact") or {}).get("unsubscribed"):
            return True
        ref = crm_ref_of(state)
        return ref is not None and await self.lists.unsubscribed(ref.contact_id, EMAIL_LIST)

    async def __call__(self, request_id: str, command: dict[str, Any], state: ConversationState) -> Any:
        do = command.get("do")
        if do == "notify":
            return await self._notify(command)
        ref = crm_ref_of(state)
        if ref is None:
            raise ActionRefused(f"{do}: this conversation has no CRM contact")
        if do == "lists":
            subscribe = [str(x) for x in command.get("subscribe") or ()]
            unsubscribe = [str(x) for x in command.get("unsubscribe") or ()]
            lists = await self.lists.change(ref.contact_id, subscribe=subscribe, unsubscribe=unsubscribe)
            if EMAIL_LIST in unsubscribe and self.unsubscribe is not None:
                await self.unsubscribe(ref.contact_id)
            return {"lists": lists}
        if self.outbound is None:  # pragma: no cover - every server builds it
            raise ActionRefused(f"{do} is not available on this server")
        try:
            contact = await self.outbound.find_contact(contact_id=ref.contact_id, lead_id=ref.lead_id)
        except SalesbotError as exc:
            raise ActionFailed(f"{do}: {exc}") from None
        key = f"{state.id}:{state.run.id if state.run else ''}:{request_id}"
        if do == "start_process":
            variables = command.get("variables")
            started = await self.processes.start(str(command.get("process")), contact,
                                                 variables=variables if isinstance(variables, dict) else None,
                                                 key=key)
            return {"conversation": started.conversation, "status": started.status}
        if do in ("send_sms", "send_message"):
            return await self._send(do, command, contact, key, state)
        raise ActionRefused(f"unknown process action {do!r}")

    async def _send(self, do: str, command: Mapping[str, Any], contact: Contact, key: str,
                    state: ConversationState) -> Any:
        assert self.outbound is not None
        account = str(command.get("account") or "")
        acc = self.accounts.get(account)
        if acc is None:
            raise ActionRefused(f"{do}: no channel account {account!r}")
        if do == "send_sms" and acc.channel not in SMS_CHANNELS:
            raise ActionRefused(f"send_sms: account {account!r} is a {acc.channel} account, not SMS")
        try:
            found = await self.outbound.reach(account, contact)
        except UnknownAccount as exc:
            raise ActionRefused(f"{do}: {exc}") from None
        if isinstance(found, str):
            raise ActionFailed(f"{do}: the contact cannot be reached: {found}")
        cid, where, meta = found
        template = command.get("template") if do == "send_message" else None
        if acc.channel == "whatsapp" and not template:
            last = _number(meta.get("last_inbound_at"))
            if last is None or self.clock() - last >= WINDOW:
                raise ActionFailed(f"{OUTSIDE_WINDOW}: {do}: WhatsApp's 24-hour window is closed for this contact "
                                   "and the action has no template")
        from ..engine.effects import SendMessage  # with the interpreter (issue 14: startup)
        from ..messages import OutButton

        buttons = tuple(OutButton(str(b.get("title") or ""), None if b.get("url") else str(b.get("title") or ""),
                                  str(b["url"]) if b.get("url") else None)
                        for b in command.get("buttons") or () if isinstance(b, Mapping))
        message = SendMessage(ref=f"p:{key}", step=state.run.step or "" if state.run else "",
                                 text=str(command.get("text") or ""), buttons=buttons,
                                 template=str(template) if template else None,
                                 params=command.get("params") if template else None)
        entry = outbound_entry(message, self.clock(), bot=state.run.bot if state.run else None)
        entry["process"] = state.run.bot if state.run else ""
        await self.outbound.send_in(cid, where, contact, entry, source=state.id, dedupe_id=f"process-msg:{key}")
        log.info("process.message_sent", extra={"do": do, "account": account, "contact": contact.id})
        return {"conversation": cid, "account": account}

    async def _notify(self, command: Mapping[str, Any]) -> Any:
        if not self.smtp_config.host:
            raise ActionRefused("notify is not configured on this server ([smtp] host)")
        to = [str(a) for a in command.get("to") or ()][:5]
        subject = str(command.get("subject") or "Salesbot notification")[:300]  # (compose keeps it one line)
        messages = [compose(sender=self.smtp_config.sender, reply_to=None, to=address, subject=subject,
                            text=str(command.get("text") or ""), html=None, unsubscribe_url=None,
                            mentions_link=False) for address in to]
        refused = await self.smtp.send(messages)
        if len(refused) == len(messages):
            raise ActionFailed(f"notify: the mail server refused every recipient: {refused}")
        log.info("process.notified", extra={"sent": len(messages) - len(refused)})
        return {"sent": [a for a in to if a not in refused], "refused": sorted(refused)}


def _number(value: Any) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None
