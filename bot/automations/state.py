"""What the rule engine remembers per lead, in msgpack-friendly shapes.

Small on purpose (one per lead, loaded for every event): where the lead was last seen, since
when, the timers it waits for (each ``Pending`` entry says which rule, why and for which event)
and the ids of the last events handled. ``to_dict``/``from_dict`` are the only
(de)serialisation; ``react`` works on a ``clone`` so the state it was given is never changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

PendingKind = Literal["delay", "window", "idle", "field_time", "decay"]
#: Kinds that belong to a stage: leaving it cancels them.
STAGE_KINDS = frozenset({"delay", "window", "idle", "field_time"})
#: How many handled event ids a lead remembers (a redelivered one does nothing).
RECENT = 32


@dataclass(frozen=True, slots=True)
class Pending:
    """One timer a lead waits for.

    ``rule``: the rule id (a decay's ``decay:<n>``); ``stage``: the stage it was set in; ``at``:
    when it falls due (epoch seconds); the triggering event's ``event_id``/``event_type``/
    ``event_data``/``depth`` (a rule acting later sees the event that started it); ``version``:
    the automations version that set it.
    """

    rule: str
    kind: PendingKind
    stage: str
    at: float
    event_id: str = ""
    event_type: str = ""
    event_data: dict[str, Any] = field(default_factory=dict)
    depth: int = 0
    version: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "kind": self.kind, "stage": self.stage, "at": self.at, "eid": self.event_id,
                "etype": self.event_type, "edata": self.event_data, "depth": self.depth, "v": self.version}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Pending:
        return cls(d["rule"], d["kind"], d["stage"], float(d["at"]), d.get("eid", ""), d.get("etype", ""),
                   dict(d.get("edata") or {}), int(d.get("depth", 0)), int(d.get("v", 0)))


@dataclass(slots=True)
class LeadState:
    """The rule engine's memory of one lead (``id`` is ``lead:<lead id>``, the queue's id)."""

    id: str
    automations: str | None = None  # the document whose timers ``pending`` holds
    pipeline: str | None = None  # where the lead was last seen
    stage: str | None = None
    since: float | None = None  # when it entered that stage (epoch seconds)
    last_event_at: float | None = None
    pending: dict[str, Pending] = field(default_factory=dict)  # timer id -> what it is for
    seq: int = 0  # the timer counter: ids are ``<id>:t<n>``
    decayed_at: float | None = None  # when the score last decayed
    recent: list[str] = field(default_factory=list)  # the last RECENT event ids handled, oldest first

    @classmethod
    def for_lead(cls, lead_id: str) -> LeadState:
        return cls(f"lead:{lead_id}")

    def next_timer_id(self) -> str:
        self.seq += 1
        return f"{self.id}:t{self.seq}"

    def remember(self, key: str) -> bool:
        """Note ``key`` as handled; False if it already was (a redelivery)."""
        if key in self.recent:
            return False
        self.recent.append(key)
        if len(self.recent) > RECENT:
            del self.recent[0]
        return True

    def clone(self) -> LeadState:
        # Entries are replaced, never changed in place, so a shallow copy of the dict is enough.
        return LeadState(self.id, self.automations, self.pipeline, self.stage, self.since, self.last_event_at,
                         dict(self.pending), self.seq, self.decayed_at, list(self.recent))

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": 1, "id": self.id, "doc": self.automations, "pipeline": self.pipeline, "stage": self.stage,
            "since": self.since, "last": self.last_event_at,
            "pending": {k: p.to_dict() for k, p in self.pending.items()}, "seq": self.seq,
            "decayed": self.decayed_at, "recent": list(self.recent),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LeadState:
        return cls(
            d["id"], d.get("doc"), d.get("pipeline"), d.get("stage"), d.get("since"), d.get("last"),
            {str(k): Pending.from_dict(p) for k, p in (d.get("pending") or {}).items()},
            int(d.get("seq", 0)), d.get("decayed"), [str(x) for x in d.get("recent") or ()],
        )
