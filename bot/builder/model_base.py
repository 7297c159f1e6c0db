"""The bases every flow model module shares: the model base class, durations, ids, templates.

Apart from ``models.py`` so that the modules that add to the format (``models_split.py`` …)
build on them without importing ``models``, which imports them (no import cycle).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
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


#: Whether scalars of the wrong type are converted as pydantic's lax mode did (documents stored
#: before the validator refused them: ``lenient_scalars``), rather than refused.
_LENIENT: ContextVar[bool] = ContextVar("salesbot_lenient_scalars", default=False)


@contextmanager
def lenient_scalars() -> Iterator[None]:
    """Within it, ``"yes"`` is true, ``"100"`` is 100 and ``true`` is 1 again, as the validator
    read them before it refused them: for stored versions only, which were valid when stored
    (``BotRegistry.ensure``), never for a document being uploaded or validated."""
    token = _LENIENT.set(True)
    try:
        yield
    finally:
        _LENIENT.reset(token)


def _strict_bool(value: object) -> object:
    if not isinstance(value, bool) and not _LENIENT.get():
        raise ValueError("must be true or false")
    return value


def _strict_int(value: object) -> object:
    """A JSON integer: ``2`` or ``2.0`` (JSON Schema's "integer" takes both), not ``"2"`` nor ``true``."""
    if _LENIENT.get():
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("must be a whole number")
    return value


def _strict_number(value: object) -> object:
    if (isinstance(value, bool) or not isinstance(value, (int, float))) and not _LENIENT.get():
        raise ValueError("must be a number")
    return value


def _text_or_int(value: object) -> object:
    """A string or a JSON integer (an id or a name), not ``true``."""
    if _LENIENT.get() or isinstance(value, str):
        return value
    try:
        return _strict_int(value)
    except ValueError:
        raise ValueError("must be a string or a whole number") from None


#: ``true`` or ``false``, nothing else (pydantic's lax mode read "yes", "on" and 1 as true).
Bool = Annotated[bool, BeforeValidator(_strict_bool)]
#: Makes an ``int`` a whole number, not a string of digits nor a boolean. After the ``Field``
#: limits in an ``Annotated`` (``Annotated[int, Field(ge=1), WHOLE]``): before them the schema
#: would name the limits ``ge``/``le``, which JSON Schema does not know.
WHOLE = BeforeValidator(_strict_int)
#: A whole number, not a string of digits nor a boolean.
Int = Annotated[int, WHOLE]
#: A number, not a string of digits nor a boolean.
Number = Annotated[float, BeforeValidator(_strict_number)]
#: A string or a whole number (a user, a pipeline, a stage: by name or id).
TextOrInt = Annotated[str | int, BeforeValidator(_text_or_int)]


def _duration(value: object) -> int:
    if isinstance(value, bool) and _LENIENT.get():
        value = int(value)  # lax mode read true as 1 (second)
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


# Checked before the union, which would read ``true`` as 1.
Duration = Annotated[
    int | str,
    BeforeValidator(_duration),
    Field(json_schema_extra={"pattern": r"^(\d+[dhms])+$|^\d+$"}),
]
TimerDuration = Annotated[int | str, BeforeValidator(_timer_duration)]
StepId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
#: A bot's id (an automation document's too): it is in URLs and keys.
BOT_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
BotId = Annotated[str, StringConstraints(pattern=BOT_ID_PATTERN)]
VarName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]
#: Any string shown to a customer or passed to an action is a Jinja2 template.
Template = str
TemplateValue = str | int | float | bool | None | list[Any] | dict[str, Any]
