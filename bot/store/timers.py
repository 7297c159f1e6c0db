"""Durable timers: sorted sets in Redis, sharded, claimed atomically in batches by any worker.

A timer is a member (its id, ``<conversation id>:t<n>``) of the shard of its conversation,
scored by when it falls due. ``claim`` moves due timers to a *claimed* set with a lease in one
script; the worker delivers each as a ``TimerFired`` event deduplicated by the timer id, then
``ack``s it. A worker that dies after claiming leaves the claim to expire; the next ``claim``
returns it again, and the dedupe makes sure it fires once. A timer whose step is no longer
current is ignored by the interpreter. Long timers (days, a year) are just entries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from . import keys as k
from .scripts import Lua, run_pipeline

_CLAIM = """
local now = tonumber(ARGV[1])
local out = {}
local stale = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'WITHSCORES', 'LIMIT', 0, ARGV[2])
for j = 1, #stale, 2 do
  redis.call('ZADD', KEYS[2], ARGV[3], stale[j])
  out[#out + 1] = stale[j]; out[#out + 1] = '-1'
end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, ARGV[2])
for j = 1, #due, 2 do
  redis.call('ZREM', KEYS[1], due[j])
  redis.call('ZADD', KEYS[2], ARGV[3], due[j])
  out[#out + 1] = due[j]; out[#out + 1] = due[j + 1]
end
return out
"""


@dataclass(frozen=True, slots=True)
class DueTimer:
    timer_id: str
    due: float | None  # None for a claim that expired and is retried

    @property
    def cid(self) -> str:
        return self.timer_id.rsplit(":", 1)[0]


class TimerWheel:
    def __init__(self, redis: Redis, *, shards: int = 16, lease: float = 30.0) -> None:
        self.redis = redis
        self.shards = shards
        self.lease = lease
        self._claim = Lua(redis, _CLAIM)

    async def claim(self, now: float, batch: int = 100) -> list[DueTimer]:
        """Every due timer of every shard (up to ``batch`` each), in one round trip."""
        def build(pipe: Any) -> None:
            for shard in range(self.shards):
                self._claim.queue(pipe, [k.timer_shard_key(shard), k.timer_claimed_key(shard)],
                                  [now, batch, now + self.lease])

        out: list[DueTimer] = []
        for reply in await run_pipeline(self.redis, build, [self._claim]):
            for j in range(0, len(reply), 2):
                tid = reply[j].decode() if isinstance(reply[j], bytes) else str(reply[j])
                due = float(reply[j + 1])
                out.append(DueTimer(tid, None if due < 0 else due))
        out.sort(key=lambda t: t.due if t.due is not None else 0.0)
        return out

    async def ack(self, timers: Sequence[DueTimer]) -> None:
        if not timers:
            return
        by_shard: dict[int, list[str]] = {}
        for t in timers:
            by_shard.setdefault(k.shard_of(t.cid, self.shards), []).append(t.timer_id)
        pipe = self.redis.pipeline(transaction=False)
        for shard, ids in by_shard.items():
            pipe.zrem(k.timer_claimed_key(shard), *ids)
        await pipe.execute()

    async def pending(self) -> int:
        pipe = self.redis.pipeline(transaction=False)
        for shard in range(self.shards):
            pipe.zcard(k.timer_shard_key(shard))
        return sum(await pipe.execute())

    async def due_at(self, timer_id: str) -> float | None:
        cid = timer_id.rsplit(":", 1)[0]
        score = await self.redis.zscore(k.timer_shard_key(k.shard_of(cid, self.shards)), timer_id)
        return None if score is None else float(score)
