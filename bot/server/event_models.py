"""The body of ``POST /api/events`` (bot/server/events_api.py) as pydantic models, built with the
first event a server receives rather than when it starts (issue 14: startup)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..automations.events import EVENT_TYPE_PATTERN, ID_PATTERN, is_known_type

#: How far in the future an event's ``at`` may be (the sender's clock may be ahead of ours).
MAX_FUTURE = 300


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LeadIn(_Strict):
    id: str = Field(pattern=ID_PATTERN)

    @field_validator("id", mode="before")
    @classmethod
    def _number(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class ExternalIn(_Strict):
    channel: str = Field(pattern=ID_PATTERN)
    id: str = Field(min_length=1, max_length=200)


class ContactIn(_Strict):
    id: str | None = Field(None, pattern=ID_PATTERN)
    phone: str | None = Field(None, max_length=40)
    email: str | None = Field(None, max_length=254)
    external: ExternalIn | None = None

    @field_validator("id", mode="before")
    @classmethod
    def _number(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @model_validator(mode="after")
    def _one(self) -> ContactIn:
        if sum(v is not None for v in (self.id, self.phone, self.email, self.external)) != 1:
            raise ValueError("a contact is one of {id}, {phone}, {email} or {external: {channel, id}}")
        return self


class EventIn(_Strict):
    id: str | None = Field(None, pattern=r"^[\x21-\x7e]{1,200}$")
    type: str = Field(max_length=100, pattern=EVENT_TYPE_PATTERN)
    at: datetime | None = None
    lead: LeadIn | None = None
    contact: ContactIn | None = None
    data: dict[str, Any] = {}

    @field_validator("type")
    @classmethod
    def _known(cls, value: str) -> str:
        if not is_known_type(value):
            raise ValueError(f"unknown event type {value!r} (a type of the spec, or custom.<name>)")
        return value

    @field_validator("at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value
        # An event tells what happened: one from the future would hold the lead's ``idle`` rules
        # (quiet since its time) and its delays until then. Clocks may differ by a few minutes.
        if value.timestamp() > time.time() + MAX_FUTURE:
            raise ValueError(f"is more than {MAX_FUTURE // 60} minutes in the future (an event tells what happened)")
        return value

    @model_validator(mode="after")
    def _whom(self) -> EventIn:
        if self.lead is None and self.contact is None:
            raise ValueError("an event concerns a lead ({\"id\"}) or a contact")
        return self


def details(exc: ValidationError) -> list[dict[str, str]]:
    """The problems of an invalid body, as the error shape's ``details`` (JSON pointers)."""
    return [{"pointer": "/" + "/".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors()]
