"""Durations as operators write them."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.builder.durations import MAX_TIMER_SECONDS, DurationError, format_duration, parse_duration


@pytest.mark.parametrize(("value", "seconds"), [
    ("90s", 90), ("15m", 900), ("2h", 7200), ("3d", 259200), ("1h30m", 5400), (5400, 5400),
    ("5400", 5400), (0, 0), ("0s", 0), ("1d2h3m4s", 93784), (" 1h 30m ", 5400), ("2H", 7200),
    (60.0, 60), ("30m1h", 5400),
])
def test_parse(value: Any, seconds: int) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(("value", "message"), [
    ("90 minutes", '"90 minutes" is not a duration (examples: "90s", "15m", "1h30m", "3d")'),
    ("1.5h", '"1.5h" is not a duration (examples: "90s", "15m", "1h30m", "3d")'),
    ("", '"" is not a duration (examples: "90s", "15m", "1h30m", "3d")'),
    ("h", '"h" is not a duration (examples: "90s", "15m", "1h30m", "3d")'),
    ("1w", '"1w" is not a duration (examples: "90s", "15m", "1h30m", "3d")'),
    ("-5m", '"-5m" is not a duration (examples: "90s", "15m", "1h30m", "3d")'),
    ("²", '"²" is not a duration (examples: "90s", "15m", "1h30m", "3d")'),
    ("1h1h", '"1h1h" repeats the unit "h"'),
    (-1, "a duration cannot be negative"),
    (True, 'a duration is a string like "15m" or a number of seconds'),
    (1.5, 'a duration is a string like "15m" or a number of seconds'),
    (None, 'a duration is a string like "15m" or a number of seconds'),
    ([1], 'a duration is a string like "15m" or a number of seconds'),
])
def test_rejections(value: Any, message: str) -> None:
    with pytest.raises(DurationError) as info:
        parse_duration(value)
    assert str(info.value) == message


def test_duration_error_is_a_value_error() -> None:
    assert issubclass(DurationError, ValueError)


def test_timer_limit_is_8760h_60m_60s() -> None:
    assert MAX_TIMER_SECONDS == parse_duration("8760h60m60s") == 31_539_660


@pytest.mark.parametrize(("seconds", "text"), [(0, "0s"), (90, "1m30s"), (5400, "1h30m"), (86400, "1d"),
                                               (93784, "1d2h3m4s")])
def test_format(seconds: int, text: str) -> None:
    assert format_duration(seconds) == text


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=10 * MAX_TIMER_SECONDS))
def test_format_then_parse_round_trips(seconds: int) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=12), st.integers(), st.floats(), st.booleans(), st.none()))
def test_parse_returns_seconds_or_raises_duration_error(value: Any) -> None:
    try:
        seconds = parse_duration(value)
    except DurationError:
        return
    assert isinstance(seconds, int) and seconds >= 0
