"""The bases every flow model module shares: the model base class, durations, ids, templates.

Apart from ``models.py`` so that the modules that add to the format (``models_split.py`` …)
build on them without importing ``models``, which imports them (no import cycle).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from .durations import MAX_TIMER_SECONDS, DurationError, parse_duration


def _ignored(key: object) -> bool:
    """``x-*`` builder metadata, and ``$schema`` (editors use it to find flows/schema.json)."""
    return isinstance(key, str) and (key.startswith("x-") or key == "$schema")


def _drop_builder_metadata(data: Any) -> Any:
    if isinstance(data, dict) and any(_ignored(k) for k in data):
        return {k: v for k, v in data.items() if not _ignored(k)}
    return data


class Model(BaseModel):
    """Base of every model: frozen, unknown keys forbidden, ``x-*`` keys ignored."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        populate_by_name=True,
        json_schema_extra={"patternProperties": {"^x-": {}}},
    )

    @model_validator(mode="before")
    @classmethod
    def _metadata(cls, data: Any) -> Any:
        return _drop_builder_metadata(data)


def _duration(value: object) -> int:
    try:
        return parse_duration(value)
    except DurationError as exc:
        raise ValueError(str(exc)) from None


def _timer_duration(value: object) -> int:
    seconds = _duration(value)
    if seconds > MAX_TIMER_SECONDS:
        raise ValueError("a timer can wait at most 8760h 60m 60s")
    if seconds < 1:
        raise ValueError("a timer must wait at least 1 second")
    return seconds


Duration = Annotated[
    int | str,
    AfterValidator(_duration),
    Field(json_schema_extra={"pattern": r"^(\d+[dhms])+$|^\d+$"}),
]
TimerDuration = Annotated[int | str, AfterValidator(_timer_duration)]
StepId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
#: A bot's id (an automation document's too): it is in URLs and keys.
BOT_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
BotId = Annotated[str, StringConstraints(pattern=BOT_ID_PATTERN)]
VarName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]
#: Any string shown to a customer or passed to an action is a Jinja2 template.
Template = str
TemplateValue = str | int | float | bool | None | list[Any] | dict[str, Any]
