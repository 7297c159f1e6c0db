"""Lead events: the vocabulary of what can happen to a lead or contact, and the event value.

Every source (the embedded CRM's changes, Kommo webhooks, ``POST /api/events``, the trackers,
the conversations) produces the same ``LeadEvent`` once it knows which lead it concerns; the
per-lead queue orders them and the rule engine matches them (docs/automations.md, "Events").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: CRM changes (emitted by the embedded CRM, mapped from Kommo webhooks).
CRM_TYPES = frozenset({
    "lead.created", "lead.stage_changed", "lead.responsible_changed", "lead.tag_added", "lead.tag_removed",
    "lead.field_changed", "contact.created", "task.completed",
})
#: Conversations.
CHAT_TYPES = frozenset({"chat.first_message", "chat.message"})
#: Store, engagement and telephony events (sent by the API or the built-in trackers).
BUSINESS_TYPES = frozenset({
    "order.created", "order.paid", "order.shipment_approved", "order.tracking_added", "order.shipment_changed",
    "order.cancelled", "form.submitted", "email.received", "email.sent", "email.opened", "email.link_clicked",
    "call.incoming", "call.missed", "site.visit", "site.returning_visitor", "document.created", "document.opened",
})
EVENT_TYPES = CRM_TYPES | CHAT_TYPES | BUSINESS_TYPES
#: ``custom.<name>`` is open to anything else.
CUSTOM_PREFIX = "custom."
#: The shape of any type name (known or custom); ``is_known_type`` says whether it is ours.
EVENT_TYPE_PATTERN = r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+){1,3}$"
#: A lead's or contact's id as an event from outside names it (``POST /api/events``).
ID_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
#: Chains of rules (an action moves the lead, which fires another rule) stop at this depth.
MAX_DEPTH = 10


def is_known_type(name: str) -> bool:
    """A type of the spec, or ``custom.<name>``."""
    return name in EVENT_TYPES or (name.startswith(CUSTOM_PREFIX) and len(name) > len(CUSTOM_PREFIX))


@dataclass(frozen=True, slots=True)
class LeadEvent:
    """One event about one lead, as the per-lead queue holds it.

    ``id`` is the idempotency key (seen once in 7 days); ``at`` when it happened (epoch
    seconds); ``depth`` how many rule actions led to it (0 for the outside world), so loops
    stop at ``MAX_DEPTH``; ``source`` who produced it (``api``, ``crm``, ``kommo``, ``chat``,
    ``tracker``, ``automation``), for the lead card's history.
    """

    id: str
    type: str
    at: float
    lead_id: str
    contact_id: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    depth: int = 0
    source: str = "api"


@dataclass(frozen=True, slots=True)
class ApplyRule:
    """``apply_to_existing``: rule ``rule_id`` acts once for this lead as if its event happened
    now. ``job`` names the run of the job (a redelivered one does nothing). The shell's own
    event, here rather than in ``effects`` so the lead queues carry it without loading the
    engine's effects (issue 14: startup)."""

    rule_id: str
    job: str = ""
