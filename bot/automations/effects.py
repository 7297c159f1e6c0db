"""What the rule engine asks the shell to do, and the shell's own events: plain frozen values.

Every effect that changes the lead carries ``depth``: the depth the events it causes will have
(the triggering event's depth + 1), so chains of rules stop at ``MAX_DEPTH``. ``Record`` is
not work: it is what happened to a rule, for the per-rule counts and the lead card's history.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .events import ApplyRule as ApplyRule  # the shell's event the lead queues carry (lives with LeadEvent)

Outcome = Literal["fired", "acted", "skipped_if", "waiting_window", "delayed", "cancelled", "loop", "not_in_stage"]


@dataclass(frozen=True, slots=True)
class RunActions:
    """Run these flow actions on the lead, in order, like a flow's action step. Each is the
    plain command a flow's action request carries (``{"do": "add_task", ..., "due_at": ...,
    "timezone": ...}``): templates are already rendered. Read-only: values without templates
    are shared with the compiled document."""

    rule: str
    actions: tuple[Mapping[str, Any], ...]
    depth: int
    leave_unanswered: bool = False


@dataclass(frozen=True, slots=True)
class StartBot:
    """Start ``bot`` for the lead on the first reachable of ``channels`` (``last``, or accounts)."""

    rule: str
    bot: str
    channels: tuple[str, ...]
    variables: Mapping[str, Any]
    depth: int
    leave_unanswered: bool = False


@dataclass(frozen=True, slots=True)
class StartProcess:
    """Start process ``process`` for the lead's contact."""

    rule: str
    process: str
    variables: Mapping[str, Any]
    depth: int


@dataclass(frozen=True, slots=True)
class MoveStage:
    """Move the lead to ``stage`` of the document's pipeline (a trigger). The CRM emits
    ``lead.stage_changed`` for it, which runs that stage's ``moved_in`` rules."""

    trigger: str
    stage: str
    depth: int
    pipeline: str = ""


@dataclass(frozen=True, slots=True)
class AddScore:
    """Add ``delta`` (negative: subtract) to the contact's ``score``; ``reason`` says why.

    ``once`` (score decay): the shell applies the change at most once per contact under this key,
    remembering it ``keep`` seconds — every lead of a contact runs its own decay timer, and the
    contact's score must decay once per period, not once per lead."""

    delta: int
    reason: str
    depth: int
    once: str = ""
    keep: int = 0


@dataclass(frozen=True, slots=True)
class SetTimer:
    """Deliver ``TimerFired(timer_id)`` to the lead's queue at ``at`` (epoch seconds)."""

    timer_id: str
    at: float


@dataclass(frozen=True, slots=True)
class CancelTimer:
    timer_id: str


@dataclass(frozen=True, slots=True)
class Record:
    """What happened to rule (or trigger) ``rule``: counted per rule, shown on the lead card."""

    rule: str
    outcome: Outcome
    detail: str = ""


Effect = RunActions | StartBot | StartProcess | MoveStage | AddScore | SetTimer | CancelTimer | Record


# ---------------------------------------------------------------------- the shell's events
@dataclass(frozen=True, slots=True)
class AutomationsChanged:
    """A new version of the lead's automations is live: pending work of rules that are gone is
    cancelled, timers of new ``idle``/``field_time`` rules of the lead's stage are set."""

    version: int

