"""Automations in the simulator: the pure rule engine over the in-memory CRM, on the virtual clock.

Like the server's lead queues, in one process: every CRM change of the simulation becomes its
CRM events (the pure diff of ``crm_bridge.changes``), each event goes through
``bot.automations.engine.react`` for its lead, in order, and the effects that change the lead
(carried out by the ``Simulator``) produce events again with their ``depth``, so chains of
rules behave as on the server and stop at ``MAX_DEPTH``. Timers of leads (ids ``lead:<id>:t<n>``)
live on the simulator's clock next to the conversation's.
"""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from crm_bridge import CrmRef, MemoryCrm
from crm_bridge.changes import Change, contact_changes, lead_changes, task_changes

from ..automations import effects as afx
from ..automations.compiled import CompiledAutomations
from ..automations.engine import ShellEvent, react
from ..automations.events import LeadEvent
from ..automations.state import LeadState

#: The outcomes ``expect: {rules: …}`` lists: the engine's (``bot.automations.effects.Outcome``) and
#: ``failed`` (an action the CRM refused, as the server's lead card says).
OUTCOMES = ("fired", "acted", "skipped_if", "waiting_window", "delayed", "cancelled", "loop", "not_in_stage",
            "failed")
LEAD_TIMER_PREFIX = "lead:"


@dataclass(frozen=True, slots=True)
class Before:
    """The CRM's leads and tasks before a write, to diff against after it."""

    leads: dict[str, dict[str, Any]]
    tasks: list[dict[str, Any]]
    contacts: dict[str, dict[str, Any]]


def lead_of_timer(timer_id: str) -> str:
    """``lead:<id>:t<n>`` -> ``<id>``."""
    return timer_id[len(LEAD_TIMER_PREFIX):].rpartition(":")[0]


class LeadRules:
    """The lead side of a simulation: each lead's ``LeadState``, the queue of lead events not yet
    handled, and what rules did (for ``expect: {rules: …}``)."""

    def __init__(self, automations: CompiledAutomations, crm: MemoryCrm) -> None:
        self.automations = automations
        self.crm = crm
        self.states: dict[str, LeadState] = {}
        self.queue: deque[tuple[str, ShellEvent]] = deque()
        self.history: list[dict[str, Any]] = []  # every Record, in order, with lead and time
        self.once: set[tuple[str, str]] = set()  # (contact, AddScore.once) applied: decay once per contact
        self._seq = 0

    # ------------------------------------------------------------------ in
    def before(self) -> Before:
        return Before(copy.deepcopy(self.crm.leads), copy.deepcopy(self.crm.tasks), copy.deepcopy(self.crm.contacts))

    def changed(self, before: Before, depth: int, now: datetime, ref: CrmRef | None = None) -> None:
        """Queue the CRM events of everything written since ``before``; a change of ``ref``'s
        contact on ``ref``'s lead, as the server's CRM announces it (crm_bridge/changes.py)."""
        changes: list[Change] = []
        for lid, lead in self.crm.leads.items():
            changes += lead_changes(before.leads.get(lid), lead, depth=depth)
        changes += task_changes(before.tasks, self.crm.tasks, depth=depth)
        contact = self.crm.contacts.get(ref.contact_id) if ref is not None else None
        if ref is not None and contact is not None:
            changes += contact_changes(before.contacts.get(ref.contact_id), contact, [ref.lead_id], depth=depth)
        for c in changes:
            self.add(c.type, c.lead_id, c.data, now, depth=c.depth, contact_id=c.contact_id, source="crm")

    def add(self, type_: str, lead_id: str, data: Mapping[str, Any], now: datetime, *, depth: int = 0,
            contact_id: str | None = None, source: str = "test") -> None:
        self._seq += 1
        event = LeadEvent(f"sim-ev-{self._seq}", type_, now.timestamp(), lead_id, contact_id, dict(data), depth, source)
        self.queue.append((lead_id, event))

    def shell(self, lead_id: str, event: ShellEvent) -> None:
        """A timer of a lead, or ``AutomationsChanged`` when the simulation starts."""
        self.queue.append((lead_id, event))

    # ------------------------------------------------------------------ handling
    def ref(self, lead_id: str) -> CrmRef:
        contacts = self.crm.leads.get(lead_id, {}).get("contacts") or [""]
        return CrmRef(str(contacts[0]), lead_id)

    def next(self, now: datetime) -> tuple[str, tuple[afx.Effect, ...]] | None:
        """Handle the oldest queued event: its lead and the effects (records noted already)."""
        if not self.queue:
            return None
        lead_id, event = self.queue.popleft()
        state = self.states.get(lead_id) or LeadState.for_lead(lead_id)
        snapshot = self.crm.snapshot_now(self.ref(lead_id))
        reaction = react(self.automations, state, event, snapshot, now)
        self.states[lead_id] = reaction.state
        for effect in reaction.effects:
            if isinstance(effect, afx.Record):
                self.note(lead_id, effect.rule, effect.outcome, effect.detail, now)
        return lead_id, reaction.effects

    def note(self, lead_id: str, rule: str, outcome: str, detail: str, now: datetime) -> None:
        self.history.append({"rule": rule, "outcome": outcome, "detail": detail, "lead": lead_id,
                             "at": now.isoformat()})

    # ------------------------------------------------------------------ reading
    def view(self) -> dict[str, Any]:
        """``rules`` for ``expect``: per outcome, the rule (and trigger) ids in order, plus the history."""
        out: dict[str, Any] = {o: [h["rule"] for h in self.history if h["outcome"] == o] for o in OUTCOMES}
        out["history"] = [dict(h) for h in self.history]
        return out


__all__ = ["LEAD_TIMER_PREFIX", "OUTCOMES", "Before", "LeadRules", "lead_of_timer"]
