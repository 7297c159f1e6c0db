"""Working hours of a flow, in its timezone: ``{"mon-fri": "09:00-18:00", "sat": "10:00-14:00"}``.

Compiled once into per-weekday minute ranges; the runtime asks ``is_open`` and ``next_opening``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_MINUTES_PER_DAY = 24 * 60


class WorkingHoursError(ValueError):
    """The working-hours setting could not be read."""


def _parse_days(spec: str) -> list[int]:
    days: list[int] = []
    for part in spec.lower().replace(" ", "").split(","):
        if "-" in part:
            first, _, last = part.partition("-")
            if first not in DAYS or last not in DAYS:
                raise WorkingHoursError(f'"{spec}" is not a day range (use mon..sun, e.g. "mon-fri")')
            a, b = DAYS.index(first), DAYS.index(last)
            days.extend(range(a, b + 1) if a <= b else [*range(a, 7), *range(b + 1)])
        elif part in DAYS:
            days.append(DAYS.index(part))
        else:
            raise WorkingHoursError(f'"{spec}" is not a day or day range (use mon..sun, e.g. "mon-fri")')
    return days


def _parse_clock(text: str, spec: str) -> int:
    hh, sep, mm = text.partition(":")
    if not sep or not (hh + mm).isascii() or not hh.isdigit() or not mm.isdigit() or len(mm) != 2:
        raise WorkingHoursError(f'"{spec}" is not a time range like "09:00-18:00"')
    h, m = int(hh), int(mm)
    if h == 24 and m == 0:
        return _MINUTES_PER_DAY
    if not (0 <= h < 24 and 0 <= m < 60):
        raise WorkingHoursError(f'"{text}" is not a time of day')
    return h * 60 + m


def _parse_ranges(spec: str) -> list[tuple[int, int]]:
    ranges = []
    for part in spec.replace(" ", "").split(","):
        start_text, sep, end_text = part.partition("-")
        if not sep:
            raise WorkingHoursError(f'"{spec}" is not a time range like "09:00-18:00"')
        start, end = _parse_clock(start_text, spec), _parse_clock(end_text, spec)
        if end <= start:
            raise WorkingHoursError(f'"{part}" ends before it starts')
        ranges.append((start, end))
    return ranges


@dataclass(frozen=True, slots=True)
class WorkingHours:
    """Open minute ranges per weekday (0 = Monday); ``always`` when no hours were given."""

    tz: ZoneInfo
    week: tuple[tuple[tuple[int, int], ...], ...]
    always: bool = False

    @classmethod
    def parse(cls, spec: dict[str, str] | None, tz: ZoneInfo) -> WorkingHours:
        if not spec:
            return cls(tz=tz, week=((),) * 7, always=True)
        week: list[list[tuple[int, int]]] = [[] for _ in range(7)]
        for days, ranges in spec.items():
            if not isinstance(ranges, str):
                raise WorkingHoursError(f'the hours of "{days}" must be a string like "09:00-18:00"')
            parsed = _parse_ranges(ranges)
            for day in _parse_days(days):
                week[day].extend(parsed)
        return cls(tz=tz, week=tuple(tuple(sorted(d)) for d in week))

    def is_open(self, when: datetime) -> bool:
        if self.always:
            return True
        local = when.astimezone(self.tz)
        minute = local.hour * 60 + local.minute
        return any(start <= minute < end for start, end in self.week[local.weekday()])

    def next_opening(self, when: datetime) -> datetime:
        """``when`` itself if open, otherwise the next moment the hours begin (aware, UTC-safe)."""
        if self.is_open(when):
            return when
        local = when.astimezone(self.tz)
        for offset in range(8):
            day = (local + timedelta(days=offset)).date()
            for start, _end in self.week[day.weekday()]:
                candidate = datetime.combine(day, time(start // 60, start % 60), tzinfo=self.tz)
                if candidate > local:
                    return candidate
        raise WorkingHoursError("working hours have no open time in the week")
