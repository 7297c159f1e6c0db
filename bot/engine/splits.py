"""Split tests, the pure part: which path a contact takes, and which path wins.

A contact's path is a hash of the contact, the bot and the step, not random state: the same
contact always takes the same path of a split (until a winner is chosen), on any process, after
any restart, with nothing stored to remember it. The server (``bot.store.splits``) and the
simulator keep the counts and ask these functions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

_SCALE = float(1 << 64)


def draw(contact: str, bot: str, step: str) -> float:
    """A number in [0, 1), fixed for this contact at this step, spread evenly over contacts."""
    digest = hashlib.blake2b(f"{contact}\x00{bot}\x00{step}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


def pick(weights: Sequence[int], at: float) -> int:
    """The index of the path ``at`` (a ``draw``) falls into when the paths share [0, 1) by weight."""
    total = sum(weights)
    mark = at * total
    running = 0
    for i, w in enumerate(weights):
        running += w
        if mark < running:
            return i
    return len(weights) - 1


def rate(entries: int, goals: int) -> float:
    return goals / entries if entries > 0 else 0.0


def best_path(paths: Sequence[str], entries: Mapping[str, int], goals: Mapping[str, int]) -> str:
    """The path with the best goal rate; on a tie, the one with more goals, then the first listed."""
    order = {p: i for i, p in enumerate(paths)}
    return min(paths, key=lambda p: (-rate(entries.get(p, 0), goals.get(p, 0)), -goals.get(p, 0), order[p]))


def due(after_entries: int | None, or_after: int | None, entries: int, started: float | None, now: float) -> bool:
    """Whether the winner rule is met: ``after_entries`` entries in all, or ``or_after`` seconds
    since the first entry (no rule: never)."""
    if after_entries is not None and entries >= after_entries:
        return True
    return or_after is not None and started is not None and now - started >= or_after


@dataclass(slots=True)
class SplitRecord:
    """What is kept of one split test: its generation (a reset starts the next), the winner and
    how it was chosen, when the first entry came, and the counts of this generation by path."""

    generation: int = 0
    winner: str | None = None
    winner_by: str | None = None  # auto | manual
    winner_at: float | None = None
    started: float | None = None
    entries: dict[str, int] = field(default_factory=dict)
    goals: dict[str, int] = field(default_factory=dict)


def choose(request: Mapping[str, Any], record: SplitRecord, now: float) -> tuple[int, str | None]:
    """The path (its index) a ``split`` request takes, and the winner to record if the rule is
    met just now (None: nothing to record). ``request`` is the interpreter's payload."""
    paths = [str(p) for p in request["paths"]]
    if record.winner in paths:
        return paths.index(record.winner), None
    entries = sum(record.entries.get(p, 0) for p in paths)
    after, seconds = request.get("after_entries"), request.get("or_after")
    if (after is not None or seconds is not None) and due(after, seconds, entries, record.started, now):
        winner = best_path(paths, record.entries, record.goals)
        return paths.index(winner), winner
    index = request.get("pick")
    return (index if isinstance(index, int) and 0 <= index < len(paths) else 0), None
