"""Events: what can happen to a conversation. Plain frozen values, built by the shell."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Attachment:
    kind: str  # image, video, audio, voice, document, sticker, location, …
    url: str | None = None
    name: str | None = None
    mime: str | None = None


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """A customer's message. ``payload`` is set for a button or list click."""

    text: str = ""
    payload: str | None = None
    attachments: tuple[Attachment, ...] = ()
    message_id: str | None = None
    kind: str = "text"  # text, button, list, media, comment, referral
    start_param: str | None = None  # deep link / referral parameter
    greeting: str | None = None  # the bot that greets a conversation with no active run


@dataclass(frozen=True, slots=True)
class TimerFired:
    timer_id: str


@dataclass(frozen=True, slots=True)
class DeliveryFailed:
    """The channel could not deliver a message we sent (``ref`` from ``SendMessage``)."""

    ref: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class WidgetCallback:
    token: str
    body: Any = None


@dataclass(frozen=True, slots=True)
class VideoEvent:
    kind: str  # video_opened | video_closed


@dataclass(frozen=True, slots=True)
class CrmEvent:
    """A CRM or business event (``lead.stage_changed`` …); recorded for automations."""

    type: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Takeover:
    user: str


@dataclass(frozen=True, slots=True)
class Release:
    """A person hands the conversation back. ``answer``: the bot answers the customer's message
    that came while the person had it (else it is left unanswered by the bot, and said so)."""

    step: str | None = None
    user: str | None = None  # who handed back (the transcript says so)
    answer: bool = False


@dataclass(frozen=True, slots=True)
class StopBot:
    reason: str = "stopped"


@dataclass(frozen=True, slots=True)
class StartBot:
    bot: str
    step: str | None = None
    variables: dict[str, Any] = field(default_factory=dict)
    #: Start only if no run is active (a process started for a contact: decided in the turn, so
    #: two starts racing each other start it once); else an active run is replaced.
    if_idle: bool = False


@dataclass(frozen=True, slots=True)
class HumanMessage:
    """A person's message to the customer (support dashboard or API); the bot does not see it."""

    text: str
    user: str = "support"


@dataclass(frozen=True, slots=True)
class Relayed:
    """A bot message of another conversation of the same lead, for this conversation's customer
    (a message step's ``recipients``): sent here, unseen by this conversation's bot."""

    message: dict[str, Any]  # the transcript entry
    source: str = ""  # the conversation it comes from


@dataclass(frozen=True, slots=True)
class RequestResult:
    """The shell's answer to a ``Request`` effect.

    ``ok`` with ``value``; or not ok with ``error`` and ``permanent`` (the step's ``failed``
    branch) — a temporary failure the shell queued for retry is reported as ok.
    ``snapshot`` replaces the CRM snapshot the following steps see.
    """

    request_id: str
    ok: bool = True
    value: Any = None
    error: str | None = None
    permanent: bool = True
    snapshot: dict[str, Any] | None = None


def inbound_of(message: dict[str, Any]) -> InboundMessage:
    """The customer's message again, from the state's ``last_message`` (a held message the person
    lets the bot answer at hand-back)."""
    return InboundMessage(
        text=str(message.get("text") or ""), payload=message.get("payload"),
        attachments=tuple(Attachment(a.get("kind", "file"), a.get("url"), a.get("name"))
                          for a in message.get("attachments") or () if isinstance(a, dict)),
        message_id=message.get("id"), kind=str(message.get("kind") or "text"), start_param=message.get("start_param"))


Event = (
    InboundMessage | TimerFired | DeliveryFailed | WidgetCallback | VideoEvent | CrmEvent
    | Takeover | Release | StopBot | StartBot | RequestResult | HumanMessage | Relayed
)
