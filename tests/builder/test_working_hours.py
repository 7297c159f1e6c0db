"""Working hours: is_open and next_opening, in the flow's timezone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.builder.working_hours import WorkingHours, WorkingHoursError

IST = ZoneInfo("Europe/Istanbul")  # UTC+3 all year
BERLIN = ZoneInfo("Europe/Berlin")
UTC = UTC
OFFICE = {"mon-fri": "09:00-12:00,13:00-18:00", "sat": "10:00-14:00"}


def ist(day: int, hour: int, minute: int = 0) -> datetime:
    """A time in Istanbul in the week of Monday 2026-11-23 (day 23 = Monday … 29 = Sunday)."""
    return datetime(2026, 11, day, hour, minute, tzinfo=IST)


def test_no_spec_means_always_open() -> None:
    hours = WorkingHours.parse(None, IST)
    assert hours.always
    assert hours.is_open(ist(29, 3))
    assert hours.next_opening(ist(29, 3)) == ist(29, 3)
    assert WorkingHours.parse({}, IST).always


def test_parse_days_and_ranges() -> None:
    hours = WorkingHours.parse(OFFICE, IST)
    weekday = ((540, 720), (780, 1080))
    assert hours.week == (weekday,) * 5 + (((600, 840),), ())
    assert not hours.always


@pytest.mark.parametrize(("when", "open_"), [
    (ist(25, 8, 59), False), (ist(25, 9, 0), True), (ist(25, 11, 59), True), (ist(25, 12, 0), False),
    (ist(25, 12, 30), False), (ist(25, 13, 0), True), (ist(25, 17, 59), True), (ist(25, 18, 0), False),
    (ist(28, 10, 0), True), (ist(28, 14, 0), False), (ist(29, 12, 0), False),
])
def test_is_open(when: datetime, open_: bool) -> None:
    assert WorkingHours.parse(OFFICE, IST).is_open(when) is open_


def test_is_open_converts_to_the_flow_timezone() -> None:
    hours = WorkingHours.parse(OFFICE, IST)
    # 06:30 UTC is 09:30 in Istanbul: open; 05:59 UTC is 08:59: closed.
    assert hours.is_open(datetime(2026, 11, 25, 6, 30, tzinfo=UTC))
    assert not hours.is_open(datetime(2026, 11, 25, 5, 59, tzinfo=UTC))
    # 23:30 UTC on Friday is 02:30 on Saturday in Istanbul: closed, though Friday.
    assert not hours.is_open(datetime(2026, 11, 27, 23, 30, tzinfo=UTC))
    # 07:30 UTC Saturday is 10:30 in Istanbul: Saturday hours.
    assert hours.is_open(datetime(2026, 11, 28, 7, 30, tzinfo=UTC))


@pytest.mark.parametrize(("when", "expected"), [
    (ist(25, 10), ist(25, 10)),          # open: now
    (ist(25, 7), ist(25, 9)),            # before opening: same day
    (ist(25, 12, 30), ist(25, 13)),      # lunch break: the afternoon range
    (ist(25, 19), ist(26, 9)),           # evening: next morning
    (ist(27, 18, 30), ist(28, 10)),      # Friday evening: Saturday's hours
    (ist(28, 15), ist(30, 9)),           # Saturday afternoon: Monday, over a closed Sunday
    (ist(29, 23, 59), ist(30, 9)),
])
def test_next_opening(when: datetime, expected: datetime) -> None:
    got = WorkingHours.parse(OFFICE, IST).next_opening(when)
    assert got == expected
    assert got.utcoffset() == timedelta(hours=3)


def test_next_opening_from_utc_gives_the_same_instant() -> None:
    hours = WorkingHours.parse(OFFICE, IST)
    got = hours.next_opening(datetime(2026, 11, 27, 16, 0, tzinfo=UTC))  # Friday 19:00 in Istanbul
    assert got == datetime(2026, 11, 28, 7, 0, tzinfo=UTC)  # Saturday 10:00 in Istanbul


def test_next_opening_across_a_dst_change() -> None:
    hours = WorkingHours.parse({"mon-fri": "09:00-18:00"}, BERLIN)
    # Saturday 2026-03-28 (CET, +1) -> Monday 2026-03-30 09:00 CEST (+2); clocks moved on Sunday.
    got = hours.next_opening(datetime(2026, 3, 28, 12, 0, tzinfo=BERLIN))
    assert got == datetime(2026, 3, 30, 7, 0, tzinfo=UTC)
    assert got.utcoffset() == timedelta(hours=2)


def test_a_single_day_once_a_week() -> None:
    hours = WorkingHours.parse({"wed": "10:00-11:00"}, IST)
    assert hours.next_opening(ist(25, 11)) == datetime(2026, 12, 2, 10, 0, tzinfo=IST)
    assert hours.next_opening(ist(25, 9, 59)) == ist(25, 10)


def test_wrapping_day_range() -> None:
    hours = WorkingHours.parse({"fri-mon": "10:00-16:00"}, IST)
    assert [bool(day) for day in hours.week] == [True, False, False, False, True, True, True]
    assert hours.is_open(ist(29, 12)) and hours.is_open(ist(23, 12))
    assert not hours.is_open(ist(25, 12))
    assert hours.next_opening(ist(24, 12)) == ist(27, 10)


def test_comma_separated_days_and_until_midnight() -> None:
    hours = WorkingHours.parse({"mon,wed": "20:00-24:00", "sun": "00:00-24:00"}, IST)
    assert hours.is_open(ist(23, 23, 59)) and not hours.is_open(ist(24, 23))
    assert hours.is_open(ist(29, 0, 0)) and hours.is_open(ist(29, 23, 59))
    assert hours.next_opening(ist(24, 12)) == ist(25, 20)


def test_day_names_are_case_insensitive_and_spaces_ignored() -> None:
    hours = WorkingHours.parse({"Mon - Fri": "09:00 - 18:00"}, IST)
    assert hours.is_open(ist(23, 9))


@pytest.mark.parametrize(("spec", "message"), [
    ({"mon-fry": "09:00-18:00"}, '"mon-fry" is not a day range (use mon..sun, e.g. "mon-fri")'),
    ({"weekdays": "09:00-18:00"}, '"weekdays" is not a day or day range (use mon..sun, e.g. "mon-fri")'),
    ({"mon": "9-18"}, '"9-18" is not a time range like "09:00-18:00"'),
    ({"mon": "09:00"}, '"09:00" is not a time range like "09:00-18:00"'),
    ({"mon": "09:0-18:00"}, '"09:0-18:00" is not a time range like "09:00-18:00"'),
    ({"mon": "18:00-09:00"}, '"18:00-09:00" ends before it starts'),
    ({"mon": "09:00-09:00"}, '"09:00-09:00" ends before it starts'),
    ({"mon": "09:00-24:30"}, '"24:30" is not a time of day'),
    ({"mon": "09:60-10:00"}, '"09:60" is not a time of day'),
    ({"mon": "٠٩:٠٠-18:00"}, '"٠٩:٠٠-18:00" is not a time range like "09:00-18:00"'),
    ({"mon": 9}, 'the hours of "mon" must be a string like "09:00-18:00"'),
])
def test_parse_errors(spec: dict, message: str) -> None:
    with pytest.raises(WorkingHoursError) as info:
        WorkingHours.parse(spec, IST)
    assert str(info.value) == message


@settings(max_examples=200, deadline=None)
@given(st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2035, 1, 1), timezones=st.just(UTC)))
def test_next_opening_is_open_and_nothing_opens_before_it(when: datetime) -> None:
    hours = WorkingHours.parse(OFFICE, IST)
    got = hours.next_opening(when)
    assert got >= when
    assert hours.is_open(got)
    # Whole minutes between `when` and the opening are closed.
    probe = when.replace(second=0, microsecond=0) + timedelta(minutes=1)
    if got > when:
        assert not hours.is_open(when)
        steps = 0
        while probe < got and steps < 200:
            assert not hours.is_open(probe)
            probe += timedelta(minutes=37)
            steps += 1
