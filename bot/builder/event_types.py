"""The vocabulary of lead events (``order.paid``, ``email.opened`` …). Here, below both, because
flows (goals, pauses on an event) and automations (triggers, scoring) name the same events and
must refuse the same typos (``bot.builder.problems.unknown_event_type``); the automations'
``bot.automations.events`` re-exports it."""

from __future__ import annotations

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


def is_known_type(name: str) -> bool:
    """A type of the spec, or ``custom.<name>``."""
    return name in EVENT_TYPES or (name.startswith(CUSTOM_PREFIX) and len(name) > len(CUSTOM_PREFIX))

