"""Effects: what the interpreter asks the shell to do. Plain values (not frozen: they are
built on the hot path, and frozen dataclasses cost a setattr call per field)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..messages import OutAttachment, OutButton, OutList, OutRow

__all__ = [
    "CancelTimer", "ChatStatus", "Effect", "InternalMessage", "OutAttachment", "OutButton", "OutList",
    "OutRow", "Request", "SendMessage", "SetTimer", "SplitCount", "Trace",
]


@dataclass(slots=True)
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


@dataclass(slots=True)
class SetTimer:
    timer_id: str
    at: float  # epoch seconds
    purpose: str  # no_answer | pause | working_hours | widget_timeout


@dataclass(slots=True)
class CancelTimer:
    timer_id: str


@dataclass(slots=True)
class InternalMessage:
    text: str
    to: tuple[str, ...] = ()


@dataclass(slots=True)
class ChatStatus:
    status: str  # answered | closed | unanswered


@dataclass(slots=True)
class Request:
    """Work the shell must do and answer with ``RequestResult`` before any other event.

    ``kind``: ``action`` (a CRM command or outward action, payload has ``do``),
    ``round_robin``, ``widget`` or ``custom``.
    """

    id: str
    kind: str
    payload: dict[str, Any]


@dataclass(slots=True)
class Trace:
    """A structured log line and dashboard event (``run.started``, ``step.error`` …)."""

    event: str
    level: str = "info"
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class SplitCount:
    """Count one entry (``kind`` "entry") or goal ("goal") for a path of a split test. The shell
    adds it to the save of the turn's state (``SaveRequest.counters``), so it counts exactly once."""

    bot: str
    step: str
    generation: int  # the test's generation (a reset starts a new one)
    path: str
    kind: str  # entry | goal


Effect = SendMessage | SetTimer | CancelTimer | InternalMessage | ChatStatus | Request | Trace | SplitCount
