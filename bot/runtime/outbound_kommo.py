"""Outbound to Kommo's contacts: the ``ContactBook`` of ``[crm] backend = "kommo"``.

A Kommo contact who wrote to us is known by the chats it wrote from (the lines of its "Salesbot
ID" field, ``channel:account:external id``; ``KommoCrm.identify`` adds them), so ``last`` and a
named account find that conversation; one who never wrote is reached by its phone (the first of
its ``PHONE`` values in international form) on WhatsApp, Twilio or SMS, as an embedded contact is. Kommo's API is asked
each time (no copy is kept): a rule's ``start_bot`` costs a few requests of Kommo's 7 a second.
"""

from __future__ import annotations

from typing import Any

from crm_bridge import ChannelIdentity, CrmRef, KommoCrm
from crm_bridge.kommo.records import multitext

from .outbound import LeadMismatch, Person, UnknownLead, chat_id_for_phone


class KommoBook:
    """Kommo's contacts, their leads and the chats they wrote from (``ContactBook``)."""

    def __init__(self, crm: KommoCrm) -> None:
        self.crm = crm

    async def person(self, contact_id: str) -> Person | None:
        record = await self.crm.contact(contact_id)
        return _person(record) if record is not None else None

    async def find(self, *, phone: str | None = None, email: str | None = None) -> Person | None:
        if phone is not None:
            record = await self.crm.contact_by_phone(phone)
        elif email is not None:
            record = await self.crm.contact_by_email(email)
        else:
            record = None
        return _person(record) if record is not None else None

    async def lead_for(self, contact_id: str, lead_id: str | None) -> str:
        if lead_id is not None:
            contacts = await self.crm.lead_contacts(lead_id)
            if contacts is None:
                raise UnknownLead(f"no lead {lead_id!r}")
            if contact_id not in contacts:
                raise LeadMismatch(f"lead {lead_id!r} is not a lead of contact {contact_id!r}")
            return lead_id
        record = await self.crm.contact(contact_id) or {}
        return await self.crm.open_lead(record) or await self.crm.new_lead(contact_id, record.get("name") or "")

    async def lead_contacts(self, lead_id: str) -> list[str]:
        return await self.crm.lead_contacts(lead_id) or []

    async def identities(self, contact_id: str) -> list[tuple[str, str, str]]:
        return await self.crm.identities(contact_id)

    async def attach(self, identity: ChannelIdentity, ref: CrmRef) -> None:
        await self.crm.attach(identity, ref)


def _person(record: dict[str, Any]) -> Person:
    """A Kommo contact; of its phones (``PHONE`` has several values), the first in international
    form (the only kind a chat can be opened with), else the first."""
    phones, emails = multitext(record, "PHONE"), multitext(record, "EMAIL")
    phone = next((p for p in phones if chat_id_for_phone("sms", p) is not None), phones[0] if phones else None)
    return Person(str(record["id"]), record.get("name") or None, phone, emails[0] if emails else None)
