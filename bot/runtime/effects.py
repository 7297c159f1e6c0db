"""Effects: what the interpreter asks the shell to do. Plain frozen values."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class OutButton:
    title: str
    payload: str | None = None  # None for URL buttons
    url: str | None = None
    number: int | None = None  # the number a customer may type instead (reply buttons)


@dataclass(frozen=True, slots=True)
class OutRow:
    id: str
    title: str
    description: str | None
    number: int


@dataclass(frozen=True, slots=True)
class OutList:
    button: str
    header: str | None
    footer: str | None
    sections: tuple[tuple[str, tuple[OutRow, ...]], ...]


@dataclass(frozen=True, slots=True)
class OutAttachment:
    kind: str
    url: str
    name: str | None = None


@dataclass(frozen=True, slots=True)
class SendMessage:
    """A message to the customer. ``ref`` comes back in ``DeliveryFailed``."""

    ref: str
    step: str
    kind: str = "message"  # message | list | subscribe | comment
    text: str = ""
    buttons: tuple[OutButton, ...] = ()
    list: OutList | None = None
    attachments: tuple[OutAttachment, ...] = ()
    template: str | None = None
    params: Any = None
    recipients: str = "chat"
    channel_mode: str | None = None
    channels: tuple[str, ...] | None = None
    tag: str | None = None  # subscribe: the topic
    marks_answered: bool = True


@dataclass(frozen=True, slots=True)
class SetTimer:
    timer_id: str
    at: float  # epoch seconds
    purpose: str  # no_answer | pause | working_hours | widget_timeout


@dataclass(frozen=True, slots=True)
class CancelTimer:
    timer_id: str


@dataclass(frozen=True, slots=True)
class InternalMessage:
    text: str
    to: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ChatStatus:
    status: str  # answered | closed | unanswered


@dataclass(frozen=True, slots=True)
class Request:
    """Work the shell must do and answer with ``RequestResult`` before any other event.

    ``kind``: ``action`` (a CRM command or outward action, payload has ``do``),
    ``round_robin``, ``widget`` or ``custom``.
    """

    id: str
    kind: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Trace:
    """A structured log line and dashboard event (``run.started``, ``step.error`` …)."""

    event: str
    level: str = "info"
    data: dict[str, Any] = field(default_factory=dict)


Effect = SendMessage | SetTimer | CancelTimer | InternalMessage | ChatStatus | Request | Trace
