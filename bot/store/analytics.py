"""Where the funnel counts of bot runs live in Redis, and how a save writes them.

One hash per bot version and UTC day, ``sb:analytics:bot:<bot>:<version>:<YYYY-MM-DD>``, with the
fields of ``bot.engine.analytics``. A batch's counts travel in its save's round trip, never one
of their own:

* one Redis: as ``SaveRequest.counters``, incremented by the save script itself while it holds
  the conversation's lock, so a count is written with its batch or not at all (a crash before the
  save loses nothing: the batch is redone and counted then; a resend after ``NOSCRIPT`` or a lost
  lock counts nothing twice);
* a Redis Cluster: the hashes are in other slots than the conversation, which a script may not
  touch, so they are ``HINCRBY`` commands *beside* the script in the same pipeline: a batch whose
  save is resent after ``NOSCRIPT`` (once per process after a Redis restart) or whose lock was
  lost and whose batch another process redoes is counted twice.

Each key expires ``retention_days`` after the first write of each process that writes it (an
``EXPIRE`` sent once per process and key, not with every count).
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterable
from typing import Any

from redis.asyncio import Redis

from ..engine.analytics import DAY, Counts
from . import replies
from .conversations import SaveRequest
from .keys import PREFIX

#: Days a day's counts are kept (at least: every process that writes them moves it on).
RETENTION_DAYS = 400
#: Keys whose TTL this process set, remembered at most this many (then forgotten, set again).
_TTL_SET_MAX = 10_000


@functools.lru_cache(maxsize=1024)
def day_text(day: int) -> str:
    """``2026-12-06`` for a day number (days since 1970-01-01); remembered: every save that
    counts names its day's key."""
    return (dt.date(1970, 1, 1) + dt.timedelta(days=day)).isoformat()


#: The day number of 0001-01-01, the first day a date can name.
FIRST_DAY = (dt.date.min - dt.date(1970, 1, 1)).days


def day_number(text: str) -> int:
    """The day number of ``YYYY-MM-DD`` (ValueError when it is not one)."""
    return (dt.date.fromisoformat(text) - dt.date(1970, 1, 1)).days


def bot_day_key(bot: str, version: int, day: int) -> str:
    return f"{PREFIX}:analytics:bot:{bot}:{version}:{day_text(day)}"


def ttl_commands(key: str, ttl: int) -> list[tuple[Any, ...]]:
    """A day hash's TTL, whatever the order its counts arrive in: the hash is made first (a field
    ``_ttl`` nobody reads), so ``EXPIRE`` finds it even when the counts come after it (the save
    script runs before the commands beside it; a Cluster's lead counters come after the save)."""
    return [("HINCRBY", key, "_ttl", 0), ("EXPIRE", key, ttl)]


class AnalyticsCounts:
    """Turns a batch's ``Counts`` into commands for its save's pipeline; reads them back."""

    def __init__(self, redis: Redis, *, retention_days: int = RETENTION_DAYS) -> None:
        self.redis = redis
        self.ttl = retention_days * DAY
        self._ttl_set: set[str] = set()

    def add(self, req: SaveRequest, counts: Counts, *, cluster: bool) -> None:
        """Put a batch's counts into its save: see the module docstring."""
        for (bot, version, day), fields in counts.items():
            key = bot_day_key(bot, version, day)
            if cluster:
                req.extra_commands.extend(("HINCRBY", key, name, by) for name, by in fields.items())
            else:
                req.counters.extend((key, name, by) for name, by in fields.items())
            if key not in self._ttl_set:
                if len(self._ttl_set) >= _TTL_SET_MAX:
                    self._ttl_set.clear()
                self._ttl_set.add(key)
                req.extra_commands += ttl_commands(key, self.ttl)

    async def read(self, bot: str, version: int, days: Iterable[int]) -> dict[int, dict[str, int]]:
        """The counts of each day (days without any are left out), in one round trip."""
        wanted = list(days)
        pipe = self.redis.pipeline(transaction=False)
        for day in wanted:
            pipe.hgetall(bot_day_key(bot, version, day))
        found: dict[int, dict[str, int]] = {}
        for day, raw in zip(wanted, await pipe.execute() if wanted else [], strict=True):
            fields: dict[str, int] = {}
            for name, value in raw.items():
                try:
                    fields[replies.text(name)] = int(value)
                except ValueError:
                    continue  # not a counter: nothing a save wrote
            if fields:
                found[day] = fields
        return found
