"""Conversation state: what the store keeps per conversation, in msgpack-friendly shapes.

``ConversationState.to_dict``/``from_dict`` are the only (de)serialisation; the interpreter
works on a ``clone`` so the state it was given is never changed (the core stays pure). A clone
copies what a turn writes in place (the run, its variables, callers' variables) and shares
the rest: a ``Wait`` is copied on write.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Any

from ..builder.missing import MISSING

RUN_STATUSES = ("running", "waiting", "finished", "stopped", "failed")
_INT64 = (-(2**63), 2**64 - 1)


def plain(value: Any) -> Any:
    """A copy of ``value`` in the shapes the store keeps (what msgpack packs and unpacks as is).

    Templates yield typed values (``{{ now }}`` a datetime, ``{{ vars }}`` the live dict); before
    one is kept in the state it becomes plain data: dates and times ISO text, tuples and sets
    lists, integers too big for msgpack their digits, anything else its text.
    """
    t = type(value)
    if value is None or t is str or t is float or t is bool:
        return value
    if t is int or isinstance(value, int):
        return value if _INT64[0] <= value <= _INT64[1] else str(value)
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset, range)):
        return [plain(v) for v in value]
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if value is MISSING or _is_undefined(value):
        return ""
    return str(value)


def _is_undefined(value: object) -> bool:
    """A Jinja ``Undefined``: checked only when jinja2 is loaded (none exists before), so the
    state module does not import the template engine (issue 14: startup)."""
    jinja2 = sys.modules.get("jinja2")
    return jinja2 is not None and isinstance(value, jinja2.Undefined)


@dataclass(slots=True)
class Frame:
    """A bot that called another with ``start_bot`` and waits for it to return."""

    bot: str
    version: int
    next: str
    vars: dict[str, Any]
    json: Any = None
    last_validation_result: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {"bot": self.bot, "version": self.version, "next": self.next, "vars": self.vars,
                "json": self.json, "lvr": self.last_validation_result}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Frame:
        return cls(d["bot"], d["version"], d["next"], d["vars"], d.get("json"), d.get("lvr"))


@dataclass(slots=True)
class Wait:
    """What a waiting run waits for.

    ``kind``: ``reply`` (buttons/list), ``pause``, ``widget`` (callback) or ``request``
    (an answer from the shell to a ``Request`` effect, always given in the same event).
    """

    kind: str
    step: str
    timers: dict[str, str] = field(default_factory=dict)  # timer id -> what it means
    on: tuple[str, ...] = ()  # pause: the events it waits for
    token: str | None = None  # widget: the one-time return token
    request: str | None = None  # request: its id
    until: float | None = None  # epoch of the earliest timer, for the dashboard
    held: tuple[str, ...] = ()  # timers (their purposes) that fell due while a person had the chat
    widget_json: Any = None  # a widget's answer that arrived while a person had the chat

    def clone(self) -> Wait:
        w = object.__new__(Wait)
        w.kind, w.step, w.timers, w.on = self.kind, self.step, dict(self.timers), self.on
        w.token, w.request, w.until = self.token, self.request, self.until
        w.held, w.widget_json = self.held, self.widget_json
        return w

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "step": self.step, "timers": self.timers, "on": list(self.on),
                "token": self.token, "request": self.request, "until": self.until,
                "held": list(self.held), "widget_json": self.widget_json}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Wait:
        return cls(d["kind"], d["step"], dict(d.get("timers") or {}), tuple(d.get("on") or ()),
                   d.get("token"), d.get("request"), d.get("until"), tuple(d.get("held") or ()),
                   d.get("widget_json"))


@dataclass(slots=True)
class Run:
    id: str
    bot: str
    version: int
    step: str | None
    status: str = "running"
    vars: dict[str, Any] = field(default_factory=dict)
    json: Any = None
    last_validation_result: Any = None
    wait: Wait | None = None
    action_index: int = 0
    callers: list[Frame] = field(default_factory=list)
    error: str | None = None
    #: The splits this run passed: ``(bot, step, path, generation, goal)``, so a goal reached later
    #: (after a restart too) counts for each of them, once. Tuples: shared by clones, replaced on change.
    splits: tuple[tuple[str, str, str, int, str], ...] = ()
    goals: tuple[str, ...] = ()  # the flow goals this run has reached (each counts once)

    @property
    def active(self) -> bool:
        return self.status in ("running", "waiting")

    def clone(self) -> Run:
        # Field by field: this runs once per event, and the dataclass __init__ costs twice as much.
        r = object.__new__(Run)
        r.id, r.bot, r.version, r.step, r.status = self.id, self.bot, self.version, self.step, self.status
        r.vars, r.json, r.last_validation_result = dict(self.vars), self.json, self.last_validation_result
        # The wait is shared, not copied: most events end it (resume) rather than change it; the
        # few handlers that change one in place take their own copy first (``TurnContext.own_wait``).
        r.wait = self.wait
        r.action_index, r.error = self.action_index, self.error
        r.splits, r.goals = self.splits, self.goals
        r.callers = _frames(self.callers) if self.callers else []
        return r

    def to_dict(self) -> dict[str, Any]:
        d = {
            "id": self.id, "bot": self.bot, "version": self.version, "step": self.step,
            "status": self.status, "vars": self.vars, "json": self.json,
            "lvr": self.last_validation_result,
            "wait": None if self.wait is None else self.wait.to_dict(),
            "ai": self.action_index, "callers": [f.to_dict() for f in self.callers],
            "error": self.error,
        }
        if self.splits or self.goals:  # only runs that passed a split or reached a goal carry them
            d["sp"], d["gl"] = [list(x) for x in self.splits], list(self.goals)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Run:
        return cls(
            d["id"], d["bot"], d["version"], d.get("step"), d.get("status", "running"),
            dict(d.get("vars") or {}), d.get("json"), d.get("lvr"),
            Wait.from_dict(d["wait"]) if d.get("wait") else None, d.get("ai", 0),
            [Frame.from_dict(f) for f in d.get("callers") or ()], d.get("error"),
            tuple((str(x[0]), str(x[1]), str(x[2]), int(x[3]), str(x[4])) for x in d.get("sp") or ()),
            tuple(str(g) for g in d.get("gl") or ()),
        )


def _frames(callers: list[Frame]) -> list[Frame]:
    """A copy of a run's callers for its clone. Each frame gets its own vars: returning from a call
    writes the callee's vars into them."""
    return [Frame(f.bot, f.version, f.next, dict(f.vars), f.json, f.last_validation_result) for f in callers]


_new = object.__new__


@dataclass(slots=True)
class ConversationState:
    """Everything the runtime remembers about one conversation."""

    id: str
    channel: str = "livechat"
    account: str = "default"
    origin: str | None = None  # how the conversation began: "message", "comment", "referral", …
    owner: str = "bot"  # "bot" or "human"
    owner_user: str | None = None
    chat_status: str = "unanswered"  # unanswered | answered | closed
    run: Run | None = None
    last_message: dict[str, Any] | None = None
    seq: int = 0  # counter for run, timer and message ids
    turn_steps: int = 0  # steps run for the current outside event (the step budget)
    crm: dict[str, str] | None = None  # the CRM records of this conversation (contact_id, lead_id)
    #: The timers set and not fired or cancelled yet: id -> when it falls due (epoch). Kept by the
    #: runtime, not the interpreter (which knows its waits' timers by id): the conversation has one
    #: timer entry in Redis, due no later than the earliest of these (bot/store/timers.py). Replaced, never
    #: changed in place (clones share it).
    timers: dict[str, float] = field(default_factory=dict)

    def next_id(self, prefix: str) -> str:
        self.seq += 1
        return f"{prefix}{self.seq}"

    def clone(self) -> ConversationState:
        # Field by field, one statement each: this runs once per event, and a statement that sets
        # four fields at once builds and unpacks a tuple.
        c = _new(ConversationState)
        c.id = self.id
        c.channel = self.channel
        c.account = self.account
        c.origin = self.origin
        c.owner = self.owner
        c.owner_user = self.owner_user
        c.chat_status = self.chat_status
        run = self.run  # the run changes in place: copied (run.clone(), inline: one call fewer an event)
        if run is None:
            c.run = None
        else:
            c.run = r = _new(Run)
            r.id = run.id
            r.bot = run.bot
            r.version = run.version
            r.step = run.step
            r.status = run.status
            r.vars = dict(run.vars)
            r.json = run.json
            r.last_validation_result = run.last_validation_result
            r.wait = run.wait  # shared, as in Run.clone
            r.action_index = run.action_index
            r.error = run.error
            r.splits = run.splits
            r.goals = run.goals
            r.callers = _frames(run.callers) if run.callers else []
        c.last_message = self.last_message
        c.seq = self.seq
        c.turn_steps = self.turn_steps
        c.crm = self.crm
        c.timers = self.timers
        return c

    def timers_dict(self) -> dict[str, float]:
        """``timers`` as saved: an id of this conversation's (``<id>:t<n>``) without its prefix."""
        prefix = self.id + ":"
        n = len(prefix)
        return {(t[n:] if t.startswith(prefix) else t): at for t, at in self.timers.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": 1, "id": self.id, "channel": self.channel, "account": self.account,
            "origin": self.origin, "owner": self.owner, "owner_user": self.owner_user,
            "chat_status": self.chat_status,
            "run": None if self.run is None else self.run.to_dict(),
            "last_message": self.last_message, "seq": self.seq,
            "turn_steps": self.turn_steps, "crm": self.crm,
            **({"tm": self.timers_dict()} if self.timers else {}),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ConversationState:
        return cls(
            d["id"], d.get("channel", "livechat"), d.get("account", "default"), d.get("origin"),
            d.get("owner", "bot"), d.get("owner_user"), d.get("chat_status", "unanswered"),
            Run.from_dict(d["run"]) if d.get("run") else None, d.get("last_message"), d.get("seq", 0),
            d.get("turn_steps", 0), d.get("crm"),
            {(t if ":" in t else f"{d['id']}:{t}"): float(at) for t, at in (d.get("tm") or {}).items()},
        )


def held_message(state: ConversationState) -> dict[str, Any] | None:
    """The customer's message that came while a person had the conversation and that nobody has
    let the bot answer yet (``last_message`` marked ``held``), or None."""
    last = state.last_message
    return last if isinstance(last, dict) and last.get("held") else None
