"""The embedded CRM's records newest first: each kind's recency index ``sb:{crm}:recent:<kind>``
(record id -> time of its last write) kept in buckets of 128 ids (``bot/store/recency.py``: about
15 B a record where the one sorted set cost 118; issue 14, aim 3), and its filtered listings.

A listing filtered by id sets (``idsets.py``: buckets of 512 ids, four recency buckets each) is
one script (``FILTERED``): it intersects the sets bucket by bucket, groups the ids found by
recency bucket and scores those groups in descending max of their bucket until the page is
certain, as an unfiltered page does (``recency.PAGE``): the work follows the matches and the
page, not the records. The default status (no set of its own: the contacts in none of the other
statuses' sets) is one script too (``EXCLUDED``): it visits the recency buckets in descending max,
drops the ids of those sets and stops once the page is certain (a walk of every bucket into a
temporary sorted set cost 160-180 ms of Redis CPU a page at 50,000 contacts, 7 times the
``ZDIFFSTORE`` of the one sorted set; this costs as an unfiltered page plus a ``SCARD`` per
bucket of the sets for the total).

Before these buckets each index was the one sorted set ``sb:{crm}:recent:<kind>``: ``move_recent``
moves its members at start, before a process serves (``redis_crm.move_old_layout``), and ``DONE``
then says so: later starts read one key.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis

from bot.store import recency

from . import idsets
from .indexes import T, recent_key

#: Set once the recency sorted sets of older versions are moved into buckets (its value: how many members).
DONE = f"{T}:layout:recent"

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
"""

#: A page of the records in every filter set and in no excluded one, newest first, as
#: ``recency.PAGE`` replies. KEYS[1]: the recency index's ``tops`` (its name: ARGV[4]; ARGV[5] ids
#: a recency bucket, ARGV[6] text buckets; ARGV[7] the highest time, '+inf' or '(<before>';
#: ARGV[8] offset, ARGV[9] limit, ARGV[10] the cursor's id or '', as ``recency.PAGE``); KEYS[2..]:
#: the buckets of each filter set (ARGV[1] sets), then of each excluded set (ARGV[2] sets),
#: ARGV[3] buckets each, in the same order, ``:x`` last. An
#: id is in bucket n of every set, so the filters intersect bucket by bucket (``SINTER``: bounded
#: by the smallest set); the ids found are grouped by recency bucket (an id of ``:x`` may be in any
#: text bucket: none the CRM makes), and those groups scored (``ZMSCORE``) in descending max of
#: their bucket until the page is certain, as ``recency.PAGE`` does (once it holds a page, only
#: the ids from its last time up are kept). The total counts the ids found
#: whose bucket is in the index (a record is in its kind's recency index whenever it is in a set:
#: both are written in one pipeline).
FILTERED = recency.NAME_LUA + recency.RANK_LUA + _EACH + """
local f, e, per = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local recent, size, texts = ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])
local before = string.sub(ARGV[7], 1, 1) == '(' and tonumber(string.sub(ARGV[7], 2)) or nil
local offset, limit = tonumber(ARGV[8]), tonumber(ARGV[9])
local cur = cursor(ARGV[7], ARGV[10])
local want = offset + limit
local groups, by, xs, total = {}, {}, {}, 0
for n = 0, per - 1 do
  local m
  if f == 1 then m = redis.call('SMEMBERS', KEYS[2 + n])
  else
    local ks = {}
    for i = 0, f - 1 do ks[i + 1] = KEYS[2 + i * per + n] end
    m = redis.call('SINTER', unpack(ks))
  end
  for i = 0, e - 1 do
    if #m == 0 then break end
    local inside, keep = each('SMISMEMBER', KEYS[2 + (f + i) * per + n], m), {}
    for j = 1, #m do if inside[j] == 0 then keep[#keep + 1] = m[j] end end
    m = keep
  end
  total = total + #m
  if n < per - 1 then
    for j = 1, #m do
      local b = math.floor(tonumber(m[j]) / size)
      local g = by[b]
      if not g then g = {n = b, ids = {}}; by[b] = g; groups[#groups + 1] = g end
      g.ids[#g.ids + 1] = m[j]
    end
  else xs = m end
end
local labels, live = {}, {}
for i, g in ipairs(groups) do labels[i] = label(g.n) end
if #xs > 0 then
  for k = 1, texts do labels[#labels + 1] = label(-k) end
end
local tops = #labels > 0 and each('ZMSCORE', KEYS[1], labels) or {}
for i, g in ipairs(groups) do
  if tops[i] then g.top = tonumber(tops[i]); live[#live + 1] = g else total = total - #g.ids end
end
local text = {n = -1, ids = xs}
for k = 1, #xs > 0 and texts or 0 do
  local t = tops[#groups + k]
  if t and (not text.top or tonumber(t) > text.top) then text.top = tonumber(t) end
end
if text.top then live[#live + 1] = text else total = total - #xs end
table.sort(live, function(a, b) if a.top ~= b.top then return a.top > b.top end return a.n > b.n end)
local cands, edge = {}, nil  -- edge: the page's last candidate so far
if limit > 0 and offset < total then  -- (a hostile offset scores nothing)
  for _, g in ipairs(live) do
    if edge and before_all(edge, g.top, g.n, size) then break end
    local least = edge and edge[2]  -- below it none enters the page
    for k = g.n >= 0 and g.n or -1, g.n >= 0 and g.n or -texts, -1 do
      local s = each('ZMSCORE', bucket(recent, k), g.ids)
      for j = 1, #g.ids do
        local v = s[j] and tonumber(s[j])
        if v and (not least or v >= least) then
          local c = {g.ids[j], v, s[j], ordinal(g.ids[j])}
          if not before or v < before or (cur and v == before and first(cur, c)) then
            if edge then edge = offer(cands, c, want, edge) else cands[#cands + 1] = c end
          end
        end
      end
    end
    if not edge and #cands >= want then edge = best(cands, want)[want] end
  end
end
return reply(total, cands, offset, want)
"""

#: A page of the records of the recency index in none of the id sets ARGV[9 .. 8 + ARGV[7]], as
#: ``recency.PAGE`` replies: KEYS[1] the index's ``tops``, KEYS[2] its ``count``; ARGV[1] its name,
#: ARGV[2] ids a recency bucket, ARGV[3] ids an id-set bucket, ARGV[4] the highest time ('+inf' or
#: '(<before>'), ARGV[5] offset, ARGV[6] limit, ARGV[8] how many id-set bucket suffixes follow the
#: sets (``:b:<n>`` of the buckets they list, ``:x``), then the cursor's id or '' (as
#: ``recency.PAGE``). It visits the recency buckets in descending max, drops the ids of the sets
#: (``SMISMEMBER`` of their bucket) and stops once the page is certain, as ``recency.PAGE`` does
#: (no temporary set, no walk of every bucket). The total is the index's count less the sets' (a
#: record of a status set is in the index: both are written in one pipeline; several sets: their
#: union, bucket by bucket).
EXCLUDED = recency.NAME_LUA + recency.RANK_LUA + _EACH + """
local recent, size, per = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local offset, limit, e, nsfx = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local sets = {}
for i = 1, e do sets[i] = ARGV[8 + i] end
local cur = cursor(ARGV[4], ARGV[9 + e + nsfx])
local members = tonumber(redis.call('GET', KEYS[2]) or '0')
local total = members
for k = 1, nsfx do
  local sfx = ARGV[8 + e + k]
  if e == 1 then total = total - redis.call('SCARD', sets[1] .. sfx)
  else
    local ks = {}
    for i = 1, e do ks[i] = sets[i] .. sfx end
    total = total - #redis.call('SUNION', unpack(ks))
  end
end
if total < 0 then total = 0 end
local want = offset + limit
if limit <= 0 or offset >= members then return {total} end
local cands = visit(KEYS[1], want, size, function(n, floor, top)
  local got = redis.call('ZREVRANGEBYSCORE', bucket(recent, n), ARGV[4], floor, 'WITHSCORES')
  for _, v in ipairs(tied(bucket(recent, n), cur, floor, top, n, size)) do got[#got + 1] = v end
  local m, keep = {}, {}
  for j = 1, #got, 2 do m[#m + 1] = got[j]; keep[#m] = true end
  local sfx = n >= 0 and (':b:' .. math.floor(n * size / per)) or ':x'
  for _, set in ipairs(sets) do
    if #m == 0 then break end
    local inside = each('SMISMEMBER', set .. sfx, m)
    for j = 1, #m do if inside[j] == 1 then keep[j] = false end end
  end
  local out = {}
  for j = 1, #m do
    if keep[j] then out[#out + 1] = m[j]; out[#out + 1] = got[2 * j] end
  end
  return out
end)
return reply(total, cands, offset, want)
"""


def filtered(recent: str, within: Sequence[str], outside: Sequence[str], walked: Sequence[Sequence[int]], *,
             offset: int, limit: int, before: float | None, before_id: str | None = None) -> tuple[Any, ...]:
    """The ``EVAL`` arguments of ``FILTERED``: a page of the records of the recency index
    ``recent`` in every set ``within`` (one at least) and none ``outside``; ``walked``: each set of
    ``within``'s bucket numbers (``idsets.walks``): only those all list can hold a match."""
    common = sorted(set(walked[0]).intersection(*walked[1:len(within)]))
    per = len(common) + 1  # (with ``<key>:x``)
    names = [name for key in [*within, *outside] for name in idsets.buckets(key, common)]
    return (FILTERED, 1 + len(names), recency.tops(recent), *names, len(within), len(outside), per,
            recent, recency.BUCKET, recency.TEXT_BUCKETS, recency.top_of(before), offset, limit, before_id or "")


def excluded(recent: str, outside: Sequence[str], walked: Sequence[Sequence[int]], *, offset: int, limit: int,
             before: float | None, before_id: str | None = None) -> tuple[Any, ...]:
    """The ``EVAL`` arguments of ``EXCLUDED``: a page of the records of the recency index ``recent``
    in no set ``outside``; ``walked``: each set's bucket numbers (``idsets.walks``)."""
    suffixes = [*(f":b:{n}" for n in sorted({n for ns in walked for n in ns})), ":x"]
    return (EXCLUDED, 2, recency.tops(recent), recency.count(recent), recent, recency.BUCKET, idsets.SET_BUCKET,
            recency.top_of(before), offset, limit, len(outside), len(suffixes), *outside, *suffixes, before_id or "")


async def listing(redis: Any, kind: str, within: Sequence[str], outside: Sequence[str], *, offset: int,
                  limit: int, before: float | None,
                  before_id: str | None = None) -> tuple[list[tuple[str, float]], int]:
    """The ids and times of a page of ``kind``'s records newest first (``before``, ``before_id``:
    only those after that cursor, ``recency.after``), in every set ``within`` and none ``outside``,
    and how many match in all (whatever the cursor)."""
    key = recent_key(kind)
    if not within and not outside:
        return await recency.page(redis, key, offset=offset, limit=limit, before=before, before_id=before_id)
    if within:
        walked = await idsets.walks(redis, within)  # the sets' non-empty buckets
        reply = await redis.eval(*filtered(key, within, outside, walked, offset=offset, limit=limit, before=before,
                                           before_id=before_id))
        return recency.page_of(reply)
    walked = await idsets.walks(redis, outside)  # the sets' non-empty buckets
    reply = await redis.eval(*excluded(key, outside, walked, offset=offset, limit=limit, before=before,
                                       before_id=before_id))
    return recency.page_of(reply)


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
