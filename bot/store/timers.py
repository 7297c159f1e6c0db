"""Durable timers: sorted sets in Redis, sharded, claimed atomically in batches by any worker.

A shard's members are spread over ``k.TIMER_BUCKETS`` buckets (``sb:timers:{<s>}:w:<b>``, the
bucket from the conversation id's hash: ``keys.timer_bucket``) so that each stays small enough
for Redis' compact encoding (about 60 B a member, where one sorted set of hundreds a shard was a
skiplist of about 130). The shard's *tops* (``sb:timers:{<s>}:tops``) score each bucket by a
lower bound of its earliest due time: every write lowers it with the member's, in one script
(``ZADD LT``, ``write_command``; a ``ZREM`` or a member moved later leaves it low), and the claim script,
which reads the buckets whose top is due, sets each bucket it visits to its earliest member, or
drops it when empty: a stale-low top costs a visit, never an early claim. The keys before
buckets (``sb:timers:{<s>}``) are moved into them at start (bot/store/layout.py) and claimed
from meanwhile.

A conversation has ONE member in the shard of its conversation, its *wake* ``{<conversation id>}``
(braces never occur in an id: ``keys.conversation_id`` escapes them), due no later than the
earliest of its timers; the timers themselves (id -> due time) are in its state
(``ConversationState.timers``). Re-arming is one ``ZADD LT`` (a write only ever moves the wake
earlier), written only when the earliest due time moves earlier: a message that leaves it as it
was, or moves it later (a no-answer timer, on every message to a bot that asks again), writes
nothing here. The wake then fires early; its push finds in the metadata that no timer is due
and the worker arms it at the earliest timer (``arm``; ``pushscript.py``), or, without that
field, its turn does (``ConversationService._rearm``). So a turn need not know the wake's score:
the earliest due time its state held bounds it. A lead queue's timer and a timer written by an
older version are members of their own (their id, ``<queue id>:<...>``). ``claim`` moves the
members due by a horizon (a worker claims up to two polls ahead and fires each at its due time)
from the shard to *this worker's* claim set of the shard, still scored by their due time, the
shard's earliest first across its buckets (a limit cut short leaves the later ones), in one
script per shard (its buckets, their tops and its claim sets share the shard's hash tag: one
slot; the script names a bucket by the prefix it is given and the bucket's number); the worker
delivers a wake as a ``TimerFired`` of the wake's name (the conversation's turn fires the timers
of its state that are due, each once: a fired timer leaves the state in the save that records
its turn, and re-arms the wake with the next due time) and a timer of its own as a
``TimerFired`` deduplicated by its id, then ``ack``s it. A wake already claimed by this worker
and not acknowledged yet stays in its bucket (the claim script skips it): acknowledging the
first claim must not remove the second.

Liveness, not a long lease, returns the claims of a worker that died: every worker stamps a
registry (``heartbeat``) every second or so, and ``take_over`` moves the claim sets of a worker
silent for ``dead_after`` seconds to the caller, who fires them (at their due time). Exactly once
holds however early a claim comes back, even from a worker that was only paused: the delivery
goes through the conversation's push, whose dedupe (``timer:<id>``) admits the event once, and
the conversation's lock runs it once. A claim of a live worker that is still not acknowledged
``claim_ttl`` after it fell due (its delivery failed) is offered to that worker again. A timer
whose step is no longer current is ignored by the interpreter. Long timers are just entries.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis

from . import keys as k
from .scripts import Lua, run_pipeline, send_commands

if TYPE_CHECKING:
    from .resp import RespClient

#: KEYS: the shard's tops (its buckets by a lower bound of their earliest due time), this worker's
#: claims of it, the shared claim set of versions before worker claim sets (leased: score = lease
#: end), the shard's key before buckets (drained until moved). ARGV: now, horizon, limit, re-offer
#: own claims due before, the buckets' key prefix (a bucket's key: it and the bucket's number; all
#: in the shard's hash tag, so the script touches one slot, also on a Redis Cluster).
_CLAIM = """
local now, horizon, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])
local out = {}
local stale = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[4], 'LIMIT', 0, limit)
for _, m in ipairs(stale) do
  redis.call('ZADD', KEYS[2], now, m)
  out[#out + 1] = m; out[#out + 1] = '-1'
end
local legacy = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, limit)
for _, m in ipairs(legacy) do
  redis.call('ZREM', KEYS[3], m)
  redis.call('ZADD', KEYS[2], now, m)
  out[#out + 1] = m; out[#out + 1] = '-1'
end
if limit <= 0 then return out end
-- the rows due by the horizon, earliest first, up to the limit, from the old key and the buckets
-- whose top is due (in the tops' order; no bucket further on can hold an earlier row than a top)
local rows = {}
local function earlier(a, b) return a[1] < b[1] or (a[1] == b[1] and a[2] < b[2]) end
local function read(key)
  local due = redis.call('ZRANGEBYSCORE', key, '-inf', horizon, 'WITHSCORES', 'LIMIT', 0, limit)
  for j = 1, #due, 2 do rows[#rows + 1] = {tonumber(due[j + 1]), due[j], key, due[j + 1]} end
end
local function trim()
  table.sort(rows, earlier)
  for j = #rows, limit + 1, -1 do rows[j] = nil end
end
read(KEYS[4])
local tops, visited = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', horizon, 'WITHSCORES'), {}
for i = 1, #tops, 2 do
  if #rows >= limit then
    trim()
    if tonumber(tops[i + 1]) > rows[limit][1] then break end
  end
  visited[#visited + 1] = tops[i]
  read(ARGV[5] .. tops[i])
end
trim()
local taken, scored = {}, {}
for _, row in ipairs(rows) do
  local m = row[2]
  if string.byte(m, 1) ~= 123 or not redis.call('ZSCORE', KEYS[2], m) then  -- 123: '{', a wake
    taken[row[3]] = taken[row[3]] or {}
    table.insert(taken[row[3]], m)
    scored[#scored + 1] = row[4]; scored[#scored + 1] = m
    out[#out + 1] = m; out[#out + 1] = row[4]
  end
end
for key, members in pairs(taken) do redis.call('ZREM', key, unpack(members)) end
if #scored > 0 then redis.call('ZADD', KEYS[2], unpack(scored)) end
for _, b in ipairs(visited) do  -- each visited bucket's top: its earliest member now, or none
  local first = redis.call('ZRANGE', ARGV[5] .. b, 0, 0, 'WITHSCORES')
  if #first == 0 then redis.call('ZREM', KEYS[1], b) else redis.call('ZADD', KEYS[1], first[2], b) end
end
return out
"""

#: KEYS: a bucket, its shard's tops. ARGV: the bucket's number, the earliest due time written, how
#: many members are written as given, then ``(due, member)`` pairs: those, then the ones only ever
#: moved earlier (``ZADD LT``). The members and their top in one script (atomic): a process dying
#: between two commands would leave a member no top is due for, never claimed until its bucket
#: is written again. 3 Redis commands (``EVALSHA`` and its two ``ZADD``), one sent.
WRITE = """
local n = tonumber(ARGV[3])
if n > 0 then redis.call('ZADD', KEYS[1], unpack(ARGV, 4, 3 + 2 * n)) end
if #ARGV > 3 + 2 * n then redis.call('ZADD', KEYS[1], 'LT', unpack(ARGV, 4 + 2 * n)) end
redis.call('ZADD', KEYS[2], 'LT', ARGV[2], ARGV[1])
return 0
"""
WRITE_SHA = hashlib.sha1(WRITE.encode()).hexdigest()

#: KEYS: a shard's key before buckets. ARGV: its buckets' key prefix, how many buckets. Members
#: waiting in the shard (a metrics scrape's: one command a shard, not one a bucket).
_PENDING = """
local n = redis.call('ZCARD', KEYS[1])
for b = 0, tonumber(ARGV[2]) - 1 do n = n + redis.call('ZCARD', ARGV[1] .. b) end
return n
"""

#: KEYS: a dead worker's claims of a shard, the caller's claims of it. Moves them, due times kept,
#: but a wake the caller holds too: it stays (a claim set holds a member once: merged, the caller's
#: ack of its own claim would remove the one moved, which its loop skips as held; lost), moved by a
#: later take-over once that ack is done. Returns the rows moved, then how many stayed.
_TAKE_OVER = """
local rows = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local out, kept = {}, 0
for j = 1, #rows, 2 do
  local m = rows[j]
  if string.byte(m, 1) == 123 and redis.call('ZSCORE', KEYS[2], m) then  -- 123: '{', a wake
    kept = kept + 1
  else
    redis.call('ZADD', KEYS[2], rows[j + 1], m)
    out[#out + 1] = m; out[#out + 1] = rows[j + 1]
  end
end
if kept == 0 then redis.call('DEL', KEYS[1]) else
  for j = 1, #out, 2 do redis.call('ZREM', KEYS[1], out[j]) end
end
out[#out + 1] = kept
return out
"""

#: Forget a worker in the registry only if it did not beat again meanwhile (it was only paused).
_FORGET_WORKER = """
local beat = redis.call('ZSCORE', KEYS[1], ARGV[1])
if beat and tonumber(beat) <= tonumber(ARGV[2]) then return redis.call('ZREM', KEYS[1], ARGV[1]) end
return 0
"""


def wake_member(cid: str) -> str:
    """The conversation's one member in its timer shard (see the module docstring)."""
    return f"{{{cid}}}"


def is_wake(member: str) -> bool:
    return member.startswith("{") and member.endswith("}")


def cid_of(member: str) -> str:
    """The queue a member belongs to: a wake's conversation, or the queue of a timer's id."""
    return member[1:-1] if is_wake(member) else member.rsplit(":", 1)[0]


def write_command(cid: str, shards: int, entries: Sequence[tuple[str, float]] = (), *,
                  earlier: Sequence[tuple[str, float]] = ()) -> tuple[Any, ...]:
    """The ``EVALSHA`` of ``WRITE``: timer members of ``cid`` (``(member, due)``) written into its
    bucket, ``entries`` as given and ``earlier`` only ever moved earlier (``ZADD LT``), and the
    bucket's top lowered to the earliest of them, in one script (the caller has ``WRITE`` loaded,
    or sends it through a ``Lua`` of it: ``NOSCRIPT`` handled)."""
    bucket_key, tops, bucket = k.timer_keys(cid, shards)
    written = [*entries, *earlier]
    return ("EVALSHA", WRITE_SHA, 2, bucket_key, tops, bucket, min(at for _, at in written), len(entries),
            *(v for member, at in written for v in (at, member)))


@dataclass(frozen=True, slots=True)
class DueTimer:
    timer_id: str  # the member: a conversation's wake, or a timer's own id
    due: float | None  # None for a claim offered again (its delivery failed, or an old version's)

    @property
    def cid(self) -> str:
        return cid_of(self.timer_id)

    @property
    def wake(self) -> bool:
        return is_wake(self.timer_id)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class TimerWheel:
    def __init__(self, redis: Redis, *, shards: int = 16, claim_ttl: float = 30.0, dead_after: float = 3.0,
                 worker: str | None = None, clock: Any = time.time,
                 fast: RespClient | None = None) -> None:
        self.redis = redis
        #: The hot-path client (``resp.py``, or its cluster form; the server passes the store's):
        #: claims and acks go out in the write the event loop's pass sends anyway, beside the
        #: fires' pushes and saves, not through a pooled redis-py pipeline of their own. None: redis-py.
        self.fast = fast
        self.shards = shards
        #: A claim still not acknowledged this long after it fell due is offered to its worker again.
        self.claim_ttl = claim_ttl
        #: A worker silent this long is dead: its claims are taken over.
        self.dead_after = dead_after
        #: This process's name in the registry and in its claim sets' keys (host and pid: for people).
        self.worker = worker or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.clock = clock
        self._claim = Lua(redis, _CLAIM)
        self._take_over = Lua(redis, _TAKE_OVER)
        self._forget = Lua(redis, _FORGET_WORKER)
        self._write = Lua(redis, WRITE)
        self._pending = Lua(redis, _PENDING)

    def _claims_key(self, shard: int, worker: str | None = None) -> str:
        return k.timer_worker_claims_key(shard, worker or self.worker)

    async def claim(self, now: float, batch: int = 100, *, horizon: float | None = None) -> list[DueTimer]:
        """Every timer of every shard due by ``horizon`` (default ``now``; up to ``batch`` a shard),
        in one round trip; the registry is stamped first, so no claim exists of an unknown worker."""
        until = now if horizon is None else horizon
        commands: list[tuple[Any, ...]] = [("ZADD", k.timer_workers_key(), now, self.worker)]
        commands += [self._claim.command([k.timer_tops_key(s), self._claims_key(s), k.timer_claimed_key(s),
                                          k.timer_shard_key(s)],
                                         [now, until, batch, now - self.claim_ttl, k.timer_bucket_prefix(s)])
                     for s in range(self.shards)]
        replies = await self._send(commands, [self._claim])
        out = [t for reply in replies[1:] for t in self._timers(reply)]
        out.sort(key=lambda t: t.due if t.due is not None else 0.0)
        return out

    @staticmethod
    def _timers(reply: Sequence[Any]) -> Iterable[DueTimer]:
        for j in range(0, len(reply), 2):
            due = float(reply[j + 1])
            yield DueTimer(_text(reply[j]), None if due < 0 else due)

    async def ack(self, timers: Sequence[DueTimer]) -> None:
        if not timers:
            return
        by_shard: dict[int, list[str]] = {}
        for t in timers:
            by_shard.setdefault(k.shard_of(t.cid, self.shards), []).append(t.timer_id)
        await self._send([("ZREM", self._claims_key(shard), *ids) for shard, ids in by_shard.items()])

    async def arm(self, member: str, due: float) -> None:
        """Arm a wake at ``due`` or keep it earlier (``ZADD LT``): an early wake settled by its push."""
        await self._send([write_command(cid_of(member), self.shards, earlier=[(member, due)])], [self._write])

    async def _send(self, commands: list[tuple[Any, ...]], scripts: Sequence[Lua] = ()) -> list[Any]:
        """Every reply of ``commands`` in one round trip (an error raised; on ``NOSCRIPT`` the
        scripts are loaded and the commands sent again: claims and acks may be repeated)."""
        if self.fast is not None:
            return await send_commands(self.fast, commands, scripts)

        def build(pipe: Any) -> None:
            for command in commands:
                pipe.execute_command(*command)

        return await run_pipeline(self.redis, build, scripts)

    async def heartbeat(self) -> None:
        """This worker is alive (``dead_after`` without one and its claims are taken over)."""
        await self.redis.zadd(k.timer_workers_key(), {self.worker: self.clock()})

    async def take_over(self) -> list[DueTimer]:
        """The claims of every dead worker, moved to this one (with their due times); a wake this
        one holds too stays the dead worker's until this one acknowledged its own (``_TAKE_OVER``)."""
        cutoff = self.clock() - self.dead_after
        dead = [_text(w) for w in await self.redis.zrangebyscore(k.timer_workers_key(), "-inf", cutoff)]
        out: list[DueTimer] = []
        for worker in dead:
            if worker == self.worker:
                continue  # paused past dead_after itself: its claims are still its own
            def build(pipe: Any, dead_worker: str = worker) -> None:
                for shard in range(self.shards):
                    self._take_over.queue(pipe, [self._claims_key(shard, dead_worker), self._claims_key(shard)], [])

            replies = await run_pipeline(self.redis, build, [self._take_over])
            out += [t for reply in replies for t in self._timers(reply[:-1])]
            if not any(int(reply[-1]) for reply in replies):  # else kept in the registry: taken later
                await self._forget([k.timer_workers_key()], [worker, cutoff])
        out.sort(key=lambda t: t.due if t.due is not None else 0.0)
        return out

    async def pending(self) -> int:
        """Members waiting in the shards (every bucket, and the keys before buckets): one script a
        shard (the ``/metrics`` scrape's, not 65 ``ZCARD``s a shard)."""
        def build(pipe: Any) -> None:
            for shard in range(self.shards):
                self._pending.queue(pipe, [k.timer_shard_key(shard)], [k.timer_bucket_prefix(shard), k.TIMER_BUCKETS])

        return sum(int(n) for n in await run_pipeline(self.redis, build, [self._pending]))

    async def claimed(self) -> int:
        """Claims not acknowledged yet, of every worker in the registry (and of old versions)."""
        workers = [_text(w) for w in await self.redis.zrange(k.timer_workers_key(), 0, -1)]
        pipe = self.redis.pipeline(transaction=False)
        for shard in range(self.shards):
            pipe.zcard(k.timer_claimed_key(shard))
            for worker in workers:
                pipe.zcard(self._claims_key(shard, worker))
        return sum(await pipe.execute())

    async def due_at(self, member: str) -> float | None:
        """When ``member`` (a wake, ``wake_member(cid)``, or a timer's id) is due, if it waits in its
        bucket (or in its shard's key before buckets)."""
        cid = cid_of(member)
        pipe = self.redis.pipeline(transaction=False)
        pipe.zscore(k.timer_keys(cid, self.shards)[0], member)
        pipe.zscore(k.timer_shard_key(k.shard_of(cid, self.shards)), member)
        scores = [float(s) for s in await pipe.execute() if s is not None]
        return min(scores) if scores else None
