"""The simulator's split tests: the server's counts (``bot.store.splits``) kept in memory.

One ``SplitBook`` may be shared by many simulators (one per contact) to play a test through
thousands of contacts, as ``tests/simulation/test_splits.py`` does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..engine import effects as fx
from ..engine.splits import SplitRecord, choose


class SplitBook:
    def __init__(self) -> None:
        self.records: dict[tuple[str, str], SplitRecord] = {}

    def record(self, bot: str, step: str) -> SplitRecord:
        return self.records.setdefault((bot, step), SplitRecord())

    def answer(self, payload: Mapping[str, Any], now: float) -> dict[str, Any]:
        """The answer to a ``split`` request, as ``bot.runtime.splits`` gives it."""
        record = self.record(str(payload["bot"]), str(payload["step"]))
        index, winner = choose(payload, record, now)
        if winner is not None:
            record.winner, record.winner_by, record.winner_at = winner, "auto", now
        if record.started is None:
            record.started = now
        return {"path": index, "generation": record.generation, "winner": record.winner is not None}

    def count(self, e: fx.SplitCount) -> None:
        record = self.record(e.bot, e.step)
        if e.generation != record.generation:
            return  # counted for a test since reset
        table = record.entries if e.kind == "entry" else record.goals
        table[e.path] = table.get(e.path, 0) + 1

    def pick_winner(self, bot: str, step: str, path: str | None, now: float) -> None:
        """An operator's choice (None: back to the rule)."""
        record = self.record(bot, step)
        record.winner, record.winner_by, record.winner_at = path, "manual" if path else None, now if path else None

    def reset(self, bot: str, step: str) -> None:
        old = self.record(bot, step)
        self.records[(bot, step)] = SplitRecord(generation=old.generation + 1)

    def view(self) -> dict[str, dict[str, dict[str, Any]]]:
        """``bot -> step -> {generation, winner, entries, goals}`` for a test's ``expect``."""
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for (bot, step), r in self.records.items():
            out.setdefault(bot, {})[step] = {"generation": r.generation, "winner": r.winner,
                                             "entries": dict(r.entries), "goals": dict(r.goals)}
        return out
