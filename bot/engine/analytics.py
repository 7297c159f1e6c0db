"""Funnel counts of bot runs, derived from what a turn already yields (pure: no I/O, no clock).

The interpreter only lists the steps a turn entered (``Outcome.steps``, one append per step,
and a ``Switch`` where the run changed bots); everything else is worked out here, once per
turn, from that list, the visit open before the turn and the run after it.

A *visit* is a run's stay at one step: it opens when the run enters the step and closes when
the run leaves it (for another step, or another bot through ``start_bot``) or ends there. Every
count of a visit goes to the UTC day its visit *opened*, in the bot version it belongs to, so
for one day and step ``entered = sum(left) + ended + still there``; the runs still there on a
day wholly older than ``settings.abandon_after`` abandoned the flow there (docs/analytics.md).

Fields of a ``(bot, version, day)`` counter hash:

* ``m|S|T``: left ``S`` for step ``T`` of the same bot, both visits opened this day: counts as
  ``S`` left for ``T`` and ``T`` entered (one field for the common case, one command per move);
* ``e|S``: visits of step ``S`` opened otherwise (a run's first step, a step of another bot,
  a move from a visit of an earlier day);
* ``l|S|T``: left ``S`` (opened this day) for ``T`` on a later day; ``l|S|@B``: for bot ``B``
  (start_bot);
* ``x|S``: the run ended at ``S`` (finished, stopped, failed, or replaced by another run);
* ``t|S|k``: a visit that lasted a second or more, ``k = floor(2 log2(seconds))``: the bucket
  of ``[2^(k/2), 2^((k+1)/2))`` seconds. Closed visits without a ``t`` field lasted < 1 s.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeAlias

#: Where a turn's run changed bots, in ``Outcome.steps``: ``(kind, bot, version)``; kind
#: ``start`` (a new run), ``call`` / ``jump`` (start_bot with / without a return), ``return``.
Switch: TypeAlias = tuple[str, str, int]
#: ``(bot, version, day)``, the day as days since 1970-01-01 UTC.
DayKey: TypeAlias = tuple[str, int, int]
Counts: TypeAlias = dict[DayKey, dict[str, int]]
DAY = 86400
_ACTIVE = ("running", "waiting")


@dataclass(slots=True)
class Visit:
    """The step a run is at, since when (epoch seconds), in which bot version."""

    bot: str
    version: int
    step: str
    at: float


def bucket(seconds: float) -> int:
    """The dwell-time bucket of a visit of ``seconds`` >= 1 (about 41 % wide: median within ±19 %)."""
    return int(2 * math.log2(seconds))


def bucket_middle(k: int) -> float:
    """The geometric middle of bucket ``k``, in seconds."""
    return float(2 ** ((k + 0.5) / 2))


def _close(counts: Counts, visit: Visit, now: float, name: str) -> None:
    key = (visit.bot, visit.version, int(visit.at // DAY))
    fields = counts.get(key)
    if fields is None:
        fields = counts[key] = {}
    fields[name] = fields.get(name, 0) + 1
    dwell = now - visit.at
    if dwell >= 1:
        name = f"t|{visit.step}|{bucket(dwell)}"
        fields[name] = fields.get(name, 0) + 1


def count_turn(counts: Counts, visit: Visit | None, before: tuple[str, int] | None,
               steps: Sequence[str | Switch], status: str | None, now: float) -> Visit | None:
    """Add one turn's counts to ``counts``; returns the visit open after it.

    ``visit``: the one open before the turn (None: the run was not at a step, or the step's
    start is unknown: then its end is not counted); ``before``: the run's bot and version before
    the turn; ``steps``: ``Outcome.steps`` of the turn; ``status``: the run's status after it.
    """
    cur = visit
    flow = (visit.bot, visit.version) if visit is not None else before
    day = int(now // DAY)
    for item in steps:
        if isinstance(item, str):
            if flow is None:  # pragma: no cover - a step is always entered in a known bot
                cur = None
                continue
            moved = cur is not None and int(cur.at // DAY) == day
            if cur is not None:  # the common case, a move within one day, is one field: m|S|T
                _close(counts, cur, now, f"{'m' if moved else 'l'}|{cur.step}|{item}")
            cur = Visit(flow[0], flow[1], item, now)
            if not moved:
                key = (flow[0], flow[1], day)
                fields = counts.get(key)
                if fields is None:
                    fields = counts[key] = {}
                name = "e|" + item
                fields[name] = fields.get(name, 0) + 1
        else:
            kind, bot, version = item
            if cur is not None:
                _close(counts, cur, now, f"l|{cur.step}|@{bot}" if kind in ("call", "jump") else f"x|{cur.step}")
                cur = None
            flow = (bot, version)
    if cur is not None and status not in _ACTIVE:
        _close(counts, cur, now, "x|" + cur.step)
        cur = None
    return cur
