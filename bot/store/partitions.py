"""The dashboard's activity index, partitioned by (channel, bot) (issue 14, aim 3: bytes).

One sorted set per (channel, bot), ``sb:idx:{conv}:act:<label>``, conversation id -> last
activity; the registry ``sb:idx:{conv}:acts`` holds the labels of the partitions there have
been (never dropped: a follow-up's plain ``ZADD`` relies on its partition's label, which a
listing that saw the partition empty for a moment must not take away; they are bounded by
channels × bots, and an emptied partition costs a listing one ``ZCARD``). A listing by channel
and/or bot reads only the matching partitions: the plain sets of conversation ids per channel and
per bot the index kept before (84 B a member each) are gone.

A label is ``<channel>:<bot>`` with ``%`` and ``:`` of the channel escaped (``%25``, ``%3A``):
the first ``:`` ends the channel, whatever the bot id holds (a bot id is ``[a-z0-9_-]``, a
channel an adapter's name: both are written as they are). No bot (a conversation never run by
one): ``<channel>:``.

The save writes a conversation's activity with one script (``WRITE``: its partition, the
registry, and the partition the previous save's metadata put it in, if another); a listing
merges the chosen partitions newest first in one script (``PAGE``). Every key shares the hash tag
``{conv}``: one Redis Cluster slot.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from redis.asyncio import Redis

from . import replies
from .keys import PREFIX

TAG = "{conv}"
PART = f"{PREFIX}:idx:{TAG}:act:"
REGISTRY = f"{PREFIX}:idx:{TAG}:acts"


def label(channel: str, bot: str) -> str:
    return channel.replace("%", "%25").replace(":", "%3A") + ":" + bot


def split(name: str) -> tuple[str, str]:
    """``(channel, bot)`` of a label."""
    channel, _, bot = name.partition(":")
    return channel.replace("%3A", ":").replace("%25", "%"), bot


def key(name: str) -> str:
    return PART + name


def of(meta: Mapping[str, str]) -> str:
    """The label of the partition a conversation with this metadata is in."""
    return label(meta.get("channel") or "", meta.get("bot") or "")


def chosen(labels: Iterable[str], channel: str | None, bot: str | None) -> list[str]:
    """The labels of the partitions a listing filtered by ``channel`` and ``bot`` reads (sorted)."""
    out = []
    for name in labels:
        c, b = split(name)
        if (not channel or c == channel) and (not bot or b == bot):
            out.append(name)
    return sorted(out)


async def labels(redis: Redis) -> list[str]:
    return [replies.text(m) for m in await redis.smembers(REGISTRY)]


#: The save's write: KEYS the partition, the registry, [the partition the conversation leaves];
#: ARGV activity, conversation id, label.
WRITE = """
if redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2]) == 1 then redis.call('SADD', KEYS[2], ARGV[3]) end
if KEYS[3] then redis.call('ZREM', KEYS[3], ARGV[2]) end
return 0
"""

#: Entries a listing met dropped only if still as it met them: KEYS the partitions (one an
#: entry, repeated as needed); ARGV per key the conversation id and the score met. A save that
#: wrote the entry meanwhile (a conversation back after it expired, or moved back) changed its
#: score: the entry stays (else the conversation, listed nowhere, would wait for its next message).
DROP_IF = """
local n = 0
for i = 1, #KEYS do
  local s = redis.call('ZSCORE', KEYS[i], ARGV[2 * i - 1])
  if s and tonumber(s) == tonumber(ARGV[2 * i]) then n = n + redis.call('ZREM', KEYS[i], ARGV[2 * i - 1]) end
end
return n
"""

#: The start of ``PAGE``: KEYS n partitions, then m sets a listed member is in and e
#: sets it is in none of; ARGV n, m, e first. ``kept(id)``: the member passes those sets.
_SETS = """
local n, m, e = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local function kept(cid)
  for j = n + 1, n + m do
    if redis.call('SISMEMBER', KEYS[j], cid) == 0 then return false end
  end
  for j = n + m + 1, n + m + e do
    if redis.call('SISMEMBER', KEYS[j], cid) == 1 then return false end
  end
  return true
end
"""

#: A page of the listing, newest first: score descending, then id descending (bytes; Redis'
#: order within a score). KEYS: n partitions, m sets each listed member is in (status,
#: waiting), e sets none is in (the derived status), the registry. ARGV: n, m, e, where to start
#: ('+inf'; '(<score>': below that score, an older client's cursor; '<score>' with the id: right
#: after the row (score, id)), how many rows, how many members to look at at most, the plan ('',
#: or 'merge' / 'score' to force one: tests), the id, then the n labels. Returns {{id, score,
#: partition number, ...}, where to go on: score and id ('', '': done)}. A k-way merge of the
#: partitions (each read by rank a page at a time from its start, found by a binary search among
#: the members sharing the cursor's score: however many share it, none is skipped or read twice)
#: keeping the members in every m set and in no e set: its work the page's and the members passed
#: over on the way (at most the budget, then the row to go on after). With m sets whose
#: intersection is small beside that walk: the intersection scored in the partitions (ZMSCORE),
#: sorted. The registry is not written (see the module's docstring).
PAGE = _SETS + """
local max, limit, budget, plan, after = ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7], ARGV[8]
-- a > b by their bytes (Lua's own comparison follows the server's locale)
local function above(a, b)
  local k = math.min(#a, #b)
  for i = 1, k do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x > y end
  end
  return #a > #b
end
local top, inclusive = math.huge, false
if max ~= '+inf' then
  if string.sub(max, 1, 1) == '(' then top = tonumber(string.sub(max, 2)) else top, inclusive = tonumber(max), true end
end
-- whether (v, cid) comes after the cursor
local function past(v, cid)
  return v < top or inclusive and v == top and above(after, cid)
end
local total = 0
for i = 1, n do
  total = total + redis.call('ZCARD', KEYS[i])
end
local out = {}
local small = 0
if m > 0 then
  small = math.huge
  for j = n + 1, n + m do small = math.min(small, redis.call('SCARD', KEYS[j])) end
end
-- scoring the intersection costs about small * n lookups; the merge walks about limit * total / small
if m > 0 and (plan == 'score' or plan == '' and small * (n + m) <= limit * total / math.max(small, 1)) then
  local members = redis.call('SINTER', unpack(KEYS, n + 1, n + m))
  local rows = {}
  for from = 1, #members, 500 do
    local chunk = {unpack(members, from, math.min(from + 499, #members))}
    for i = 1, n do
      local scores = redis.call('ZMSCORE', KEYS[i], unpack(chunk))
      for j = 1, #chunk do
        local s = scores[j]
        if s then
          local v = tonumber(s)
          if past(v, chunk[j]) then rows[#rows + 1] = {v, chunk[j], s, i} end
        end
      end
    end
  end
  table.sort(rows, function(a, b) if a[1] ~= b[1] then return a[1] > b[1] end return above(a[2], b[2]) end)
  for _, r in ipairs(rows) do
    if #out >= limit * 3 then break end
    if kept(r[2]) then out[#out + 1] = r[2]; out[#out + 1] = r[3]; out[#out + 1] = r[4] end
  end
  return {out, '', ''}
end
-- each partition's first rank after the cursor
local function start(key)
  if max == '+inf' then return 0 end
  if not inclusive then return redis.call('ZCOUNT', key, string.sub(max, 2), '+inf') end
  local lo = redis.call('ZCOUNT', key, '(' .. max, '+inf')
  local hi = lo + redis.call('ZCOUNT', key, max, max)
  while lo < hi do  -- the first member at the score below the cursor's id (ids descend by rank)
    local mid = math.floor((lo + hi) / 2)
    if above(after, redis.call('ZREVRANGE', key, mid, mid)[1]) then hi = mid else lo = mid + 1 end
  end
  return lo
end
local bufs, pos, offs = {}, {}, {}
local function fill(i)
  local r = redis.call('ZREVRANGE', KEYS[i], offs[i], offs[i] + limit - 1, 'WITHSCORES')
  offs[i] = offs[i] + #r / 2
  bufs[i], pos[i] = r, 1
end
for i = 1, n do offs[i] = start(KEYS[i]); fill(i) end
local seen = 0
while #out < limit * 3 do
  local best, top_s, top_id = nil, nil, nil
  for i = 1, n do
    if pos[i] > #bufs[i] and #bufs[i] == limit * 2 then fill(i) end
    if pos[i] <= #bufs[i] then
      local s, cid = tonumber(bufs[i][pos[i] + 1]), bufs[i][pos[i]]
      if best == nil or s > top_s or s == top_s and above(cid, top_id) then best, top_s, top_id = i, s, cid end
    end
  end
  if best == nil then break end
  local cid, score = bufs[best][pos[best]], bufs[best][pos[best] + 1]
  pos[best] = pos[best] + 2
  if kept(cid) then out[#out + 1] = cid; out[#out + 1] = score; out[#out + 1] = best end
  seen = seen + 1
  if seen >= budget and #out < limit * 3 then return {out, score, cid} end
end
return {out, '', ''}
"""

#: A search's candidates scored: KEYS the partitions; ARGV how many, then per partition 1 if the
#: listing reads it (its channel and bot match) else 0, then the conversation ids. Returns, per
#: id, {its newest score in a partition read ('' : none), that partition's number (0: none),
#: 1 if it is in any partition (else 0: expired)}, flat. One script: a search's thousands of
#: candidates are looked up in every partition without a reply per partition.
SCORE = """
local n = tonumber(ARGV[1])
local out = {}
for from = n + 2, #ARGV, 500 do
  local chunk = {unpack(ARGV, from, math.min(from + 499, #ARGV))}
  local best, where, listed = {}, {}, {}
  for i = 1, n do
    local scores = redis.call('ZMSCORE', KEYS[i], unpack(chunk))
    for j = 1, #chunk do
      local s = scores[j]
      if s then
        listed[j] = 1
        if ARGV[1 + i] == '1' and (not best[j] or tonumber(s) > tonumber(best[j])) then best[j], where[j] = s, i end
      end
    end
  end
  for j = 1, #chunk do
    out[#out + 1] = best[j] or ''; out[#out + 1] = where[j] or 0; out[#out + 1] = listed[j] or 0
  end
end
return out
"""
