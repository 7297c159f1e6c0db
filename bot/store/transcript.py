"""A conversation's transcript: packed entries numbered 1, 2, 3, …, in its metadata hash while
short, else in a Redis list.

Layout (issue 14): the metadata hash keeps the number of the newest entry in its field ``n``.
A short transcript (up to ``transcriptfields.INLINE_MAX`` packed bytes) lives in that hash, in
64-byte chunk fields (``transcriptfields.py``: no key of its own, read by the push with the
metadata, written by the save with it). A longer one is the list ``sb:c:{<cid>}:t`` of the newest
``transcript_max`` entries (one msgpack blob each, oldest first): the append that outgrows the
hash moves it there for good, and a conversation an older version started keeps its list. Either
way the first entry kept is ``n - <entries kept> + 1``: numbers never change once given (delivery
statuses name an entry by ``<cid>|<number>``), trimming only drops the oldest, and a
conversation whose list expired keeps counting where it was.

Old layout (before issue 14): a stream ``sb:c:{<cid>}:log`` with ids ``<n>-0`` and a counter
``sb:c:{<cid>}:n``. The first script that touches such a conversation's transcript — a save, an
append, or a read — moves it into the list (the stream's entries, oldest first, keep their
numbers; both old keys are deleted), so a reader never sees the difference.

Every script here touches keys of one conversation only (one hash tag, one cluster slot).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis

from . import inboxlock, replies, transcriptfields
from . import keys as k

#: ``tr_migrate(list, oldlog, oldn)``: an old-layout transcript moved into the list.
MIGRATE = """
local function tr_migrate(list, oldlog, oldn)
  -- the old layout's stream, moved into the list; returns its newest number (0: none)
  local rows = redis.call('XRANGE', oldlog, '-', '+')
  -- (a DEL only of a counter there: an append's first write must be one a full Redis refuses)
  if #rows == 0 then
    if redis.call('EXISTS', oldn) == 1 then redis.call('DEL', oldn) end
    return 0
  end
  redis.call('DEL', oldn)
  local last = tonumber(string.match(rows[#rows][1], '^(%d+)'))
  local first = #rows
  -- only the run of numbers that ends at the newest (the layout never left gaps)
  while first > 1 and tonumber(string.match(rows[first - 1][1], '^(%d+)')) == last - (#rows - first) - 1 do
    first = first - 1
  end
  for r = first, #rows do
    local fields = rows[r][2]
    for f = 1, #fields, 2 do
      if fields[f] == 'd' then redis.call('RPUSH', list, fields[f + 1]) end
    end
  end
  redis.call('DEL', oldlog)
  return last
end
"""

#: Lua functions shared by the scripts that append (``conversations._SAVE`` and ``APPEND`` here).
#: ``tr_append(list, meta, oldlog, oldn, cap, ttl, refresh, entries, i, count, known, pushed)``
#: appends ``entries[i .. i + count - 1]`` and returns the number of the newest entry.
#: ``known`` and ``pushed``: the save's fast path for a list (the lock taker read ``n``, nothing
#: appended since: see ``MARK``; the caller writes ``n`` with its other metadata, and pushed the
#: entries first: a write a full Redis refuses, before its lock check; ``pushed`` is the list's
#: length then). Otherwise the metadata is read here: a transcript in the hash
#: (``transcriptfields.py``) is appended there, or moved to the list when too long; a list is
#: appended (``pushed``, if given, kept); no count yet: an old-layout stream or a list whose count
#: was lost comes first (a list), else the transcript starts in the hash. The list's TTL is set
#: when it is new or ``refresh`` is true (TTLs are refreshed at most once a day).
FUNCTIONS = MIGRATE + transcriptfields.LUA + """
local function tr_append(list, meta, oldlog, oldn, cap, ttl, refresh, entries, i, count, known, pushed)
  local len
  if known and pushed then
    len = pushed
    if len > cap then redis.call('LTRIM', list, len - cap, -1) end
    if refresh or len == count then redis.call('EXPIRE', list, ttl) end
    return known + count
  end
  local n, es, chunks = tf_read(redis.call('HGETALL', meta))
  local fresh = not n
  if fresh then
    -- a first append here: an old-layout transcript, or a list whose count was lost, comes first
    if pushed then redis.call('RPOP', list, count); pushed = nil end
    n = tr_migrate(list, oldlog, oldn)
    if n == 0 then n = redis.call('LLEN', list) end
    if n == 0 then es = {} else es = nil end
  end
  local last = n + count
  if es then
    -- in the hash (transcriptfields.py): there while it fits, else the whole moves to the list
    if pushed then redis.call('RPOP', list, count); pushed = nil end
    for j = i, i + count - 1 do es[#es + 1] = entries[j] end
    local first = #es - cap + 1
    if first < 1 then first = 1 end
    if tf_write(meta, es, first, chunks, last) then return last end
    -- first a write a full Redis refuses (not the DEL): an append refused whole
    redis.call('HSET', meta, 'n', string.format('%d', last))
    redis.call('DEL', list)  -- (none: the hash held it; an older process's, if any, renumbered away)
    redis.call('RPUSH', list, unpack(es, first, #es))
    local stale = {'""" + transcriptfields.COUNT + """'}
    for name in pairs(chunks) do stale[#stale + 1] = name end
    redis.call('HDEL', meta, unpack(stale))
    -- the metadata's TTL (set at its last refresh, up to a day before), not a fresh one: a list
    -- outliving its metadata would be taken up by the next conversation of that id (a lost count)
    local left = (not refresh) and redis.call('PTTL', meta) or -1
    if left > 0 then redis.call('PEXPIRE', list, left) else redis.call('EXPIRE', list, ttl) end
    return last
  end
  len = pushed or redis.call('RPUSH', list, unpack(entries, i, i + count - 1))
  redis.call('HSET', meta, 'n', string.format('%d', last))
  if len > cap then redis.call('LTRIM', list, len - cap, -1) end
  if refresh or fresh or len == count then redis.call('EXPIRE', list, ttl) end
  return last
end
"""

#: Marks a held lock (KEYS inbox: its head's header, inboxlock.py): a ``+`` after its token tells
#: the holder's save that the transcript's count moved since it read it (see ``conversations``
#: "The transcript's count"). A holder whose time is up is marked too: it holds until taken over.
MARK = inboxlock.FUNCTIONS + """
local head = redis.call('LINDEX', KEYS[5], 0)
if head then
  local holder, held_until, marks = lk_read(head)
  if holder and marks == '' then redis.call('LSET', KEYS[5], 0, lk_entry(holder, held_until, '+', lk_event(head))) end
end
"""

#: Append outside a processing turn (delivery receipts): KEYS list, meta, oldlog, oldn, inbox;
#: ARGV ttl, cap, channel, cid, entries… Publishes "<cid> <newest number>" like the save.
APPEND = FUNCTIONS + MARK + """
local ttl = tonumber(ARGV[1])
local last = tr_append(KEYS[1], KEYS[2], KEYS[3], KEYS[4], tonumber(ARGV[2]), ttl, true, ARGV, 5, #ARGV - 4, false)
redis.call('EXPIRE', KEYS[2], ttl)
redis.call('PUBLISH', ARGV[3], ARGV[4] .. ' ' .. last)
return last
"""

#: Read: KEYS list, meta, oldlog, oldn; ARGV after (-1: the newest ``limit``), limit, ttl.
#: Returns {number of the first entry returned, entries}.
READ = MIGRATE + transcriptfields.LUA + """
local last, es = tf_read(redis.call('HGETALL', KEYS[2]))
if not last then
  last = tr_migrate(KEYS[1], KEYS[3], KEYS[4])
  if last == 0 then return {0, {}} end
  redis.call('HSET', KEYS[2], 'n', last)
  redis.call('EXPIRE', KEYS[2], ARGV[3])
end
local len = es and #es or redis.call('LLEN', KEYS[1])
local first = last - len + 1
local after, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local start = len - limit
if after >= 0 then start = after + 1 - first end
if start < 0 then start = 0 end
if start >= len or limit <= 0 then return {0, {}} end
if es then return {first + start, {unpack(es, start + 1, math.min(start + limit, len))}} end
return {first + start, redis.call('LRANGE', KEYS[1], start, start + limit - 1)}
"""


def script_keys(cid: str) -> list[str]:
    """The keys every transcript script names, in its order: list, meta, old stream, old counter,
    the conversation's inbox (``APPEND`` marks the lock in its head)."""
    key = k.ConversationKey(cid)
    return [key.transcript, key.meta, key.log, key.counter, key.inbox]


class Transcript:
    """Reads and out-of-turn appends of transcripts (the save script appends a turn's entries)."""

    def __init__(self, redis: Redis, *, ttl: int, cap: int) -> None:
        self.ttl = ttl
        self.cap = cap
        self._append = redis.register_script(APPEND)
        self._read = redis.register_script(READ)

    async def append(self, cid: str, entries: Sequence[bytes]) -> int:
        """Append packed entries; returns the newest entry's number."""
        return int(await self._append(keys=script_keys(cid),
                                      args=[self.ttl, self.cap, k.EVENTS_CHANNEL, cid, *entries]))

    async def after(self, cid: str, after: int = 0, limit: int = 200) -> list[tuple[int, bytes]]:
        """Up to ``limit`` entries numbered above ``after``, oldest first."""
        return await self._rows(cid, max(0, after), limit)

    async def tail(self, cid: str, limit: int = 200) -> list[tuple[int, bytes]]:
        """The newest ``limit`` entries, oldest first."""
        return await self._rows(cid, -1, limit)

    async def _rows(self, cid: str, after: int, limit: int) -> list[tuple[int, bytes]]:
        reply: Any = await self._read(keys=script_keys(cid), args=[after, limit, self.ttl])
        first, blobs = int(reply[0]), reply[1]
        return [(first + i, replies.raw(blob)) for i, blob in enumerate(blobs)]
