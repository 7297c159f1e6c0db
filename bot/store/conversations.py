"""The conversation store on Redis: per-conversation queue, lock, state, transcript.

How ordering and exactly-once handling work (one conversation, any number of processes):

1. ``push`` (one round trip) runs a script that drops a platform message id already seen,
   appends the event to the conversation's inbox, and tries to take the conversation's lock
   (the inbox's head entry: ``inboxlock.py``; an empty inbox is a free conversation).
   The caller that gets the lock also receives the state, the first events of the inbox and the
   metadata in the same reply, and becomes the conversation's only processor.
2. The processor runs the events in inbox order and ``save``s (one round trip): a script that
   checks it still holds the lock, writes the state, removes the processed events, appends the
   transcript, queues outbound messages, increments the batch's counters (the automations' rule
   counts: the only keys the script writes outside the conversation's hash tag, so it needs the
   one Redis the server runs on), and releases the lock only if the inbox is empty — it pops
   the batch and the entry after it, so it knows without measuring; otherwise it keeps the lock
   and ``load``s the next batch. An event pushed while another
   process works is therefore picked up by that process, never lost, never run twice.
3. A process that dies holding the lock loses it after ``lock_ttl`` (the next push or recovery
   takes it over); pushes also record the conversation in a recovery set (``pending.py``),
   whence workers take over those with events waiting and the lock free.

The state is written only under the lock (taken *before* state is read), so no update is lost.
It lives in the metadata hash (``statefields.py``): read with the metadata, written with it.

The transcript's count (the metadata's ``n``), and a short transcript's chunks in the metadata
(``transcriptfields.py``): the save takes them from what the lock taker read (no ``HINCRBY``, no
read: ``savescript.py``) when nothing else appended since. Only an append outside a turn
(``transcript.APPEND``) moves them without the lock, and that append marks a held lock with a
``+`` after its token; a save that finds its lock marked reads the metadata and appends to what
it finds. Every script that checks the lock accepts its token with or without marks; ``load``
unmarks it as it reads the metadata again.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from . import codec, inboxlock, partitions, preview, replies, savescript, statefields, timers, transcript
from . import keys as k
from .clusterclient import is_cluster
from .pending import RecentEntries
from .pushscript import PUSH as _PUSH
from .resp import RespClient
from .saveclaim import SaveClaim
from .scripts import Lua, send_commands

log = logging.getLogger("salesbot.store")

_LOAD = statefields.MOVE + inboxlock.FUNCTIONS + """
local events = redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1)
if #events == 0 or lk_read(events[1]) ~= ARGV[1] then return {-1} end
-- renewed and unmarked: the count is read below
redis.call('LSET', KEYS[1], 0, lk_entry(ARGV[1], ARGV[3], '', lk_event(events[1])))
local meta = redis.call('HGETALL', KEYS[3])
return {1, st_move(KEYS[3], KEYS[2], st_count(meta)), lk_events(events), meta}
"""

_ACQUIRE = statefields.MOVE + inboxlock.FUNCTIONS + """
local events = redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[3]) - 1)
if #events == 0 then return {0} end
local holder, held_until = lk_read(events[1])
if holder and tonumber(held_until) > tonumber(ARGV[5]) then return {-2} end
redis.call('LSET', KEYS[1], 0, lk_entry(ARGV[1], ARGV[2], '', lk_event(events[1])))
redis.call('EXPIRE', KEYS[3], ARGV[4])
local meta = redis.call('HGETALL', KEYS[3])
return {1, st_move(KEYS[3], KEYS[2], st_count(meta)), lk_events(events), meta}
"""

_EXTEND = inboxlock.FUNCTIONS + """
local head = redis.call('LINDEX', KEYS[1], 0)
if not head then return 0 end
local holder, _, marks = lk_read(head)
if holder ~= ARGV[1] then return 0 end
redis.call('LSET', KEYS[1], 0, lk_entry(ARGV[1], ARGV[2], marks, lk_event(head)))
return 1
"""

_FORGET_IF = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) <= tonumber(ARGV[2]) then redis.call('ZREM', KEYS[1], ARGV[1]) return 1 end
return 0
"""

_FAIL = inboxlock.FUNCTIONS + """
local head = redis.call('LINDEX', KEYS[1], 0)
if not head or lk_read(head) ~= ARGV[1] then return -1 end
local n = redis.call('HINCRBY', KEYS[2], 'failures', 1)
redis.call('HSET', KEYS[2], 'error', ARGV[2], 'error_at', ARGV[3])
if n >= tonumber(ARGV[4]) then redis.call('HSET', KEYS[2], 'parked', ARGV[3]) end
redis.call('EXPIRE', KEYS[2], ARGV[5])
redis.call('LSET', KEYS[1], 0, lk_event(head))  -- released: the events stay queued
return n
"""

_SET_ASIDE = inboxlock.FUNCTIONS + """
local head = redis.call('LINDEX', KEYS[1], 0)
if head and lk_read(head) == ARGV[1] then redis.call('LSET', KEYS[1], 0, lk_event(head)) end
if redis.call('HEXISTS', KEYS[2], 'parked') == 0 then return {0, 0} end
local n, keep, dropped = redis.call('LLEN', KEYS[1]), tonumber(ARGV[2]), 0
if n > keep then redis.call('LTRIM', KEYS[1], 0, keep - 1); dropped = n - keep end
redis.call('EXPIRE', KEYS[1], ARGV[3])
return {1, dropped}
"""

_UNPARK = """
local was = redis.call('HGET', KEYS[1], 'parked')
redis.call('HDEL', KEYS[1], 'parked', 'failures')
return was
"""

SEEN_TTL = 7 * 86400
#: A conversation's key TTLs are refreshed at most this often (by the push that takes its lock,
#: then by the save of that batch; ``ttl_at`` in its metadata, stored as ``r`` in seconds, says when): not on every
#: message. Its keys expire ``ttl_days`` after its last message, or up to this much sooner.
TTL_REFRESH_EVERY = 86400
#: Events a parked conversation keeps queued; newer ones beyond are dropped (and logged).
PARKED_INBOX_MAX = 1000
#: Lock holders whose transcript count a store remembers for their save (more: it forgets them all).
_COUNTS_MAX = 10_000


@dataclass(slots=True)
class Batch:
    """What a processor holds: the lock token, the state blob, events and metadata."""

    cid: str
    token: str
    state: bytes | None
    events: list[bytes]
    meta: dict[str, str]
    #: Replies to ``acquire(reads=...)``: commands sent in the same round trip (None: none sent,
    #: or one failed and the caller reads again).
    prefetched: list[Any] | None = None
    #: The batch's save refreshes the conversation's key TTLs (see TTL_REFRESH_EVERY).
    refresh_ttl: bool = True
    #: The state's chunk count with ``statefields.SYNCED``, when the hash holds it without (an
    #: older version saved it): the next save with an ``HSET`` writes it (``pushscript.py``).
    unsynced: str | None = None


@dataclass(slots=True)
class PushResult:
    duplicate: bool = False
    batch: Batch | None = None  # set when this caller took the lock and must process
    prefetched: list[Any] | None = None  # replies to ``push(reads=...)``, with a batch
    #: A wake settled by the push (nothing queued, ``pushscript.py``); ``wake_at``: arm it then
    #: (None: no timer left).
    early: bool = False
    wake_at: float | None = None


@dataclass(slots=True)
class SaveRequest:
    state: bytes | None
    processed: int
    log: list[bytes] = field(default_factory=list)
    out: list[bytes] = field(default_factory=list)
    meta: dict[str, str] = field(default_factory=dict)
    timers_set: list[tuple[str, float]] = field(default_factory=list)
    timers_cancel: list[str] = field(default_factory=list)
    wake: tuple[str, float] | None = None  # (member, due): a conversation's timer entry, ``ZADD LT``
    outbox_account: str | None = None
    #: Seconds this process claims the account's outbox entry for with the save (None: it is
    #: queued due now, for the outbox poll): see ``bot.store.outbox`` "Replies at once".
    outbox_lease: float | None = None
    activity: float | None = None
    #: The label of the activity partition the save writes ``activity`` in, and of the one the
    #: conversation leaves: None if it is in it already (a plain ``ZADD``: a follow-up's one
    #: command), "" if not known to be in any (``indexes.plan_save``, bot/store/partitions.py).
    partition: str = ""
    left: str | None = ""
    extra_commands: list[tuple[Any, ...]] = field(default_factory=list)  # more idempotent writes, same round trip
    #: ``(hash key, field, by)``: counters the save script itself increments, only while it holds
    #: the lock, so a count is written with its batch or not at all (never lost by a crash after
    #: the save, never doubled by a resend after ``NOSCRIPT`` or by a redone batch).
    counters: list[tuple[str, str, int]] = field(default_factory=list)
    #: Metadata fields to delete (copies of what the state holds, bot/store/statemeta.py).
    drop: list[str] = field(default_factory=list)
    #: Refresh the conversation's key TTLs (``Batch.refresh_ttl``: at most once a day).
    refresh_ttl: bool = True
    #: Async work the shell finishes before the save (idempotent: a batch redone repeats it).
    before_save: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    def add_log(self, entry: dict[str, Any]) -> None:
        """Append a transcript entry (packed)."""
        self.log.append(codec.pack_entry(entry))


@dataclass(slots=True)
class SaveResult:
    status: int  # -1 lost the lock, 0 released, 1 more events wait (lock kept)
    first: int = 0
    last: int = 0
    #: With ``outbox_lease``, when the save claimed the outbox entry: the head of the
    #: conversation's outbox list, for the caller to send (None: not claimed, the holder sends).
    outbox: list[bytes] | None = None
    #: The score the save claimed the entry with (the holder renews the claim while it is this).
    outbox_claim: float = 0.0


def state_of(raw_meta: Any, key_value: Any, cid: str) -> bytes | None:
    """A state from a reader's ``HGETALL`` of the metadata and ``GET`` of the state key (both
    read: the key holds it in the old layout and when it is too long for the hash)."""
    if statefields.in_key(raw_meta):
        return replies.raw(key_value) if key_value else None
    return statefields.split(raw_meta, cid, held=False)[1] or None


class ConversationStore:
    """Redis operations on conversations (see the module docstring for the protocol).

    The per-message scripts (push, load, save) go through ``fast``, a lean pipelined connection
    to the same server (see ``resp.py``); reads for the API and dashboard use redis-py.
    """

    def __init__(self, redis: Redis, *, lock_ttl: float = 30.0, ttl_days: int = 90,
                 transcript_max: int = 1000, shards: int = 16, batch: int = 32,
                 fast: RespClient | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.redis = redis
        self.clock = clock  # a seam for tests that drive time (dedupe window, recovery score)
        self.fast = fast or RespClient.like(redis)
        self.cluster = is_cluster(redis)
        self._token_prefix = secrets.token_hex(6) + "-"
        self._tokens = 0
        #: The transcript as each lock holder's batch read it (by token), for its save.
        self._counts: dict[str, savescript.Read] = {}
        self._pended = RecentEntries(lock_ttl)  # which pushes write the recovery entry
        self.lock_ttl_ms = int(lock_ttl * 1000)
        self.ttl = ttl_days * 86400
        #: How often the TTLs are refreshed: a day, or a tenth of a shorter TTL.
        self.refresh_every = min(TTL_REFRESH_EVERY, max(1, self.ttl // 10))
        self.transcript_max = transcript_max
        self.shards = shards
        self.batch = batch
        self._push = Lua(redis, _PUSH)
        self._load = Lua(redis, _LOAD)
        self._acquire = Lua(redis, _ACQUIRE)
        self._extend = Lua(redis, _EXTEND)
        self._save = Lua(redis, savescript.SAVE)
        self._activity = Lua(redis, partitions.WRITE)
        self._timers = Lua(redis, timers.WRITE)
        self.transcript = transcript.Transcript(redis, ttl=self.ttl, cap=transcript_max)
        self._forget_if = Lua(redis, _FORGET_IF)
        self._fail = redis.register_script(_FAIL)
        self._set_aside = redis.register_script(_SET_ASIDE)
        self._unpark = redis.register_script(_UNPARK)

    def _expiry(self) -> int:
        """When a lock taken or renewed now expires (ms, this process's clock: inboxlock.py)."""
        return int(self.clock() * 1000) + self.lock_ttl_ms

    def _token(self) -> str:
        """A lock token no other acquisition uses: a random process prefix and a counter."""
        self._tokens += 1
        return f"{self._token_prefix}{self._tokens:x}"

    async def _script(self, script: Lua, keys: list[str], args: list[Any]) -> Any:
        (reply,) = await send_commands(self.fast, [script.command(keys, args)], [script])
        return reply

    async def close(self) -> None:
        await self.fast.aclose()

    async def load_scripts(self) -> None:
        """Load the save's scripts on every node now: a process's first save would otherwise meet
        ``NOSCRIPT`` and be sent again, with the commands beside it (on a Redis Cluster, the
        analytics counts: docs/analytics.md)."""
        await self._save.load()
        await self._activity.load()
        await self._timers.load()

    def _batch(self, cid: str, token: str, reply: Sequence[Any]) -> Batch:
        meta, state, inline = statefields.split_turn(reply[3], cid)
        if len(self._counts) >= _COUNTS_MAX:  # batches that never saved (a crash of their turn)
            self._counts.clear()  # forgotten: their saves, if any, count the slow way
        self._counts[token] = (meta.get("n", ""), inline)
        batch = Batch(cid, token, reply[1] or state or None, list(reply[2]), meta)
        if state is not None and not reply[1]:
            batch.unsynced = statefields.unmarked(reply[3])
        return batch

    async def push(self, cid: str, event: bytes, *, dedupe_id: str | None = None,
                   meta: dict[str, str] | None = None, reads: Sequence[Sequence[Any]] = (),
                   wake: float | None = None) -> PushResult:
        """Queue an event (see the module docstring); ``reads`` are more commands sent in the
        same round trip, whose replies come back in ``PushResult.prefetched`` with a batch.
        ``wake``: the event is a wake looking for timers due by then (``pushscript.py``)."""
        token = self._token()
        now = self.clock()
        now_ms = int(now * 1000)
        meta_args: list[str] = []
        given = meta or {}
        implied = k.id_fields(cid) if given else {}
        if implied and all(given.get(name) == value for name, value in implied.items()):
            given = {name: value for name, value in given.items() if name not in implied}
            given[statefields.ID_IMPLIED] = "1"  # the id holds them: read back from it (statefields.split)
        short = statefields.SHORT
        for name, value in given.items():
            meta_args += [short.get(name, name), value]
        args: list[Any] = [event, k.dedupe_member(dedupe_id) if dedupe_id else "", now_ms, token, self.lock_ttl_ms,
                           SEEN_TTL, self.batch, len(meta_args) // 2, *meta_args, self.ttl, self.refresh_every,
                           "" if wake is None else repr(wake)]
        keys = k.push_keys(cid)
        pend = self._pended.needed(cid, now)
        by_script = pend and wake is not None and not self.cluster  # unless it settles the wake
        pend = pend and not by_script
        score = (now_ms + self.lock_ttl_ms) / 1000  # the recovery entry's (``pending.py``), when written
        if by_script:
            keys.append(k.pending_key(k.shard_of(cid, self.shards)))
            args += [score, cid]
        else:
            args += ["", ""]
        commands: list[Any] = [self._push.command(keys, args)]
        if pend:
            commands.append(("ZADD", k.pending_key(k.shard_of(cid, self.shards)), score, cid))
        commands += reads
        # A failed read only loses the prefetch (the caller reads again); the push itself happened.
        reply, *prefetched = await send_commands(self.fast, commands, [self._push], check=1 + pend)
        if pend:
            prefetched.pop(0)
            self._pended.wrote(cid, now)
        elif by_script:
            if reply[0] != 2:
                self._pended.wrote(cid, now)
        elif reply[0] != 2 and self._pended.late(cid, answered := self.clock()):  # it may have landed after it went
            await self.redis.zadd(k.pending_of(cid, self.shards), {cid: answered + self.lock_ttl_ms / 1000}, gt=True)
        if any(isinstance(r, ResponseError) for r in prefetched):
            prefetched = []
        if reply[0] == -1:
            return PushResult(duplicate=True)
        if reply[0] == 2:
            return PushResult(early=True, wake_at=float(reply[1]) if reply[1] else None)
        if reply[0] == 1:
            batch = self._batch(cid, token, reply)
            batch.refresh_ttl = reply[4] == 1
            return PushResult(batch=batch, prefetched=prefetched if reads and prefetched else None)
        return PushResult()

    def enqueue_commands(self, cid: str, event: bytes) -> list[tuple[Any, ...]]:
        """Plain commands that queue ``event`` without dedupe or the lock, for a caller that sends
        them in its own MULTI/EXEC beside another write (the embedded CRM's changes): then
        ``acquire``. The queue is due for recovery at once, in case nobody acquires it (its
        second member: the pushes' entry is left as it is). An entry without a header: behind a
        holder it waits its turn, at the head it leaves the queue free (``inboxlock.py``)."""
        return [("RPUSH", k.ConversationKey(cid).inbox, event),
                ("ZADD", k.pending_key(k.shard_of(cid, self.shards)), self.clock(), k.retry_member(cid))]

    async def load(self, cid: str, token: str, *, reads: Sequence[Sequence[Any]] = ()) -> Batch | None:
        """The next events for a processor that still holds the lock (None if it lost it);
        ``reads`` as for ``acquire``."""
        key = k.ConversationKey(cid)
        command = self._load.command([key.inbox, key.state, key.meta], [token, self.batch, self._expiry()])
        reply, *prefetched = await send_commands(self.fast, [command, *reads], [self._load], check=1)
        if reply[0] != 1:
            return None
        batch = self._batch(cid, token, reply)
        batch.refresh_ttl = False  # the batch that took the lock refreshed them if due
        if reads and not any(isinstance(r, ResponseError) for r in prefetched):
            batch.prefetched = prefetched
        return batch

    async def acquire(self, cid: str, *, reads: Sequence[Sequence[Any]] = ()) -> Batch | Literal[False] | None:
        """Take over a conversation with waiting events: a Batch, False if locked, None if idle.
        ``reads``: more commands sent in the same round trip, their replies in ``Batch.prefetched``."""
        key = k.ConversationKey(cid)
        token = self._token()
        now_ms = int(self.clock() * 1000)
        command = self._acquire.command([key.inbox, key.state, key.meta],
                                        [token, now_ms + self.lock_ttl_ms, self.batch, self.ttl, now_ms])
        reply, *prefetched = await send_commands(self.fast, [command, *reads], [self._acquire], check=1)
        if reply[0] == 1:
            batch = self._batch(cid, token, reply)
            if reads and not any(isinstance(r, ResponseError) for r in prefetched):
                batch.prefetched = prefetched
            return batch
        return False if reply[0] == -2 else None

    async def extend(self, cid: str, token: str) -> bool:
        key = k.ConversationKey(cid)
        return bool(await self._script(self._extend, [key.inbox], [token, self._expiry()]) == 1)

    async def save(self, cid: str, token: str, req: SaveRequest) -> SaveResult:
        read = self._counts.pop(token, None)  # the transcript as the lock taker read it
        mode, fields = savescript.transcript_args(read, req.log, self.transcript_max)
        args: list[Any] = [token, req.state or b"", req.processed, self._expiry(), self.ttl, self.transcript_max,
                           int(req.refresh_ttl), mode, len(req.log), *req.log, *fields, len(req.out), *req.out]
        meta_args: list[str | bytes] = []
        short = statefields.SHORT
        for name, value in req.meta.items():
            meta_args += [short.get(name, name), value]
        if req.state:  # in the metadata hash (see statefields.py), or its own key if too long
            inline = statefields.fields(req.state, cid)
            args[1] = b"" if inline is not None else req.state
            meta_args += inline if inline is not None else [statefields.COUNT, statefields.IN_KEY]
        args += [len(meta_args) // 2, *meta_args, len(req.drop), *req.drop, k.EVENTS_CHANNEL, cid]
        counters: dict[tuple[str, str], int] = {}
        for name, fld, by in req.counters:
            counters[(name, fld)] = counters.get((name, fld), 0) + by
        # On a Redis Cluster the counters' hashes are in other slots than the conversation: they
        # are counted after a save that kept the lock (a crash in between loses the count).
        later, counters = (counters, {}) if self.cluster else ({}, counters)
        args += [len(counters), *(v for (_, fld), by in counters.items() for v in (fld, by)),
                 read[0] if read else ""]  # the transcript's count as the lock taker read it
        keys = k.save_keys(cid)
        keys += (n for n, _ in counters)
        commands: list[Any] = [self._save.command(keys, args)]
        if req.timers_set or req.wake is not None:  # the bucket and its top in one script (timers.py)
            commands.append(timers.write_command(cid, self.shards, req.timers_set,  # the wake: ``ZADD LT``
                                                 earlier=[req.wake] if req.wake is not None else []))
        if req.timers_cancel:  # leaves the top low: a lower bound still
            commands.append(("ZREM", k.timer_keys(cid, self.shards)[0], *req.timers_cancel))
        claim = None
        if req.out and req.outbox_account:
            claim = SaveClaim.add(commands, cid, req.outbox_account, req.outbox_lease, self.clock())
        if req.activity is not None and req.left is None:  # a follow-up: in its partition already
            commands.append(("ZADD", partitions.key(req.partition), req.activity, cid))
        elif req.activity is not None:  # one script: the partition, its registry, the one left
            parts = [partitions.key(req.partition), partitions.REGISTRY]
            if req.left:
                parts.append(partitions.key(req.left))
            commands.append(self._activity.command(parts, [req.activity, cid, req.partition]))
        commands += req.extra_commands
        replies = await send_commands(self.fast, commands, [self._save, self._activity, self._timers])
        status, first, last = replies[0]
        if later and int(status) >= 0:  # saved: a counter that fails now is lost, not the batch
            try:
                await self.fast.send([("HINCRBY", name, fld, by) for (name, fld), by in later.items()])
            except RedisError as exc:
                log.warning("store.counters_lost", extra={"cid": cid, "error": type(exc).__name__})
        outbox, claimed = (None, 0.0) if claim is None else claim.taken(replies)
        if claim is not None and self.cluster and int(status) >= 0 and claim.refused(replies):
            outbox, claimed = await claim.again(self.fast, replies, self.clock())
        return SaveResult(int(status), int(first), int(last), outbox, claimed)

    async def append_log(self, cid: str, entries: list[bytes]) -> int:
        """Append transcript entries outside a processing turn (delivery receipts and the like)."""
        return await self.transcript.append(cid, entries)

    async def read_log(self, cid: str, after: int = 0, limit: int = 200) -> list[tuple[int, bytes]]:
        """Up to ``limit`` transcript entries numbered above ``after``: ``(number, packed entry)``."""
        return await self.transcript.after(cid, after, limit)

    async def tail_log(self, cid: str, limit: int = 200) -> list[tuple[int, bytes]]:
        """The newest ``limit`` transcript entries, oldest first."""
        return await self.transcript.tail(cid, limit)

    async def meta(self, cid: str, *, with_preview: bool = False) -> dict[str, str]:
        """The metadata as readers see it (``statefields.split``); ``with_preview``: and the list's
        preview, read from the transcript in the same round trip (bot/store/preview.py)."""
        key = k.ConversationKey(cid).meta
        if not with_preview:
            return statefields.split(await self.redis.hgetall(key), cid)[0]
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(key)
        preview.read(pipe, cid)
        raw, tail = await pipe.execute()
        meta = statefields.split(raw, cid)[0]
        await preview.fill_all(self.redis, [(cid, meta)], [preview.tail_of(raw, tail)])
        return meta

    async def state(self, cid: str) -> bytes | None:
        """The state as last saved (for readers outside a turn: the API, the dashboard)."""
        key = k.ConversationKey(cid)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(key.meta)
        pipe.get(key.state)  # the old layout's key, or a state too long for the hash
        raw, data = await pipe.execute()
        return state_of(raw, data, cid)

    async def pending_due(self, shard: int, now: float, limit: int = 100) -> list[tuple[str, float]]:
        return await self.pending_due_in(range(shard, shard + 1), now, limit)

    async def pending_due_in(self, shards: Iterable[int], now: float, limit: int = 100) -> list[tuple[str, float]]:
        """The recovery entries due by ``now`` in ``shards`` (up to ``limit`` a shard), in one round
        trip on the lean client: a worker's every-second sweep of 16 shards was 16 calls through
        redis-py (an idle worker 0.0148 → 0.0130 cores with this alone; issue 14 aim 5)."""
        reads = [("ZRANGEBYSCORE", k.pending_key(s), "-inf", now, "WITHSCORES", "LIMIT", 0, limit) for s in shards]
        return [pair for rows in await send_commands(self.fast, reads, ()) for pair in replies.scored(rows)]

    async def forget_pending(self, member: str, score: float) -> None:
        """Drop an idle conversation's recovery entry ``member`` (its id or ``keys.retry_member``)
        if not pushed again since ``score``: on the lean client, as push and save."""
        self._pended.forget(k.member_cid(member))
        await self._script(self._forget_if, [k.pending_of(member, self.shards)], [member, score])

    async def postpone_pending(self, member: str, now: float) -> None:
        """A live processor holds it: look again when its lock expires (its inbox's head,
        inboxlock.py; pending.py). Later only, never re-adding it, so recovery's page of due
        conversations always moves on."""
        head = await self.redis.lindex(k.ConversationKey(k.member_cid(member)).inbox, 0)
        held = inboxlock.holder(replies.raw(head) if head is not None else None)
        left = 1 if held is None else held[1] - int(now * 1000)  # None: free, or gone
        at = now + min(max(left, 1), self.lock_ttl_ms) / 1000
        await self.redis.zadd(k.pending_of(member, self.shards), {member: at}, xx=True, gt=True)

    async def record_failure(self, cid: str, token: str, error: str, *, park_after: int) -> tuple[int, bool]:
        """A batch failed: count it, keep the error, release the lock. Below ``park_after``
        failures in a row recovery tries again after a backoff (a 30th of the lock TTL, doubled
        each time: 1, 2, 4, 8 s with the default 30 s, at most the TTL); at ``park_after`` the
        conversation is parked: its events stay queued, untouched, until a person asks for a retry.
        Returns (failures in a row, parked)."""
        key = k.ConversationKey(cid)
        now = self.clock()
        self._counts.pop(token, None)
        self._pended.forget(cid)
        failures = int(await self._fail(keys=[key.inbox, key.meta],
                                        args=[token, error[:300], f"{now:.3f}", park_after, self.ttl]))
        if failures < 0:  # the lock was lost meanwhile: its new holder has the conversation
            return 0, False
        pending = k.pending_key(k.shard_of(cid, self.shards))
        pipe = self.redis.pipeline(transaction=False)
        if failures >= park_after:
            pipe.zrem(pending, cid, k.retry_member(cid))
            pipe.zadd(k.parked_key(), {cid: now})
            await pipe.execute()
            return failures, True
        # Retried after the backoff, not before; the pushes' entry never earlier (pending.py)
        retry_at = now + min(self.lock_ttl_ms / 30_000 * 2.0 ** (failures - 1), self.lock_ttl_ms / 1000)
        pipe.zadd(pending, {k.retry_member(cid): retry_at})
        pipe.zadd(pending, {cid: retry_at}, xx=True, gt=True)
        await pipe.execute()
        return failures, False

    async def set_aside(self, cid: str, token: str) -> tuple[bool, int]:
        """A parked conversation was taken (a new event, recovery): give the lock back unprocessed
        and keep it out of recovery. Returns (still parked, events dropped beyond
        ``PARKED_INBOX_MAX``). Unparked meanwhile (a person's retry won the race): recovery
        takes it at once."""
        key = k.ConversationKey(cid)
        self._counts.pop(token, None)
        self._pended.forget(cid)
        parked, dropped = await self._set_aside(keys=[key.inbox, key.meta],
                                                args=[token, PARKED_INBOX_MAX, self.ttl])
        pending = k.pending_key(k.shard_of(cid, self.shards))
        if parked:
            await self.redis.zrem(pending, cid, k.retry_member(cid))
        else:
            await self.redis.zadd(pending, {k.retry_member(cid): self.clock()})
        return bool(parked), int(dropped)

    async def pend(self, cid: str, at: float) -> None:
        """Put a conversation in the recovery set (due at ``at``: a lock TTL from now, as a push does)."""
        self._pended.forget(cid)
        await self.redis.zadd(k.pending_key(k.shard_of(cid, self.shards)), {cid: at})

    async def unpark(self, cid: str) -> bool:
        """Clear a conversation's parked mark and failure count (True if it was parked)."""
        was = await self._unpark(keys=[k.ConversationKey(cid).meta], args=[])
        await self.redis.zrem(k.parked_key(), cid)
        return bool(was)

    async def parked(self, limit: int = 200) -> list[str]:
        """The parked conversations, most recently parked first (entries whose conversation was
        retried or expired meanwhile are dropped from the index)."""
        cids = replies.members(await self.redis.zrevrange(k.parked_key(), 0, limit - 1))
        pipe = self.redis.pipeline(transaction=False)
        for cid in cids:
            pipe.hexists(k.ConversationKey(cid).meta, "parked")
        marks = await pipe.execute() if cids else []
        stale = [cid for cid, mark in zip(cids, marks, strict=True) if not mark]
        if stale:
            await self.redis.zrem(k.parked_key(), *stale)
        return [cid for cid, mark in zip(cids, marks, strict=True) if mark]
