"""Lead events: the vocabulary of what can happen to a lead or contact, and the event value.

Every source (the embedded CRM's changes, Kommo webhooks, ``POST /api/events``, the trackers,
the conversations) produces the same ``LeadEvent`` once it knows which lead it concerns; the
per-lead queue orders them and the rule engine matches them (docs/automations.md, "Events").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# The vocabulary lives with the flow builder (flows name the same events); re-exported here.
from ..builder.event_types import (
    BUSINESS_TYPES as BUSINESS_TYPES,
)
from ..builder.event_types import (
    CHAT_TYPES as CHAT_TYPES,
)
from ..builder.event_types import (
    CRM_TYPES as CRM_TYPES,
)
from ..builder.event_types import (
    CUSTOM_PREFIX as CUSTOM_PREFIX,
)
from ..builder.event_types import (
    EVENT_TYPE_PATTERN as EVENT_TYPE_PATTERN,
)
from ..builder.event_types import (
    EVENT_TYPES as EVENT_TYPES,
)
from ..builder.event_types import (
    is_known_type as is_known_type,
)

#: A lead's or contact's id as an event from outside names it (``POST /api/events``).
ID_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
#: Chains of rules (an action moves the lead, which fires another rule) stop at this depth.
MAX_DEPTH = 10


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
