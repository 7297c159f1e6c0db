"""The CRM bridge interface: what the runtime needs from any CRM backend.

A backend finds or creates the contact and lead behind a channel identity, reads one
*snapshot* (lead, contact, company as plain dicts) per event for templates and conditions,
and executes the commands of the flow's CRM actions. Errors are typed
(``bot.errors.CrmRejected`` permanent, ``CrmUnavailable``/``CrmRateLimited`` temporary).

Snapshot shape (what templates see)::

    contact: {id, name, first_name, phone, email, fields: {...}, tags: [...]}
    lead:    {id, name, price, pipeline, stage, responsible, fields: {...}, tags: [...]}
    company: {id, name, fields: {...}, tags: [...]} or {}
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

#: The ``do`` names a CRM backend executes; the others are outward actions of the shell.
CRM_COMMANDS = frozenset({
    "add_note", "add_task", "complete_tasks", "change_stage", "change_responsible",
    "create_lead", "subscribers", "tags", "set_field",
})
#: Outward actions: carried out by the runtime's action services, not the CRM.
OUTWARD_ACTIONS = frozenset({"send_email", "send_webhook", "create_form", "meta_conversion"})


@dataclass(frozen=True, slots=True)
class ChannelIdentity:
    """Who wrote: the channel, the account and the platform's id for the person."""

    channel: str
    account: str
    external_id: str
    name: str | None = None
    phone: str | None = None
    email: str | None = None


@dataclass(frozen=True, slots=True)
class CrmRef:
    """The CRM records one conversation works on."""

    contact_id: str
    lead_id: str
    company_id: str | None = None


@dataclass(frozen=True, slots=True)
class CommandResult:
    value: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class CrmBackend(Protocol):
    """One CRM. Every method may raise ``CrmRejected`` or ``CrmTemporary`` subclasses."""

    name: str

    async def identify(self, identity: ChannelIdentity) -> CrmRef:
        """Find or create the contact and open lead of this identity (first stage if new)."""
        ...

    async def snapshot(self, ref: CrmRef) -> dict[str, Any]:
        """``{"contact": …, "lead": …, "company": …}`` for templates and conditions."""
        ...

    async def execute(self, ref: CrmRef, command: dict[str, Any]) -> CommandResult:
        """Carry out one command (``command["do"]`` in ``CRM_COMMANDS``)."""
        ...


@runtime_checkable
class PrefetchSnapshot(Protocol):
    """A backend whose snapshot is a few reads on the runtime's own Redis.

    The runtime sends ``snapshot_reads`` in the same round trip as the conversation's push and
    builds the snapshot with ``snapshot_from``: one round trip less per customer message.
    """

    def snapshot_reads(self, ref: CrmRef) -> list[tuple[Any, ...]]: ...

    async def snapshot_from(self, ref: CrmRef, replies: list[Any]) -> dict[str, Any]: ...


@runtime_checkable
class PrefetchIdentity(Protocol):
    """A backend whose identity lookup is a read on the runtime's own Redis.

    For a conversation it knows no lead of, the runtime sends ``identity_reads`` in the same round
    trip as the push and identifies with ``identify_from`` (which creates the contact and lead
    when the reads found none): a new session's first message saves a round trip.
    """

    def identity_reads(self, identity: ChannelIdentity) -> list[tuple[Any, ...]]: ...

    async def identify_from(self, identity: ChannelIdentity, replies: list[Any], *,
                            link: Callable[[CrmRef], list[tuple[Any, ...]]] | None = None,
                            ) -> tuple[CrmRef, list[Any] | None]:
        """The records, and when it created them, replies as ``snapshot_reads`` would give for
        them just written (the caller builds its snapshot without reading them back). ``link``:
        more writes that go with new records, in the same MULTI/EXEC (e.g. the lead's
        conversation, so the new lead's events find it); not called for records found."""
        ...

    def unused(self, replies: list[Any]) -> None:
        """The replies to ``identity_reads`` of a conversation whose records the caller knew after
        all (its metadata names them): what else the reads took (new ids) is not lost."""
        ...
