"""Durations as operators write them: ``"90s"``, ``"15m"``, ``"1h30m"``, ``"3d"`` or seconds."""

from __future__ import annotations

import re

_PART = re.compile(r"(\d+)([dhms])")
_WHOLE = re.compile(r"^(?:\d+[dhms])+$")
_UNIT = {"d": 86400, "h": 3600, "m": 60, "s": 1}

#: Kommo's pause limit: 8760 h + 60 min + 60 s.
MAX_TIMER_SECONDS = 8760 * 3600 + 60 * 60 + 60


class DurationError(ValueError):
    """A duration could not be read."""


def parse_duration(value: object) -> int:
    """Return the duration in whole seconds, or raise ``DurationError`` saying what is wrong."""
    if isinstance(value, bool):
        raise DurationError("a duration is a string like \"15m\" or a number of seconds")
    if isinstance(value, int):
        if value < 0:
            raise DurationError("a duration cannot be negative")
        return value
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return int(value)
    if not isinstance(value, str):
        raise DurationError("a duration is a string like \"15m\" or a number of seconds")
    text = value.strip().lower().replace(" ", "")
    if text.isascii() and text.isdigit():  # not "²", which isdigit() but int() refuses
        return int(text)
    if not _WHOLE.match(text):
        raise DurationError(f'"{value}" is not a duration (examples: "90s", "15m", "1h30m", "3d")')
    units_seen: list[str] = []
    total = 0
    for amount, unit in _PART.findall(text):
        if unit in units_seen:
            raise DurationError(f'"{value}" repeats the unit "{unit}"')
        units_seen.append(unit)
        total += int(amount) * _UNIT[unit]
    return total


def format_duration(seconds: int) -> str:
    """The short form of a number of seconds (``5400`` -> ``"1h30m"``)."""
    if seconds == 0:
        return "0s"
    out = []
    for unit, size in _UNIT.items():
        amount, seconds = divmod(seconds, size)
        if amount:
            out.append(f"{amount}{unit}")
    return "".join(out)
