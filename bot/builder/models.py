"""Pydantic models of flow format v1 (``salesbot.flow/1``): the schema, nothing more.

Steps are discriminated on ``type``, actions on ``do``, predicates on which key they carry.
Unknown keys are errors, except ``x-*`` keys (builder metadata), which are dropped here and
kept in the stored document. Cross-references, templates and loops are checked by
``bot.builder.validate``, which needs the whole document.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Discriminator, Field, StringConstraints, Tag, model_validator

from .event_types import EVENT_TYPE_PATTERN
from .model_base import WHOLE as WHOLE
from .model_base import Bool as Bool
from .model_base import BotId as BotId
from .model_base import Duration as Duration
from .model_base import Model as Model
from .model_base import Number as Number
from .model_base import StepId as StepId
from .model_base import Template as Template
from .model_base import TemplateValue as TemplateValue
from .model_base import TextOrInt as TextOrInt
from .model_base import TimerDuration as TimerDuration
from .model_base import VarName as VarName
from .models_process import EndProcess, Lists, Notify, Score, SendMessage, SendSms, StartProcess

FORMAT = "salesbot.flow/1"
MAX_BUTTONS = 13
MAX_LIST_ROWS = 10
Recipients = Literal["chat", "main_contact", "all_contacts"]


# ---------------------------------------------------------------- message-like steps
class Button(Model):
    title: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    synonyms: list[str] = []
    next: StepId | None = None
    url: str | None = None

    @model_validator(mode="after")
    def _branch_or_link(self) -> Button:
        if self.url is not None and self.next is not None:
            raise ValueError("a button has either url (a link) or next (a branch), not both")
        if self.url is None and self.next is None:
            raise ValueError("a button needs next (the step it leads to) or url (a link)")
        return self


class Attachment(Model):
    kind: Literal["image", "video", "audio", "voice", "document"]
    url: Template
    name: Template | None = None


class NoAnswer(Model):
    after: TimerDuration
    next: StepId


class _Sending(Model):
    """Fields shared by the steps that send to the customer."""

    failed: StepId | None = None
    recipients: Recipients = "chat"
    channel_mode: Literal["selected", "primary"] | None = None
    channels: list[str] | None = None


class MessageStep(_Sending):
    type: Literal["message"]
    text: Template | None = None
    template: str | None = None
    params: dict[str, TemplateValue] | list[TemplateValue] | None = None
    attachments: list[Attachment] = []
    buttons: Annotated[list[Button], Field(max_length=MAX_BUTTONS)] = []
    other_answer: StepId | None = None
    no_answer: NoAnswer | None = None
    next: StepId | None = None

    @model_validator(mode="after")
    def _has_content(self) -> MessageStep:
        if self.text is None and self.template is None and not self.attachments:
            raise ValueError("a message needs text, a template or attachments")
        return self


class ListRow(Model):
    id: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    title: Annotated[str, StringConstraints(min_length=1, max_length=24)]
    description: Annotated[str, StringConstraints(max_length=72)] | None = None
    next: StepId


class ListSection(Model):
    title: Annotated[str, StringConstraints(min_length=1, max_length=24)]
    rows: Annotated[list[ListRow], Field(min_length=1)]


class ListStep(_Sending):
    type: Literal["list"]
    header: Annotated[str, StringConstraints(max_length=60)] | None = None
    text: Template
    footer: Annotated[str, StringConstraints(max_length=60)] | None = None
    button: Annotated[str, StringConstraints(min_length=1, max_length=20)]
    sections: Annotated[list[ListSection], Field(min_length=1)]
    other_answer: StepId | None = None
    no_answer: NoAnswer | None = None

    @model_validator(mode="after")
    def _row_limit(self) -> ListStep:
        rows = sum(len(s.rows) for s in self.sections)
        if rows > MAX_LIST_ROWS:
            raise ValueError(f"a list has at most {MAX_LIST_ROWS} rows in all, this one has {rows}")
        return self


# ---------------------------------------------------------------- condition
Op = Literal[
    "eq", "ne", "contains", "not_contains", "starts_with", "matches", "in", "not_in",
    "gt", "gte", "lt", "lte", "between", "empty", "not_empty", "has",
]


class LeafPredicate(Model):
    field: Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_\-]+)*$")]
    op: Op
    value: TemplateValue = None

    @model_validator(mode="after")
    def _value_shape(self) -> LeafPredicate:
        if self.op in ("empty", "not_empty"):
            return self
        if self.value is None:
            raise ValueError(f'the operator "{self.op}" needs a value')
        if self.op == "between" and not (isinstance(self.value, list) and len(self.value) == 2):
            raise ValueError('"between" takes a value [low, high]')
        if self.op in ("in", "not_in") and not isinstance(self.value, (list, str)):
            raise ValueError(f'"{self.op}" takes a list of values')
        return self


class ExprPredicate(Model):
    expr: Annotated[str, StringConstraints(min_length=1)]


class AllPredicate(Model):
    all: Annotated[list[Predicate], Field(min_length=1)]


class AnyPredicate(Model):
    any: Annotated[list[Predicate], Field(min_length=1)]


class NotPredicate(Model):
    not_: Predicate = Field(alias="not")


def _predicate_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        for key in ("all", "any", "not", "expr"):
            if key in value:
                return key
        return "leaf"
    if isinstance(value, BaseModel):
        kinds: dict[type, str] = {AllPredicate: "all", AnyPredicate: "any", NotPredicate: "not",
                                  ExprPredicate: "expr"}
        return kinds.get(type(value), "leaf")
    return None


Predicate = Annotated[
    Annotated[AllPredicate, Tag("all")] | Annotated[AnyPredicate, Tag("any")] | Annotated[NotPredicate, Tag("not")]
    | Annotated[ExprPredicate, Tag("expr")] | Annotated[LeafPredicate, Tag("leaf")],
    Discriminator(_predicate_kind),
]
AllPredicate.model_rebuild()
AnyPredicate.model_rebuild()
NotPredicate.model_rebuild()


class Branch(Model):
    if_: Predicate = Field(alias="if")
    next: StepId


class ConditionStep(Model):
    type: Literal["condition"]
    branches: Annotated[list[Branch], Field(min_length=1)]
    else_: StepId | None = Field(default=None, alias="else")


# ---------------------------------------------------------------- validation
class Rule(Model):
    check: Literal["equals", "not_equals", "contains", "not_contains", "length", "regex"]
    kind: Literal["number", "letters", "phone", "email", "range", "text"] | None = None
    value: TemplateValue = None
    min: Number | None = None
    max: Number | None = None
    pattern: str | None = None

    @model_validator(mode="after")
    def _parameters(self) -> Rule:
        c = self.check
        if c in ("contains", "not_contains"):
            if self.kind is None:
                raise ValueError(f'"{c}" needs a kind: number, letters, phone, email, range or text')
            if self.kind == "text" and self.value is None:
                raise ValueError('kind "text" needs a value')
            if self.kind == "range" and self.min is None and self.max is None:
                raise ValueError('kind "range" needs min, max or both')
        elif c == "length" and self.min is None and self.max is None:
            raise ValueError('"length" needs min, max or both')
        elif c == "regex" and not self.pattern:
            raise ValueError('"regex" needs a pattern')
        elif c in ("equals", "not_equals") and self.value is None:
            raise ValueError(f'"{c}" needs a value')
        return self


class ValidationStep(Model):
    type: Literal["validation"]
    value: Template = "{{ message.text }}"
    logic: Literal["all", "any"] = "all"
    rules: Annotated[list[Rule], Field(min_length=1)]
    save_as: VarName | None = None
    pass_: StepId | None = Field(default=None, alias="pass")
    fail: StepId | None = None


# ---------------------------------------------------------------- pause
class PauseEvent(Model):
    on: Literal["message", "timer", "working_hours", "video_opened", "video_closed", "event", "condition"]
    after: TimerDuration | None = None
    event: Annotated[str, StringConstraints(pattern=EVENT_TYPE_PATTERN)] | None = None
    match: Annotated[dict[Annotated[str, StringConstraints(min_length=1, max_length=64)], TemplateValue],
                     Field(max_length=20)] | None = None
    if_: Predicate | None = Field(default=None, alias="if")
    next: StepId | None = None

    @model_validator(mode="after")
    def _timer_needs_after(self) -> PauseEvent:
        if self.on == "timer" and self.after is None:
            raise ValueError('a "timer" event needs after (a duration such as "1d")')
        if self.on != "timer" and self.after is not None:
            raise ValueError(f'only "timer" events take after, not "{self.on}"')
        if self.on == "event" and self.event is None:
            raise ValueError('"event" is required with on: "event" (the event type, such as "email.opened")')
        if self.on != "event" and (self.event is not None or self.match is not None):
            raise ValueError('"event" (the event type, such as "email.opened") and match go with on: "event" only')
        if (self.on == "condition") != (self.if_ is not None):
            raise ValueError('"if" (the condition to wait for) goes with on: "condition" only, which needs it')
        return self


class PauseStep(Model):
    type: Literal["pause"]
    until: Annotated[list[PauseEvent], Field(min_length=1)] = [PauseEvent(on="message")]
    next: StepId | None = None


# ---------------------------------------------------------------- actions
class _Action(Model):
    pass


class AddNote(_Action):
    do: Literal["add_note"]
    text: Template
    entity: Literal["lead", "contact"] = "lead"


TaskDue = Literal["now", "end_of_day", "in_1_day", "in_3_days", "end_of_week"] | Duration


class AddTask(_Action):
    do: Literal["add_task"]
    text: Template
    due: TaskDue = "in_1_day"
    responsible: TextOrInt = "current"
    task_type: Annotated[str, StringConstraints(min_length=1, max_length=64)] = "follow_up"


class CompleteTasks(_Action):
    do: Literal["complete_tasks"]
    task_type: str = "all"
    due: Literal["all", "overdue", "today", "tomorrow"] = "all"
    comment: Template | None = None


class SetChatStatus(_Action):
    do: Literal["set_chat_status"]
    status: Literal["closed", "answered"]


class ChangeStage(_Action):
    do: Literal["change_stage"]
    pipeline: TextOrInt | None = None
    stage: TextOrInt


Entity = Literal["lead", "main_contact", "all_contacts", "chat_contact", "company"]


class ChangeResponsible(_Action):
    do: Literal["change_responsible"]
    user: TextOrInt
    entities: Annotated[list[Entity], Field(min_length=1)] = ["lead"]


class CreateLead(_Action):
    do: Literal["create_lead"]
    copy_: list[Literal["price", "tags", "contacts", "company", "fields"]] = Field(
        default=[], alias="copy"
    )
    name: Template | None = None
    responsible: TextOrInt | None = None
    pipeline: TextOrInt | None = None
    stage: TextOrInt | None = None


class Subscribers(_Action):
    do: Literal["subscribers"]
    add: list[TextOrInt] = []
    remove: list[TextOrInt] = []


class Tags(_Action):
    do: Literal["tags"]
    entity: Literal["lead", "contact", "company"] = "lead"
    add: list[Template] = []
    remove: list[Template] = []

    @model_validator(mode="after")
    def _something(self) -> Tags:
        if not self.add and not self.remove:
            raise ValueError("tags needs add, remove or both")
        return self


class EmailTemplate(Model):
    subject: Template
    body: Template


class SendEmail(_Action):
    do: Literal["send_email"]
    template: str | EmailTemplate
    to: Literal["main_contact", "all_contacts"] = "main_contact"
    sender: TextOrInt = "responsible"
    unsubscribe_link: Bool = True


class SendWebhook(_Action):
    do: Literal["send_webhook"]
    url: Template
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    headers: dict[str, Template] = {}
    body: TemplateValue = None
    save_as: VarName = "json"
    timeout: Duration = 10


class SetField(_Action):
    do: Literal["set_field"]
    entity: Literal["lead", "contact", "company"] = "lead"
    field: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    value: TemplateValue = None
    from_: Literal["message", "manual"] | None = Field(default=None, alias="from")

    @model_validator(mode="after")
    def _one_source(self) -> SetField:
        if (self.value is None) == (self.from_ is None):
            raise ValueError('set_field takes exactly one of value or from ("message" or "manual")')
        return self


class SetVariable(_Action):
    do: Literal["set_variable"]
    name: VarName
    value: TemplateValue


class CreateForm(_Action):
    do: Literal["create_form"]
    form: Literal["individual", "referral"] = "individual"
    fields: Annotated[list[str], Field(min_length=1)]
    tags: list[Template] = []
    stage: TextOrInt | None = None


class OrderLink(_Action):
    """A quick-order link for the conversation's contact, kept in ``vars.order_url``
    (docs/customers.md); ``expires``: 1 hour to 365 days, default the server's."""

    do: Literal["order_link"]
    expires: Duration | None = None

    @model_validator(mode="after")
    def _range(self) -> OrderLink:
        if self.expires is not None and not 3600 <= int(self.expires) <= 365 * 86400:
            raise ValueError("order_link expires after 1h to 365d")
        return self


class MetaConversion(_Action):
    do: Literal["meta_conversion"]
    event: Annotated[str, StringConstraints(min_length=1)]
    value: TemplateValue = None
    currency: str | None = None


Action = Annotated[
    AddNote | AddTask | CompleteTasks | SetChatStatus | ChangeStage | ChangeResponsible | CreateLead | Subscribers
    | Tags | SendEmail | SendWebhook | SetField | SetVariable | CreateForm | MetaConversion | OrderLink
    | StartProcess | EndProcess | Score | Lists | Notify | SendSms | SendMessage,
    Field(discriminator="do"),
]


class ActionStep(Model):
    type: Literal["action"]
    actions: Annotated[list[Action], Field(min_length=1)]
    next: StepId | None = None
    failed: StepId | None = None


# ---------------------------------------------------------------- the rest
class InternalMessageStep(Model):
    type: Literal["internal_message"]
    text: Template
    to: list[Annotated[str, StringConstraints(pattern=r"^(user|team):[A-Za-z0-9_.@-]+$")]] = []
    next: StepId | None = None


class SubscribeStep(_Sending):
    type: Literal["subscribe"]
    tag: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    title: Annotated[str, StringConstraints(min_length=1, max_length=65)]
    next: StepId | None = None


class CommentStep(Model):
    type: Literal["comment"]
    text: Template
    next: StepId | None = None
    failed: StepId | None = None


class GotoStep(Model):
    type: Literal["goto"]
    step: StepId


class StartBotStep(Model):
    type: Literal["start_bot"]
    bot: BotId
    next: StepId | None = None


class RoundRobinStep(Model):
    type: Literal["round_robin"]
    options: Annotated[list[StepId], Field(min_length=2, max_length=100)]


class WidgetWait(Model):
    timeout: TimerDuration
    on_timeout: StepId | None = None


class WidgetStep(Model):
    type: Literal["widget"]
    widget: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    params: dict[str, TemplateValue] = {}
    wait: WidgetWait | None = None
    next: StepId | None = None
    failed: StepId | None = None


class CustomStep(Model):
    type: Literal["custom"]
    handler: Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_.]*$")]
    params: dict[str, TemplateValue] = {}
    next: StepId | None = None
    failed: StepId | None = None


class StopStep(Model):
    type: Literal["stop"]
    close_chat: Bool = False


from .models_split import Goal as Goal  # noqa: E402 - after the models it names in its own
from .models_split import SplitStep as SplitStep  # noqa: E402

Step = Annotated[
    MessageStep | ListStep | ConditionStep | ValidationStep | PauseStep | ActionStep | InternalMessageStep
    | SubscribeStep | CommentStep | GotoStep | StartBotStep | RoundRobinStep | WidgetStep | CustomStep | StopStep
    | SplitStep,
    Field(discriminator="type"),
]


class Settings(Model):
    timezone: str = "UTC"
    working_hours: dict[str, str] | None = None
    leave_unanswered: Bool = False
    step_budget: Annotated[int, Field(ge=1, le=10_000), WHOLE] = 100
    #: Analytics: a run waiting at a step longer than this has abandoned the flow there.
    abandon_after: Duration = 86400


class Flow(Model):
    format: Literal["salesbot.flow/1"]
    id: BotId
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    start: StepId
    settings: Settings = Settings()
    variables: dict[VarName, Any] = {}
    steps: Annotated[dict[StepId, Step], Field(min_length=1)]
    goals: Annotated[dict[Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")], Goal],
                     Field(max_length=50)] = {}
