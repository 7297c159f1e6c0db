"""A conversation's dedupe ids, in its metadata hash: the push script's check that an id was seen.

Why there (issue 14 aim 3): the push that takes the lock reads the metadata anyway, so the
check costs that ``HGETALL`` earlier instead of a ``ZADD`` of a sorted set, and the conversation
has one key fewer (its name, its main and expiry dictionary entries: about 250 B for three ids).

Layout: an id seen is a record of 14 bytes, ``keys.dedupe_member`` of it (8 bytes of its SHA-1)
then when it was seen (ms, 6 bytes big-endian), in the fields ``FIELD`` (``~d``), ``~d1`` …
``~d<FIELDS-1>``, ``PER_FIELD`` records each, oldest first. ``~d`` starts with a byte that says
whether older ids are kept in the sorted set ``sb:c:{<cid>}:d`` (``OVER``, ``1``) or not (``0``).
A field is at most 57 bytes: the hash stays a ziplist/listpack (``statefields.py``). A readers'
``split`` ignores them (names starting with ``~``).

The push (``SEEN``): an id with a record less than the window (7 days) old is a duplicate,
nothing written; else its record is appended (records out of the window are dropped then: an
expired record and none answer the same), written with the push's ``HSET``. Beyond ``INLINE``
records the oldest ``PER_FIELD`` move to the sorted set (scored by their ms, as before; its TTL
the window and a day), which the check then reads (``ZSCORE``) for an id not in the hash: only a
conversation with more than ``INLINE`` ids in a week. The push that refreshes the TTLs (once a
day) trims the set and, when it is gone, clears ``OVER``. A metadata TTL shorter than the set's
(``conversation_ttl_days`` below 8: the hash may expire inside the window, its records with it)
sends every new id to the set (``ZADD`` and its ``EXPIRE``, as before the hash kept them): the
set outlives the hash, and the next push, finding no ``~d``, reads it as an older layout's.

Old layouts, moved on a conversation's first push (no ``~d`` field: one ``EXISTS`` more): the
sorted set ``d`` of issue 14's third wave (digests, scored by ms, and a mark ``""`` scored
``+inf``), and ``seen`` before it (the ids themselves, 35 B for a live chat id ``lc:<32 hex>``,
digested here with ``redis.sha1hex``: the same bytes). Their ids inside the window become
records (scores kept), both sets deleted; more than ``INLINE``: all stay in ``d`` (without the
mark), ``OVER`` set. An id seen just before the upgrade is still dropped after it.
"""

from __future__ import annotations

from collections.abc import Mapping

from redis.asyncio import Redis

from . import replies
from .keys import SEEN_MARK, ConversationKey, dedupe_member

#: The first field's name (the others: ``~d1`` …), records per field, fields, records in all.
FIELD = "~d"
PER_FIELD = 4
FIELDS = 4
INLINE = PER_FIELD * FIELDS
#: A record: an 8-byte digest, then 6 bytes of ms.
RECORD = 14
#: ``~d``'s first byte: older ids are (``1``) or are not (``0``) in the sorted set as well.
OVER, NOT_OVER = "1", "0"

#: ``dd_seen(metakey, meta, set, old, member, now, window, expire, ttl)``: whether ``member`` was
#: seen less than ``window`` ms before ``now`` (a duplicate), and else the dedupe fields to write
#: (flat name, value: only those that change) with it recorded. ``meta``: the metadata's
#: ``HGETALL``. A duplicate found by the first push after an upgrade writes the moved ids itself
#: (the caller returns at once).
SEEN = f"""
local function dd_digest(id)
  return (string.gsub(string.sub(redis.sha1hex(id), 1, 16), '..', function(h) return string.char(tonumber(h, 16)) end))
end
local function dd_name(f) if f == 0 then return '{FIELD}' end return '{FIELD}' .. f end
-- the old layouts' sets moved: (records in the window, whether they stay in set, member's ms)
local function dd_move(set, old, since, member, expire, short)
  if redis.call('EXISTS', set, old) == 0 then return {{}}, false, nil end
  local got = {{}}
  local ids = redis.call('ZRANGE', set, 0, -1, 'WITHSCORES')
  for i = 1, #ids, 2 do if ids[i] ~= '{SEEN_MARK}' then got[ids[i]] = tonumber(ids[i + 1]) end end
  ids = redis.call('ZRANGE', old, 0, -1, 'WITHSCORES')
  for i = 1, #ids, 2 do
    local d, s = dd_digest(ids[i]), tonumber(ids[i + 1])
    if not got[d] or got[d] < s then got[d] = s end
  end
  local list = {{}}
  for d, s in pairs(got) do if s > since then list[#list + 1] = {{s, d}} end end
  table.sort(list, function(a, b) return a[1] < b[1] or (a[1] == b[1] and a[2] < b[2]) end)
  local recs, over = {{}}, short or #list > {INLINE}
  if over then  -- all kept in set, as digests
    for i = 1, #list, 100 do
      local kv = {{}}
      for j = i, math.min(i + 99, #list) do kv[#kv + 1] = list[j][1]; kv[#kv + 1] = list[j][2] end
      redis.call('ZADD', set, unpack(kv))
    end
    redis.call('ZREM', set, '{SEEN_MARK}')
    redis.call('ZREMRANGEBYSCORE', set, '-inf', since)
    redis.call('EXPIRE', set, expire)
    redis.call('DEL', old)
  else
    for i = 1, #list do recs[i] = list[i][2] .. struct.pack('>I6', list[i][1]) end
    redis.call('DEL', set, old)
  end
  local at = got[member]
  return recs, over, at and at > since and at or nil
end
local function dd_seen(metakey, meta, set, old, member, now, window, expire, ttl)
  local cur, since = {{}}, now - window
  -- a metadata TTL shorter than the set's: the hash may expire inside the window, the ids go to the set
  local short = tonumber(ttl) < tonumber(expire)
  for i = 1, #meta, 2 do
    local name = meta[i]
    if string.sub(name, 1, 2) == '{FIELD}' then
      local f = name == '{FIELD}' and 0 or tonumber(string.sub(name, 3))
      if f then cur[f] = meta[i + 1] end
    end
  end
  local recs, over = {{}}, false
  if cur[0] == nil then
    local at
    recs, over, at = dd_move(set, old, since, member, expire, short)
    if at then  -- a duplicate: the moved ids kept all the same
      local kv = {{}}
      for f = 0, {FIELDS - 1} do
        local v = table.concat(recs, '', f * {PER_FIELD} + 1, math.min(#recs, (f + 1) * {PER_FIELD}))
        if f == 0 then v = (over and '{OVER}' or '{NOT_OVER}') .. v end
        if v ~= '' then kv[#kv + 1] = dd_name(f); kv[#kv + 1] = v end
      end
      redis.call('HSET', metakey, unpack(kv))
      if #meta == 0 then redis.call('EXPIRE', metakey, ttl) end
      return true
    end
  else
    over = string.sub(cur[0], 1, 1) == '{OVER}'
    for f = 0, {FIELDS - 1} do
      local v = cur[f]
      if v then
        for j = (f == 0 and 2 or 1), #v - {RECORD - 1}, {RECORD} do
          if struct.unpack('>I6', v, j + 8) > since then
            local d = string.sub(v, j, j + 7)
            if d == member then return true end
            recs[#recs + 1] = string.sub(v, j, j + {RECORD - 1})
          end
        end
      end
    end
    if over then
      local s = redis.call('ZSCORE', set, member)
      if s and tonumber(s) > since then return true end
    end
  end
  if short then
    redis.call('ZADD', set, now, member)
    redis.call('EXPIRE', set, expire)
    over = true
  else
    recs[#recs + 1] = member .. struct.pack('>I6', now)
  end
  if #recs > {INLINE} then  -- the oldest to the set
    local kv = {{}}
    for i = 1, {PER_FIELD} do
      kv[#kv + 1] = struct.unpack('>I6', recs[i], 9); kv[#kv + 1] = string.sub(recs[i], 1, 8)
    end
    redis.call('ZADD', set, unpack(kv))
    redis.call('EXPIRE', set, expire)
    recs = {{unpack(recs, {PER_FIELD + 1})}}
    over = true
  end
  local out = {{}}
  for f = 0, {FIELDS - 1} do
    local v = table.concat(recs, '', f * {PER_FIELD} + 1, math.min(#recs, (f + 1) * {PER_FIELD}))
    if f == 0 then v = (over and '{OVER}' or '{NOT_OVER}') .. v end
    if v ~= (cur[f] or '') then out[#out + 1] = dd_name(f); out[#out + 1] = v end
  end
  return false, out
end
"""


def records(raw: Mapping[bytes, bytes] | Mapping[bytes | str, bytes | str]) -> tuple[dict[bytes, int], bool]:
    """The records of an ``HGETALL`` of a conversation's metadata (digest -> ms, whatever their
    age) and whether older ids are in the sorted set too."""
    out: dict[bytes, int] = {}
    over = False
    for f in range(FIELDS):
        name = FIELD if f == 0 else f"{FIELD}{f}"
        value = raw.get(name.encode())
        if value is None:
            continue
        data = replies.raw(value)
        if f == 0:
            over, data = data[:1] == OVER.encode(), data[1:]
        for j in range(0, len(data) - RECORD + 1, RECORD):
            out[data[j:j + 8]] = int.from_bytes(data[j + 8:j + RECORD], "big")
    return out, over


async def seen_at(redis: Redis, cid: str, dedupe_id: str) -> int | None:
    """When (ms) ``dedupe_id`` was last recorded for ``cid`` (in the hash or the sorted set; None:
    never, or forgotten): for tests and a look at a conversation, not the push's check."""
    key = ConversationKey(cid)
    member = dedupe_member(dedupe_id)
    found, _ = records(await redis.hgetall(key.meta))
    if member in found:
        return found[member]
    score = await redis.zscore(key.seen, member)
    return None if score is None else int(score)
