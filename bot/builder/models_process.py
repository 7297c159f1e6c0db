"""Pydantic models of the process actions (SALESmanago automation processes), valid in every flow.

A process is a flow started for a contact; it runs in the contact's process conversation, which
has no channel of its own, so it reaches the contact through these actions. They are joined into
``bot.builder.models.Action``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints, model_validator

from .model_base import WHOLE, BotId, Model, Template, TemplateValue
from .process_names import EMAIL_LIST

MAX_BUTTONS = 13  # models.MAX_BUTTONS: a message step's
#: How many addresses one ``notify`` may write to.
MAX_NOTIFY = 5
#: A contact list's name: what ``lists`` subscribes to (``email``: the e-mail opt-out).
ListName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")]
AccountName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
Address = Annotated[str, StringConstraints(pattern=r"^[^@\s<>,;]{1,64}@[^@\s<>,;]{1,255}$")]


class StartProcess(Model):
    """Start process ``process`` for the conversation's contact (in its own process conversation)."""

    do: Literal["start_process"]
    process: BotId
    variables: dict[str, TemplateValue] = Field(default_factory=dict)


class EndProcess(Model):
    """End the run here (a process, or any flow), whatever calls it."""

    do: Literal["end_process"]


class Score(Model):
    do: Literal["score"]
    add: Annotated[int, Field(ge=1, le=1_000_000), WHOLE] | None = None
    subtract: Annotated[int, Field(ge=1, le=1_000_000), WHOLE] | None = None

    @model_validator(mode="after")
    def _one(self) -> Score:
        if (self.add is None) == (self.subtract is None):
            raise ValueError("score takes exactly one of add or subtract (a positive number)")
        return self


class Lists(Model):
    do: Literal["lists"]
    subscribe: list[ListName] = Field(default_factory=list, max_length=20)
    unsubscribe: list[ListName] = Field(default_factory=list, max_length=20)

    @model_validator(mode="after")
    def _something(self) -> Lists:
        if not self.subscribe and not self.unsubscribe:
            raise ValueError("lists needs subscribe, unsubscribe or both")
        if set(self.subscribe) & set(self.unsubscribe):
            raise ValueError("a list is either subscribed or unsubscribed, not both")
        if EMAIL_LIST in self.subscribe:
            raise ValueError(f'"{EMAIL_LIST}" cannot be subscribed by a flow: a contact that unsubscribed '
                             "from e-mail opts in again only by itself")
        return self


class Notify(Model):
    """An internal notification e-mail to the team (never to the contact)."""

    do: Literal["notify"]
    to: Annotated[list[Address], Field(min_length=1, max_length=MAX_NOTIFY)]
    subject: Template = "Salesbot: {{ contact.name or 'a contact' }}"
    text: Annotated[str, StringConstraints(min_length=1, max_length=10_000)]


class SendSms(Model):
    do: Literal["send_sms"]
    account: AccountName
    text: Annotated[str, StringConstraints(min_length=1, max_length=1600)]


class ProcessButton(Model):
    """A button of ``send_message``: a quick reply (its answer reaches the contact's chat) or a link."""

    title: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    url: str | None = None


class SendMessage(Model):
    do: Literal["send_message"]
    account: AccountName
    text: Template | None = None
    buttons: list[ProcessButton] = Field(default_factory=list, max_length=MAX_BUTTONS)
    #: WhatsApp outside the 24-hour window: this approved template is sent instead (``params`` fill it).
    template: Annotated[str, StringConstraints(min_length=1, max_length=512)] | None = None
    params: dict[str, TemplateValue] | list[TemplateValue] | None = None

    @model_validator(mode="after")
    def _content(self) -> SendMessage:
        if self.text is None and self.template is None:
            raise ValueError("send_message needs text, a template or both")
        return self


ProcessAction = StartProcess | EndProcess | Score | Lists | Notify | SendSms | SendMessage

