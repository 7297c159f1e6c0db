"""Signed durations (``"-1h"``, ``"+30m"``, ``"2d"``): how far from a date field a rule acts."""

from __future__ import annotations

from ..builder.durations import DurationError, parse_duration

#: A year either way: further than that is a mistake, not a plan.
MAX_OFFSET_SECONDS = 366 * 86400


def parse_offset(value: object) -> int:
    """Seconds (negative: before the date), or ``ValueError`` saying what is wrong."""
    if isinstance(value, bool):
        raise ValueError('an offset is a duration with an optional sign, such as "-1h" or "30m"')
    if isinstance(value, int):
        seconds = value
    elif isinstance(value, str):
        text = value.strip()
        sign = -1 if text.startswith("-") else 1
        try:
            seconds = sign * parse_duration(text.lstrip("+-"))
        except DurationError as exc:
            raise ValueError(f'{exc} (an offset may start with "-" for "before")') from None
    else:
        raise ValueError('an offset is a duration with an optional sign, such as "-1h" or "30m"')
    if abs(seconds) > MAX_OFFSET_SECONDS:
        raise ValueError("an offset is at most a year (366d) either way")
    return seconds
