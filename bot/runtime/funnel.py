"""The funnel of a bot version over a range of days, from its day counters (``bot.engine.analytics``).

Pure: the caller reads the counters and passes the clock. For each step: visits that entered,
left (by target step, or ``@bot`` for a start_bot), ended there, abandoned there (still there, on
days wholly older than ``abandon_after``), still waiting (the same on younger days: they may yet
move on) and the median time at the step (of the visits that closed; bucketed, ±19 %).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..engine.analytics import DAY, bucket_middle


@dataclass(slots=True)
class StepFunnel:
    step: str
    entered: int = 0
    left: dict[str, int] = field(default_factory=dict)
    ended: int = 0
    abandoned: int = 0
    waiting: int = 0
    #: Closed visits by dwell bucket (``bot.engine.analytics.bucket``); ``instant``: under a second.
    buckets: dict[int, int] = field(default_factory=dict)
    instant: int = 0

    @property
    def left_total(self) -> int:
        return sum(self.left.values())

    @property
    def median_seconds(self) -> float | None:
        """The median time at the step of the visits that closed (None: none did)."""
        closed = self.instant + sum(self.buckets.values())
        if closed == 0:
            return None
        half = (closed + 1) // 2  # the lower median: the visit at this rank, counted from 1
        if half <= self.instant:
            return 0.0
        seen = self.instant
        for k in sorted(self.buckets):
            seen += self.buckets[k]
            if seen >= half:
                return round(bucket_middle(k), 1)
        return None  # pragma: no cover - the buckets add up to closed

    def as_dict(self) -> dict[str, Any]:
        return {"step": self.step, "entered": self.entered, "left": dict(sorted(self.left.items())),
                "left_total": self.left_total, "ended": self.ended, "abandoned": self.abandoned,
                "waiting": self.waiting, "drop_off": self.ended + self.abandoned,
                "median_seconds": self.median_seconds}


def _day_funnel(fields: Mapping[str, int]) -> dict[str, StepFunnel]:
    steps: dict[str, StepFunnel] = {}

    def of(name: str) -> StepFunnel:
        found = steps.get(name)
        if found is None:
            found = steps[name] = StepFunnel(name)
        return found

    for name, n in fields.items():
        kind, _, rest = name.partition("|")
        if kind == "e":
            of(rest).entered += n
        elif kind == "x":
            of(rest).ended += n
        elif kind == "l" or kind == "m":
            step, _, target = rest.partition("|")
            f = of(step)
            f.left[target] = f.left.get(target, 0) + n
            if kind == "m":  # a move within the day: the target's entry too
                of(target).entered += n
        elif kind == "t":
            step, _, k = rest.rpartition("|")
            try:
                b = int(k)
            except ValueError:
                continue
            f = of(step)
            f.buckets[b] = f.buckets.get(b, 0) + n
    return steps


def funnel(days: Mapping[int, Mapping[str, int]], *, order: Iterable[str], abandon_after: float,
           now: float) -> list[StepFunnel]:
    """One ``StepFunnel`` per step (``order`` first, then steps only the counters know)."""
    total: dict[str, StepFunnel] = {s: StepFunnel(s) for s in order}
    for day, fields in days.items():
        final = (day + 1) * DAY + abandon_after <= now  # every visit of the day is older than abandon_after
        for name, f in _day_funnel(fields).items():
            t = total.get(name)
            if t is None:
                t = total[name] = StepFunnel(name)
            closed = f.left_total + f.ended
            still = max(0, f.entered - closed)
            t.entered += f.entered
            t.ended += f.ended
            for target, n in f.left.items():
                t.left[target] = t.left.get(target, 0) + n
            if final:
                t.abandoned += still
            else:
                t.waiting += still
            for k, n in f.buckets.items():
                t.buckets[k] = t.buckets.get(k, 0) + n
            t.instant += max(0, closed - sum(f.buckets.values()))
    return list(total.values())


def day_rows(days: Mapping[int, Mapping[str, int]], *, abandon_after: float,
             now: float) -> list[tuple[int, StepFunnel]]:
    """The funnel of each day apart (for the CSV export), days in order."""
    rows: list[tuple[int, StepFunnel]] = []
    for day in sorted(days):
        rows += [(day, f) for f in funnel({day: days[day]}, order=(), abandon_after=abandon_after, now=now)]
    return rows
