"""Split tests in Redis: one hash per split step of a bot, ``sb:split:{<bot>}:<step>``.

Fields: ``gen`` (the test's generation: a reset starts the next one), ``winner``, ``winner_by``
(``auto`` or ``manual``), ``winner_at`` and ``started`` (epoch seconds), and the counts of each
generation by path, ``e:<gen>:<path>`` (entries) and ``g:<gen>:<path>`` (goals reached).

The counts are not written here: the conversation's save script increments them with the state
that recorded the entry or the goal (``SaveRequest.counters``), so each counts exactly once, also
across a crash or a redone batch. This module answers the interpreter's ``split`` request (which
path; records the winner when the rule is met) and serves the API.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from redis.asyncio import Redis

from ..engine.splits import SplitRecord, choose
from . import replies


def split_key(bot: str, step: str) -> str:
    """The hash of one split (all splits of a bot share the bot's hash tag)."""
    return f"sb:split:{{{bot}}}:{step}"


def count_field(kind: str, generation: int, path: str) -> str:
    """The counter field of an entry (``kind`` "entry") or a goal ("goal")."""
    return f"{'e' if kind == 'entry' else 'g'}:{generation}:{path}"


def parse(raw: Mapping[Any, Any]) -> SplitRecord:
    """A split hash as read (bytes or text) as a record of its current generation."""
    fields = {replies.text(k): replies.text(v) for k, v in raw.items()}
    record = SplitRecord(generation=_int(fields.get("gen")) or 0, winner=fields.get("winner") or None,
                         winner_by=fields.get("winner_by") or None, winner_at=_float(fields.get("winner_at")),
                         started=_float(fields.get("started")))
    prefix_e, prefix_g = f"e:{record.generation}:", f"g:{record.generation}:"
    for name, value in fields.items():
        n = _int(value)
        if n is None:
            continue
        if name.startswith(prefix_e):
            record.entries[name[len(prefix_e):]] = n
        elif name.startswith(prefix_g):
            record.goals[name[len(prefix_g):]] = n
    return record


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


class SplitStore:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def read(self, bot: str, step: str) -> SplitRecord:
        return parse(await self.redis.hgetall(split_key(bot, step)))

    async def answer(self, request: Mapping[str, Any], now: float) -> dict[str, Any]:
        """The answer to the interpreter's ``split`` request: the path to take (its index), the
        generation to count it in, and whether a winner decided it."""
        key = split_key(str(request["bot"]), str(request["step"]))
        record = parse(await self.redis.hgetall(key))
        index, winner = choose(request, record, now)
        if winner is not None or record.started is None:
            pipe = self.redis.pipeline(transaction=False)
            pipe.hsetnx(key, "started", repr(now))
            if winner is not None:  # the first process to see the rule met records its winner
                pipe.hsetnx(key, "winner", winner)
                pipe.hsetnx(key, "winner_by", "auto")
                pipe.hsetnx(key, "winner_at", repr(now))
                pipe.hget(key, "winner")
            answers = await pipe.execute()
            if winner is not None:
                recorded = replies.text(answers[-1]) if answers[-1] is not None else winner
                paths = [str(p) for p in request["paths"]]
                index = paths.index(recorded) if recorded in paths else index
        decided = winner is not None or record.winner in [str(p) for p in request["paths"]]
        return {"path": index, "generation": record.generation, "winner": decided}

    async def pick(self, bot: str, step: str, path: str, now: float) -> None:
        """An operator's winner: every later entry takes ``path``."""
        await self.redis.hset(split_key(bot, step), mapping={"winner": path, "winner_by": "manual",
                                                             "winner_at": repr(now)})

    async def reset(self, bot: str, step: str) -> int:
        """Start the test again: no winner, no counts, a new generation (counts still on their way
        for the old one land in fields nobody reads). Returns the new generation."""
        key = split_key(bot, step)
        names = [replies.text(k) for k in await self.redis.hkeys(key)]
        pipe = self.redis.pipeline(transaction=False)
        stale = [n for n in names if n != "gen"]
        if stale:
            pipe.hdel(key, *stale)
        pipe.hincrby(key, "gen", 1)
        answers = await pipe.execute()
        return int(answers[-1])

    async def clear_winner(self, bot: str, step: str) -> None:
        """Back to the rule: the counts stay (a rule already met picks a winner at the next entry)."""
        await self.redis.hdel(split_key(bot, step), "winner", "winner_by", "winner_at")
