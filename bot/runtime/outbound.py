"""Outbound: the bot writes first, to a contact of the CRM (the embedded one, or Kommo's).

``OutboundService.start`` picks the conversation to write in (``last``: the lead's most recent
conversation on any channel; an account name: the contact's conversation there, opened when
there is none yet; a list: the first account that can reach the contact) and delivers
``StartBot`` to it through ``ConversationService.deliver`` — the conversation's own queue, so
the run, its messages (through the outbox, with its rate limits) and the customer's replies are
those of any other conversation. A conversation it opens carries the contact and lead it was
opened for in its metadata, so its turns never ``identify`` a new contact.

How a contact is reached on an account: the identities the CRM knows it by
(``channel:account:external id``: ``crm_bridge.redis_crm.IDENTITIES``, or the lines of
Kommo's "Salesbot ID" contact field), else its phone for the phone-number channels (WhatsApp,
Twilio, SMS). Telegram, Instagram, Messenger and the live chat have no address to derive: only a
chat the contact opened reaches them. Where contacts, leads and identities are read is a
``ContactBook``: ``EmbeddedBook`` here, ``bot.runtime.outbound_kommo.KommoBook`` for Kommo.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from redis.asyncio import Redis

from crm_bridge import ChannelIdentity, CrmRef, RedisCrm
from crm_bridge.directory import CrmDirectory
from crm_bridge.indexes import leads_of

from ..engine import events as ev
from ..engine.state import ConversationState
from ..errors import SalesbotError
from ..store import keys as k
from ..store import replies
from ..store.conversations import ConversationStore, SaveRequest
from .relay import Job
from .service import lead_conversation_key

if TYPE_CHECKING:
    from ..config import AccountConfig

log = logging.getLogger("salesbot.outbound")

#: The channel value meaning "the lead's most recent conversation, on any channel".
LAST = "last"
#: Channels whose chat id derives from the contact's phone: how to write it.
PHONE_CHANNELS = {"whatsapp": "digits", "twilio": "e164", "sms": "e164"}
#: How long an idempotency key names the conversation it started (as long as a message id dedupes).
IDEMPOTENCY_TTL = 7 * 86400


class OutboundError(SalesbotError):
    """An outbound request names something that does not exist or does not fit."""


class UnknownContact(OutboundError):
    pass


class UnknownLead(OutboundError):
    pass


class UnknownAccount(OutboundError):
    pass


class LeadMismatch(OutboundError):
    """The lead given is not one of the contact's leads."""


class NoDirectory(OutboundError):
    """Outbound finds contacts in the embedded CRM or Kommo; another backend has none to search."""


@dataclass(frozen=True, slots=True)
class Started:
    conversation: str
    account: str
    opened: bool  # a conversation the bot opened (no conversation existed there)
    duplicate: bool = False  # the idempotency key was seen: nothing new was started


@dataclass(frozen=True, slots=True)
class Unreachable:
    """Nothing the caller named can reach the contact; one reason per account tried."""

    reasons: tuple[str, ...]

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)


@dataclass(frozen=True, slots=True)
class Person:
    """A contact of the CRM, with what addresses it."""

    id: str
    name: str | None
    phone: str | None
    email: str | None


@dataclass(frozen=True, slots=True)
class Contact:
    """The contact and lead a conversation is opened for, with what addresses the contact."""

    id: str
    lead_id: str
    name: str | None
    phone: str | None
    email: str | None


class ContactBook(Protocol):
    """Where outbound reads contacts, their leads and the chats they wrote from."""

    async def person(self, contact_id: str) -> Person | None: ...

    async def find(self, *, phone: str | None = None, email: str | None = None) -> Person | None:
        """The contact with this phone (else e-mail)."""
        ...

    async def lead_for(self, contact_id: str, lead_id: str | None) -> str:
        """``lead_id`` when it is one of the contact's (``UnknownLead``, ``LeadMismatch``), else the
        contact's newest lead, else a new lead in the first stage."""
        ...

    async def lead_contacts(self, lead_id: str) -> list[str]:
        """The lead's contacts, the main one first ([] when none or no such lead)."""
        ...

    async def identities(self, contact_id: str) -> list[tuple[str, str, str]]: ...

    async def attach(self, identity: ChannelIdentity, ref: CrmRef) -> None:
        """A chat the bot opened for the contact: later conversations of it find the contact."""
        ...


class EmbeddedBook:
    """The embedded CRM's contacts (``CrmDirectory``) and identities (``RedisCrm``)."""

    def __init__(self, redis: Redis, crm: RedisCrm, directory: CrmDirectory) -> None:
        self.redis = redis
        self.crm = crm
        self.directory = directory

    async def person(self, contact_id: str) -> Person | None:
        record = await self.directory.get("contact", contact_id)
        return _person(record) if record is not None else None

    async def find(self, *, phone: str | None = None, email: str | None = None) -> Person | None:
        if phone is not None:
            wanted = "".join(c for c in phone if c.isdigit())
            found, _ = await self.directory.search("contact", q=wanted)
            for r in found:
                if wanted and "".join(c for c in str(r.get("phone") or "") if c.isdigit()) == wanted:
                    return _person(r)
            return None
        if email is not None:
            found, _ = await self.directory.search("contact", q=email)
            for r in found:
                if str(r.get("email") or "").casefold() == email.strip().casefold():
                    return _person(r)
        return None

    async def lead_for(self, contact_id: str, lead_id: str | None) -> str:
        if lead_id is not None:
            lead = await self.directory.get("lead", lead_id)
            if lead is None:
                raise UnknownLead(f"no lead {lead_id!r}")
            if contact_id not in [str(c) for c in lead.get("contacts") or ()]:
                raise LeadMismatch(f"lead {lead_id!r} is not a lead of contact {contact_id!r}")
            return lead_id
        leads = (await leads_of(self.redis, [contact_id]))[contact_id]
        numeric = [lid for lid in leads if lid.isdigit()]
        newest = max(numeric, key=int) if numeric else (max(leads) if leads else None)
        if newest is None:
            newest = str((await self.directory.create_lead({}, contact_id=contact_id))["id"])
        return newest

    async def lead_contacts(self, lead_id: str) -> list[str]:
        lead = await self.directory.get("lead", lead_id)
        return [str(c) for c in (lead or {}).get("contacts") or ()]

    async def identities(self, contact_id: str) -> list[tuple[str, str, str]]:
        return await self.crm.identities(contact_id)

    async def attach(self, identity: ChannelIdentity, ref: CrmRef) -> None:
        await self.crm.attach(identity, ref)


def _person(record: Mapping[str, Any]) -> Person:
    return Person(str(record["id"]), record.get("name") or None, record.get("phone") or None,
                  record.get("email") or None)


class Deliverer(Protocol):
    async def deliver(self, cid: str, event: ev.Event, *, dedupe_id: str | None = None,
                      meta: Mapping[str, str] | None = None,
                      entry_extra: Mapping[str, Any] | None = None) -> object: ...


def chat_id_for_phone(channel: str, phone: str | None) -> str | None:
    """The platform's chat id of a phone number (E.164 digits for WhatsApp, ``+E.164`` for
    Twilio and SMS); None when the number is missing or not in international form."""
    style = PHONE_CHANNELS.get(channel)
    if style is None or not phone:
        return None
    import phonenumbers  # on first use: off the start path
    try:
        parsed = phonenumbers.parse(phone, None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(parsed):
        return None
    e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    return e164.lstrip("+") if style == "digits" else e164


class OutboundService:
    def __init__(self, *, redis: Redis, store: ConversationStore, conversations: Deliverer,
                 accounts: Mapping[str, AccountConfig], book: ContactBook | None) -> None:
        self.redis = redis
        self.store = store
        self.conversations = conversations
        self.accounts = accounts
        self.book = book

    # ------------------------------------------------------------------ who
    async def find_contact(self, *, contact_id: str | None = None, phone: str | None = None,
                           email: str | None = None, lead_id: str | None = None) -> Contact:
        """The contact (by id, phone or e-mail) and its lead: ``lead_id`` (which must be one of the
        contact's), else its newest lead, else a new lead in the first stage."""
        book = self.book
        if book is None:
            raise NoDirectory("outbound needs a CRM it can search for contacts ([crm] backend = "
                              "\"embedded\" or \"kommo\")")
        if contact_id is not None:
            person = await book.person(contact_id)
            if person is None:
                raise UnknownContact(f"no contact {contact_id!r}")
        elif phone is not None or email is not None:
            person = await book.find(phone=phone, email=email)
            if person is None:
                raise UnknownContact(f"no contact with phone {phone!r}" if phone is not None
                                     else f"no contact with e-mail {email!r}")
        else:
            raise UnknownContact("no contact named (id, phone or email)")
        lead = await book.lead_for(person.id, lead_id)
        return Contact(person.id, lead, person.name, person.phone, person.email)

    # ------------------------------------------------------------------ where
    async def _identities(self, contact_id: str) -> list[tuple[str, str, str]]:
        return await self.book.identities(contact_id) if self.book is not None else []

    async def _last(self, contact: Contact) -> str | None:
        """The most recently active conversation of the lead or of its contact (any channel)."""
        candidates: list[str] = []
        found = await self.redis.hget(lead_conversation_key(contact.lead_id), contact.lead_id)
        if found:
            candidates.append(replies.text(found))
        candidates += [k.conversation_id(c, a, x) for c, a, x in await self._identities(contact.id)]
        candidates = list(dict.fromkeys(candidates))
        if not candidates:
            return None
        # a listed one has its activity; read together (a contact has a few channels)
        metas = list(zip(candidates, await asyncio.gather(*map(self.store.meta, candidates)), strict=True))
        alive = sorted(((float(meta["activity"]), cid, meta) for cid, meta in metas if meta.get("activity")),
                       reverse=True)
        for _, cid, meta in alive:  # the newest one the bot can write in
            if meta.get("channel") and self._writable(meta) is None:
                return cid
        return None

    def _writable(self, meta: Mapping[str, str]) -> str | None:
        """Why the bot cannot write in an existing conversation (None: it can)."""
        if meta.get("owner") == "human":
            return "a person has taken the conversation over"
        account = meta.get("account", "")
        if meta.get("channel") != "livechat" and account not in self.accounts:
            return f"its account {account!r} is no longer configured"
        return None

    async def _on_account(self, account: str, contact: Contact) -> tuple[str, str] | str:
        """``(channel, external id)`` of the contact on ``account``, or why there is none."""
        acc = self.accounts.get(account)
        if acc is None:
            raise UnknownAccount(f"no channel account {account!r}")
        for channel, name, external in await self._identities(contact.id):
            if channel == acc.channel and name == account:
                return channel, external
        if acc.channel in PHONE_CHANNELS:
            external_id = chat_id_for_phone(acc.channel, contact.phone)
            if external_id is None:
                why = "no phone" if not contact.phone else f"phone {contact.phone!r} is not in international form (+…)"
                return f"{account}: the contact has {why}"
            return acc.channel, external_id
        return f"{account}: no {acc.channel} chat of this contact is known (it must write there first)"

    # ------------------------------------------------------------------ start
    async def start(self, bot: str, channel: str | Sequence[str], contact: Contact, *,
                    variables: Mapping[str, Any] | None = None,
                    idempotency_key: str | None = None) -> Started | Unreachable:
        """Start ``bot`` for ``contact`` on the first conversation of ``channel`` that reaches it.
        Unknown account names raise ``UnknownAccount`` before anything is started."""
        names = [channel] if isinstance(channel, str) else list(channel)
        for name in names:
            if name != LAST and name not in self.accounts:
                raise UnknownAccount(f"no channel account {name!r}")
        if idempotency_key:
            known = await self.redis.get(_idempotency_key(idempotency_key))
            if known:
                seen = replies.text(known)
                return Started(seen, (await self.store.meta(seen)).get("account", ""), False, duplicate=True)
        reasons: list[str] = []
        for name in names:
            if name == LAST:
                last = await self._last(contact)
                if last is None:
                    reasons.append("last: the lead has no conversation the bot can write in")
                    continue
                cid, where = last, None
            else:
                found = await self._on_account(name, contact)
                if isinstance(found, str):
                    reasons.append(found)
                    continue
                where = (found[0], name, found[1])
                cid = k.conversation_id(*where)
                why = self._writable(await self.store.meta(cid) or {"account": name})
                if why is not None:
                    reasons.append(f"{name}: {why}")
                    continue
            return await self._start_in(cid, bot, contact, dict(variables or {}), idempotency_key, where)
        unreachable = Unreachable(tuple(reasons))
        log.warning("outbound.unreachable", extra={"bot": bot, "contact": contact.id, "lead": contact.lead_id,
                                                    "reason": unreachable.reason})
        return unreachable

    async def _start_in(self, cid: str, bot: str, contact: Contact, variables: dict[str, Any],
                        idempotency_key: str | None, where: tuple[str, str, str] | None) -> Started:
        """Deliver ``StartBot`` to ``cid``; ``where`` (channel, account, external id) opens it when
        it does not exist yet (``last`` only picks conversations that exist)."""
        meta = await self.store.meta(cid)
        opened = not meta.get("channel") and where is not None
        new_meta = await self._open_meta(cid, contact, where, meta)
        dedupe = f"outbound:{idempotency_key}" if idempotency_key else None
        result = await self.conversations.deliver(cid, ev.StartBot(bot, None, variables), dedupe_id=dedupe,
                                                  meta=new_meta)
        await self.redis.hset(lead_conversation_key(contact.lead_id), contact.lead_id, cid)
        if idempotency_key:
            await self.redis.set(_idempotency_key(idempotency_key), cid, nx=True, ex=IDEMPOTENCY_TTL)
        duplicate = bool(getattr(result, "duplicate", False))
        log.info("outbound.started", extra={"cid": cid, "bot": bot, "contact": contact.id, "lead": contact.lead_id,
                                             "opened": opened, "duplicate": duplicate})
        return Started(cid, meta.get("account") or (where[1] if where else ""), opened, duplicate)


    async def _open_meta(self, cid: str, contact: Contact, where: tuple[str, str, str] | None,
                         meta: Mapping[str, str] | None = None) -> dict[str, str]:
        """The metadata to push with the first event the bot sends ``cid``: a new conversation
        gets its channel, chat and the contact and lead it is for (and the CRM learns the chat);
        an existing one of another lead is moved to this one."""
        if meta is None:
            meta = await self.store.meta(cid)
        new_meta = {"contact_id": contact.id, "lead_id": contact.lead_id}
        if where is not None and not meta.get("channel"):
            channel, account, external = where
            new_meta.update({"channel": channel, "account": account, "external_id": external})
            for name in ("name", "phone", "email"):
                value = getattr(contact, name)
                if value:
                    new_meta[name] = str(value)
            if self.book is not None:  # a later conversation of this chat finds the same contact
                await self.book.attach(ChannelIdentity(channel, account, external),
                                       CrmRef(contact.id, contact.lead_id))
        elif meta.get("contact_id") == contact.id and meta.get("lead_id") == contact.lead_id:
            new_meta = {}
        return new_meta

    # ------------------------------------------------------------------ one message (processes)
    async def reach(self, account: str, contact: Contact) -> tuple[str, tuple[str, str, str], dict[str, str]] | str:
        """The contact's conversation on ``account`` for a message of a process: ``(cid, (channel,
        account, external id), its metadata)``, or why there is none (``UnknownAccount`` for an
        account that is not configured)."""
        found = await self._on_account(account, contact)
        if isinstance(found, str):
            return found
        where = (found[0], account, found[1])
        cid = k.conversation_id(*where)
        meta = await self.store.meta(cid)
        why = self._writable(meta or {"account": account})
        return f"{account}: {why}" if why is not None else (cid, where, dict(meta))

    async def send_in(self, cid: str, where: tuple[str, str, str], contact: Contact, entry: dict[str, Any],
                      *, source: str, dedupe_id: str) -> None:
        """Send ``entry`` (a transcript entry) in the contact's conversation ``cid`` as a ``Relayed``
        event: its transcript and outbox, the run there does not see it; ``dedupe_id`` keeps a
        redone turn from sending it twice."""
        meta = await self._open_meta(cid, contact, where)
        await self.conversations.deliver(cid, ev.Relayed(dict(entry), source), dedupe_id=dedupe_id, meta=meta)

    # ------------------------------------------------------------------ recipients
    def relay(self, state: ConversationState, recipients: str, entry: dict[str, Any], req: SaveRequest,
              logged: bytes, queued: bytes | None) -> Job:
        """See ``bot.runtime.relay.Recipients``: ``all_contacts`` sends to every contact of the
        lead, ``main_contact`` to the first; each in its own conversation on this account."""
        cid, account = state.id, state.account
        crm = state.crm or {}
        here, lead_id = str(crm.get("contact_id") or ""), str(crm.get("lead_id") or "")

        async def job() -> None:
            targets = await self._recipients(lead_id, recipients)
            if targets is None:
                return  # no lead known: the message stays in this chat only
            if here not in targets:  # this chat's contact is not a recipient: take its copy out
                with contextlib.suppress(ValueError):
                    req.log.remove(logged)
                    if queued is not None:
                        req.out.remove(queued)
            for contact_id in targets:
                if contact_id != here:
                    await self._relay_to(cid, account, contact_id, lead_id, entry)
        return job

    async def _recipients(self, lead_id: str, recipients: str) -> list[str] | None:
        if not lead_id or self.book is None:
            return None
        contacts = await self.book.lead_contacts(lead_id)
        if not contacts:
            return None
        return contacts[:1] if recipients == "main_contact" else contacts

    async def _relay_to(self, source: str, account: str, contact_id: str, lead_id: str,
                        entry: dict[str, Any]) -> None:
        person = await self.book.person(contact_id) if self.book is not None else None
        if person is None:
            return
        contact = Contact(contact_id, lead_id, person.name, person.phone, person.email)
        found = (await self._on_account(account, contact) if account in self.accounts
                 else f"{account}: the account has no chat the bot can open")  # the live chat
        if isinstance(found, str):
            log.warning("outbound.unreachable", extra={"cid": source, "contact": contact_id, "lead": lead_id,
                                                        "reason": found})
            return
        where = (found[0], account, found[1])
        cid = k.conversation_id(*where)
        meta = await self._open_meta(cid, contact, where)
        await self.conversations.deliver(cid, ev.Relayed(dict(entry), source),
                                         dedupe_id=f"relay:{source}:{entry.get('ref') or ''}", meta=meta)


def _idempotency_key(key: str) -> str:
    return f"sb:outbound:key:{key}"
