"""The automation document (``salesbot.automations/1``) as pydantic models: shapes only.

One document per pipeline: stage rules, triggers and scoring (docs/automations.md). These
models check each value's shape; what needs the outside world (does the stage exist, the bot,
the field; can the trigger ever fire) is ``bot.automations.validate``'s job. Conditions and
actions are the flow format's own models, so a rule's ``if`` and ``do.actions`` mean exactly
what they mean in a flow.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, StringConstraints, Tag, field_validator, model_validator

from ..builder.models import WHOLE, Action, Bool, BotId, Duration, Model, Predicate, TemplateValue
from .events import EVENT_TYPE_PATTERN
from .offsets import parse_offset

FORMAT = "salesbot.automations/1"

RuleId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
StageName = Annotated[str, StringConstraints(min_length=1, max_length=128)]
EventType = Annotated[str, StringConstraints(pattern=EVENT_TYPE_PATTERN)]
#: A date field of the lead or its contact (``lead.fields.meeting_at``, ``contact.fields.birthday``).
DateField = Annotated[str, StringConstraints(pattern=r"^(lead|contact|company)\.fields\.[A-Za-z0-9_\-]{1,64}$")]
#: A field whose change a rule can watch (``lead.price``, ``lead.fields.budget``, ``contact.email``).
WatchedField = Annotated[
    str, StringConstraints(pattern=r"^(lead|contact|company)\.[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)?$")]
AccountName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]

#: When a rule runs (docs/automations.md, "Rules").
RuleOn = Literal[
    "created", "moved_in", "responsible_changed", "tag_added", "field_changed",
    "chat.first_message", "chat.message", "field_time", "idle",
]
Active = Literal["always", "working_hours", "outside_working_hours"]


class FieldTime(Model):
    """The moment a ``field_time`` rule acts: a date field plus a signed offset (``-1h``)."""

    field: DateField
    offset: str | int = 0

    @field_validator("offset", mode="before")  # before the union, which would read true as 1
    @classmethod
    def _offset(cls, value: Any) -> Any:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        parse_offset(value)  # raises ValueError with the reason
        return value

    @property
    def offset_seconds(self) -> int:
        return parse_offset(self.offset)


class StartBotDo(Model):
    """Start a bot for the lead on ``channel``: ``last`` (its newest conversation), an account, or
    accounts tried in order."""

    start_bot: BotId
    channel: AccountName | Annotated[list[AccountName], Field(min_length=1, max_length=10)] = "last"
    variables: dict[str, TemplateValue] = Field(default_factory=dict)


class ActionsDo(Model):
    """Run flow actions on the lead (``add_task``, ``tags``, ``send_email`` …)."""

    actions: Annotated[list[Action], Field(min_length=1, max_length=50)]


class StartProcessDo(Model):
    """Start a process (a flow run for the contact, docs/automations.md "Processes")."""

    start_process: BotId
    variables: dict[str, TemplateValue] = Field(default_factory=dict)


def _do_kind(value: Any) -> str | None:
    keys = ("start_bot", "actions", "start_process")
    if isinstance(value, dict):
        return next((k for k in keys if k in value), None)
    kinds: dict[type, str] = {StartBotDo: "start_bot", ActionsDo: "actions", StartProcessDo: "start_process"}
    return kinds.get(type(value))


Do = Annotated[
    Annotated[StartBotDo, Tag("start_bot")] | Annotated[ActionsDo, Tag("actions")]
    | Annotated[StartProcessDo, Tag("start_process")],
    Discriminator(_do_kind),
]


#: What each kind of rule needs, with an example for the error message.
_NEEDS = (
    ("tag_added", "tag", '"tag": "vip"'),
    ("field_changed", "field", '"field": "lead.price"'),
    ("field_time", "at", '"at": {"field": "lead.fields.meeting_at", "offset": "-1h"}'),
    ("idle", "after", '"after": "3d"'),
)


class Rule(Model):
    """A stage rule: when ``on`` happens to a lead in ``stage``, (after ``delay``, when
    ``active``, if ``if`` holds) ``do`` it."""

    id: RuleId
    stage: StageName
    on: Annotated[list[RuleOn], Field(min_length=1)]
    tag: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None
    field: WatchedField | None = None
    at: FieldTime | None = None
    after: Duration | None = None
    if_: Predicate | None = Field(default=None, alias="if")
    delay: Duration | None = None
    active: Active = "always"
    apply_to_existing: Bool = False
    leave_unanswered: Bool = False
    do: Do

    @field_validator("on", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _needs(self) -> Rule:
        on = set(self.on)
        if len(on) != len(self.on):
            raise ValueError("on lists an event twice")
        for kind, attr, example in _NEEDS:
            given = getattr(self, attr) is not None
            if kind in on and not given:
                raise ValueError(f'a rule on "{kind}" needs {attr} ({example})')
            if given and kind not in on:
                raise ValueError(f'{attr} is only read by rules on "{kind}"')
        return self


class Trigger(Model):
    """When event ``on`` (whose data matches every key of ``match``) concerns a lead of this
    pipeline, move the lead to ``stage`` (never backwards unless ``allow_backward``)."""

    id: RuleId
    stage: StageName
    on: EventType
    match: dict[str, TemplateValue] = Field(default_factory=dict)
    allow_backward: Bool = False


class ScoreRule(Model):
    """Add ``add`` (negative: subtract) to ``contact.score`` when event ``on`` matches."""

    on: EventType
    match: dict[str, TemplateValue] = Field(default_factory=dict)
    add: Annotated[int, Field(ge=-1000, le=1000), WHOLE]

    @field_validator("add")
    @classmethod
    def _not_zero(cls, value: int) -> int:
        if value == 0:
            raise ValueError("add 0 changes nothing")
        return value


class DecaySpec(Model):
    every: Duration
    subtract: Annotated[int, Field(ge=1, le=1000), WHOLE]

    @field_validator("every")
    @classmethod
    def _at_least_an_hour(cls, value: int) -> int:
        if value < 3600:
            raise ValueError("decay runs at most once an hour (every >= 1h)")
        return value


class DecayRule(Model):
    """Subtract ``decay.subtract`` from ``contact.score`` every ``decay.every`` (not below 0)."""

    decay: DecaySpec


def _score_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        return "decay" if "decay" in value else "score"
    kinds: dict[type, str] = {DecayRule: "decay", ScoreRule: "score"}
    return kinds.get(type(value))


Scoring = Annotated[Annotated[ScoreRule, Tag("score")] | Annotated[DecayRule, Tag("decay")], Discriminator(_score_kind)]


class Settings(Model):
    timezone: str = "UTC"
    working_hours: dict[str, str] | None = None


class Automations(Model):
    """One pipeline's automations."""

    format: Literal["salesbot.automations/1"]
    id: BotId
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    pipeline: StageName
    settings: Settings = Settings()
    rules: Annotated[list[Rule], Field(max_length=2000, default_factory=list)]
    triggers: Annotated[list[Trigger], Field(max_length=500, default_factory=list)]
    scoring: Annotated[list[Scoring], Field(max_length=200, default_factory=list)]
