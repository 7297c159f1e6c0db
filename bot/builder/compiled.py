"""The immutable compiled form of a flow: what the interpreter runs.

Everything that can be decided once is decided here: templates and regexes are compiled,
durations are seconds, button replies are pre-normalised match keys. Nothing is parsed per
message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo

import regex

from ..messages import OutButton
from .templates import Expression, Template
from .working_hours import WorkingHours


@dataclass(frozen=True, slots=True)
class CButton:
    title: Template
    keys: frozenset[str]  # normalised title and synonyms (empty when the title is a template)
    synonyms: frozenset[str]
    payload: str
    next: str | None
    url: Template | None


@dataclass(frozen=True, slots=True)
class CAttachment:
    kind: str
    url: Template
    name: Template | None


@dataclass(frozen=True, slots=True)
class CListRow:
    id: str
    title: str
    description: str | None
    next: str
    number: int  # 1-based position in the whole list


@dataclass(frozen=True, slots=True)
class CStep:
    id: str
    type: str


@dataclass(frozen=True, slots=True)
class CMessage(CStep):
    text: Template | None
    template: str | None
    params: Any
    attachments: tuple[CAttachment, ...]
    buttons: tuple[CButton, ...]
    other_answer: str | None
    no_answer: tuple[int, str] | None
    failed: str | None
    recipients: str
    channel_mode: str | None
    channels: tuple[str, ...] | None
    next: str | None
    waits: bool
    static_buttons: tuple[OutButton, ...] | None  # rendered once when no title or url is a template
    replies: tuple[CButton, ...] = ()  # the buttons a reply can match (those with a next step), in order


@dataclass(frozen=True, slots=True)
class CList(CStep):
    header: Template | None
    text: Template
    footer: Template | None
    button: str
    sections: tuple[tuple[str, tuple[CListRow, ...]], ...]
    rows: tuple[CListRow, ...]
    other_answer: str | None
    no_answer: tuple[int, str] | None
    failed: str | None
    recipients: str
    channel_mode: str | None
    channels: tuple[str, ...] | None


class CPredicate:
    __slots__ = ()


@dataclass(frozen=True, slots=True)
class CLeaf(CPredicate):
    path: tuple[str, ...]
    op: str
    value: Any  # compiled value (templates inside)
    pattern: Any = None  # compiled regex for "matches" with a constant value
    constant: bool = False  # the value holds no template: used as is


@dataclass(frozen=True, slots=True)
class CAll(CPredicate):
    items: tuple[CPredicate, ...]


@dataclass(frozen=True, slots=True)
class CAny(CPredicate):
    items: tuple[CPredicate, ...]


@dataclass(frozen=True, slots=True)
class CNot(CPredicate):
    item: CPredicate


@dataclass(frozen=True, slots=True)
class CExpr(CPredicate):
    expr: Expression


@dataclass(frozen=True, slots=True)
class CCondition(CStep):
    branches: tuple[tuple[CPredicate, str], ...]
    else_: str | None


@dataclass(frozen=True, slots=True)
class CRule:
    check: str
    kind: str | None
    value: Any
    min: float | None
    max: float | None
    pattern: regex.Pattern[str] | None


@dataclass(frozen=True, slots=True)
class CValidation(CStep):
    value: Template
    logic: str
    rules: tuple[CRule, ...]
    save_as: str | None
    pass_: str | None
    fail: str | None


@dataclass(frozen=True, slots=True)
class CPauseEvent:
    on: str
    after: int | None
    next: str | None
    event: str | None = None  # on "event": the event type
    test: CPredicate | None = None  # on "event": its match (over event.data); on "condition": its if


@dataclass(frozen=True, slots=True)
class CPause(CStep):
    until: tuple[CPauseEvent, ...]


@dataclass(frozen=True, slots=True)
class CAction:
    do: str
    params: Mapping[str, Any]  # compiled values; evaluated at run time into a plain command


@dataclass(frozen=True, slots=True)
class CActionStep(CStep):
    actions: tuple[CAction, ...]
    next: str | None
    failed: str | None


@dataclass(frozen=True, slots=True)
class CInternalMessage(CStep):
    text: Template
    to: tuple[str, ...]
    next: str | None


@dataclass(frozen=True, slots=True)
class CSubscribe(CStep):
    tag: str
    title: Template
    next: str | None
    failed: str | None


@dataclass(frozen=True, slots=True)
class CComment(CStep):
    text: Template
    next: str | None
    failed: str | None


@dataclass(frozen=True, slots=True)
class CGoto(CStep):
    step: str


@dataclass(frozen=True, slots=True)
class CStartBot(CStep):
    bot: str
    next: str | None


@dataclass(frozen=True, slots=True)
class CRoundRobin(CStep):
    options: tuple[str, ...]
    rotation: str  # changes when the options change, so the rotation restarts


@dataclass(frozen=True, slots=True)
class CSplitPath:
    id: str
    weight: int
    next: str


@dataclass(frozen=True, slots=True)
class CSplit(CStep):
    paths: tuple[CSplitPath, ...]
    goal: str | None
    after_entries: int | None  # the winner rule (both None: no automatic winner)
    or_after: int | None  # seconds after the first entry


@dataclass(frozen=True, slots=True)
class CGoal:
    name: str
    on: str  # the event type
    test: CPredicate | None  # its match, over event.data
    next: str | None


@dataclass(frozen=True, slots=True)
class CWidget(CStep):
    widget: str
    params: Any
    wait_timeout: int | None
    on_timeout: str | None
    next: str | None
    failed: str | None


@dataclass(frozen=True, slots=True)
class CCustom(CStep):
    handler: str
    params: Any
    next: str | None
    failed: str | None


@dataclass(frozen=True, slots=True)
class CStop(CStep):
    close_chat: bool


@dataclass(frozen=True, slots=True)
class CompiledFlow:
    """One version of one bot, ready to run. Cached by ``(id, version)``; never mutated."""

    id: str
    version: int
    name: str
    start: str
    tz: ZoneInfo
    hours: WorkingHours
    leave_unanswered: bool
    step_budget: int
    variables: Mapping[str, Any]
    steps: Mapping[str, CStep]
    digest: str
    source: Mapping[str, Any] = field(repr=False, default_factory=lambda: MappingProxyType({}))
    warnings: tuple[str, ...] = ()
    called_bots: frozenset[str] = frozenset()
    uses_crm: bool = True  # whether any template or condition reads contact, lead or company
    reads_clock: bool = True  # whether any template or condition reads now
    names: frozenset[str] | None = None  # the context names the flow reads (None: unknown, all)
    slow_work: bool = False  # regex/phone/e-mail checks or template loops: turns may cost CPU time
    #: What the interpreter and runtime work out from this version on first use (a pause's or goal's
    #: predicate closures, the event types it listens to), never under a bare step id (a step may be
    #: called ``listened``): built once per version and dropped with it. Not part of the flow's value.
    memo: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)
    #: What the interpreter runs for each step id entered (its handler and the step), filled on first
    #: entry: one dict lookup per step on the hot path. Per flow object (not copied by ``replace``).
    plan: dict[str, Any] = field(init=False, repr=False, compare=False, default_factory=dict)
    #: The flow-level goals by event type (``docs/flows.md``, "Goals").
    goals: Mapping[str, tuple[CGoal, ...]] = field(default_factory=lambda: MappingProxyType({}))
