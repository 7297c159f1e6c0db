"""The embedded CRM's records newest first: each kind's recency index ``sb:{crm}:recent:<kind>``
(record id -> time of its last write) kept in buckets of 128 ids (``bot/store/recency.py``: about
15 B a record where the one sorted set cost 118; issue 14, aim 3), and its filtered listings.

A listing filtered by id sets (``idsets.py``: buckets of 512 ids, four recency buckets each)
intersects them bucket by bucket and scores only the ids found, each in its own recency bucket
(``FILTERED``): the work follows the matches, not the records. The default status (no set of its
own: the contacts in none of the other statuses' sets) walks every recency bucket and drops the
ids of those sets (``EXCLUDING``), as the ``ZDIFFSTORE`` of the whole sorted set did. Both put
the matches with their times in a temporary sorted set that the page is read from, in the same
round trip.

Before these buckets each index was the one sorted set ``sb:{crm}:recent:<kind>``: ``move_recent``
moves its members at start, before a process serves (``redis_crm.move_old_layout``), and ``DONE``
then says so: later starts read one key.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis

from bot.store import recency

from . import idsets
from .codec import text
from .indexes import T, recent_key

#: Set once the recency sorted sets of older versions are moved into buckets (its value: how many members).
DONE = f"{T}:layout:recent"
#: Seconds a listing's temporary sorted set lives if its client dies before deleting it.
TMP_TTL = 30

#: Lua: ``each(cmd, key, m)``: ``cmd`` (``SMISMEMBER``, ``ZMSCORE``) of the members ``m`` of
#: ``key``, 500 at a time (``unpack`` has a bound), its replies in one table.
_EACH = """
local function each(cmd, key, m)
  local out = {}
  for s = 1, #m, 500 do
    local part = redis.call(cmd, key, unpack(m, s, math.min(s + 499, #m)))
    for j = 1, #part do out[#out + 1] = part[j] end
  end
  return out
end
local function put(dest, args)
  for s = 1, #args, 1000 do redis.call('ZADD', dest, unpack(args, s, math.min(s + 999, #args))) end
end
"""

#: The records in every filter set and in no excluded one, with their times, added to the sorted
#: set KEYS[1]; returns how many it holds. KEYS[2]: the recency index's ``tops`` (its name:
#: ARGV[4]; ARGV[5] ids a recency bucket, ARGV[6] text buckets); KEYS[3..]: the buckets of each
#: filter set (ARGV[1] sets), then of each excluded set (ARGV[2] sets), ARGV[3] buckets each, in
#: the same order, ``:x`` last: an id is in bucket n of every set, so the filters intersect bucket
#: by bucket (``SINTER``: bounded by the smallest set) and only the ids found are scored, by
#: recency bucket (an id of ``:x`` may be in any text bucket: none the CRM makes).
FILTERED = recency.NAME_LUA + _EACH + """
local f, e, per = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local recent, size, texts = ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])
local function scored(key, m)
  local s, args = each('ZMSCORE', key, m), {}
  for j = 1, #m do if s[j] then args[#args + 1] = s[j]; args[#args + 1] = m[j] end end
  put(KEYS[1], args)
end
for n = 0, per - 1 do
  local m
  if f == 1 then m = redis.call('SMEMBERS', KEYS[3 + n])
  else
    local ks = {}
    for i = 0, f - 1 do ks[i + 1] = KEYS[3 + i * per + n] end
    m = redis.call('SINTER', unpack(ks))
  end
  for i = 0, e - 1 do
    if #m == 0 then break end
    local inside, keep = each('SMISMEMBER', KEYS[3 + (f + i) * per + n], m), {}
    for j = 1, #m do if inside[j] == 0 then keep[#keep + 1] = m[j] end end
    m = keep
  end
  if #m > 0 and n < per - 1 then
    local by, order = {}, {}
    for j = 1, #m do
      local b = math.floor(tonumber(m[j]) / size)
      if not by[b] then by[b] = {}; order[#order + 1] = b end
      by[b][#by[b] + 1] = m[j]
    end
    for _, b in ipairs(order) do scored(bucket(recent, b), by[b]) end
  elseif #m > 0 then
    for k = 1, texts do scored(bucket(recent, -k), m) end
  end
end
return redis.call('ZCARD', KEYS[1])
"""

#: The records of the recency index (KEYS[2] its ``tops``, ARGV[1] its name, ARGV[2] ids a
#: recency bucket, ARGV[3] ids an id-set bucket) in none of the id sets ARGV[4..], with their
#: times, added to the sorted set KEYS[1]; returns how many it holds. Walks every bucket.
EXCLUDING = recency.NAME_LUA + _EACH + """
local recent, size, per = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
for _, n in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  local rows = redis.call('ZRANGE', bucket(recent, n), 0, -1, 'WITHSCORES')
  local b, m, keep = tonumber(n), {}, {}
  local suffix = b >= 0 and (':b:' .. math.floor(b * size / per)) or ':x'
  for j = 1, #rows, 2 do m[#m + 1] = rows[j]; keep[#m] = true end
  for i = 4, #ARGV do
    if #m == 0 then break end
    local inside = each('SMISMEMBER', ARGV[i] .. suffix, m)
    for j = 1, #m do if inside[j] == 1 then keep[j] = false end end
  end
  local args = {}
  for j = 1, #m do if keep[j] then args[#args + 1] = rows[2 * j]; args[#args + 1] = m[j] end end
  put(KEYS[1], args)
end
return redis.call('ZCARD', KEYS[1])
"""


def filtered(dest: str, recent: str, within: Sequence[str], outside: Sequence[str],
             walked: Sequence[Sequence[int]]) -> tuple[Any, ...]:
    """The ``EVAL`` arguments of ``FILTERED``: the records of the recency index ``recent`` in
    every set ``within`` (one at least) and none ``outside``, scored into ``dest``; ``walked``:
    each set of ``within``'s bucket numbers (``idsets.walks``): only those all list can hold a match."""
    common = sorted(set(walked[0]).intersection(*walked[1:len(within)]))
    per = len(common) + 1  # (with ``<key>:x``)
    names = [name for key in [*within, *outside] for name in idsets.buckets(key, common)]
    return (FILTERED, 2 + len(names), dest, recency.tops(recent), *names, len(within), len(outside), per,
            recent, recency.BUCKET, recency.TEXT_BUCKETS)


def excluding(dest: str, recent: str, outside: Sequence[str]) -> tuple[Any, ...]:
    """The ``EVAL`` arguments of ``EXCLUDING``: the records of ``recent`` in no set ``outside``."""
    return (EXCLUDING, 2, dest, recency.tops(recent), recent, recency.BUCKET, idsets.SET_BUCKET, *outside)


async def listing(redis: Any, kind: str, within: Sequence[str], outside: Sequence[str], *, offset: int,
                  limit: int, before: float | None) -> tuple[list[tuple[str, float]], int]:
    """The ids and times of a page of ``kind``'s records newest first (``before``: only those written
    earlier), in every set ``within`` and none ``outside``, and how many match in all (whatever
    ``before``)."""
    key = recent_key(kind)
    if not within and not outside:
        return await recency.page(redis, key, offset=offset, limit=limit, before=before)
    tmp = f"{T}:tmp:{uuid.uuid4().hex}"
    walked = await idsets.walks(redis, within) if within else []  # the sets' non-empty buckets
    pipe = redis.pipeline(transaction=False)
    pipe.eval(*(filtered(tmp, key, within, outside, walked) if within else excluding(tmp, key, outside)))
    pipe.expire(tmp, TMP_TTL)  # deleted below; the TTL covers a client that dies in between
    pipe.zrevrangebyscore(tmp, "+inf" if before is None else f"({before!r}", "-inf", start=offset, num=limit,
                          withscores=True)
    pipe.delete(tmp)
    total, _, raw, _ = await pipe.execute()
    return [(text(i), float(at)) for i, at in raw], int(total)


async def updated_at(redis: Any, kind: str, ids: Sequence[str]) -> list[float | None]:
    """Each record's last write time (None: not indexed), one ``ZMSCORE`` per recency bucket."""
    return await recency.scores(redis, recent_key(kind), ids)


async def move_recent(redis: Redis) -> int:
    """At the first start of this version: the members of each kind's recency sorted set of an
    older version moved into its buckets (``recency.move_whole``: all in the slot ``{crm}``);
    ``DONE`` then records it. Returns the members moved."""
    if await redis.exists(DONE):
        return 0
    moved = sum([await recency.move_whole(redis, recent_key(kind)) for kind in ("contact", "lead")])
    await redis.set(DONE, moved)
    return moved
