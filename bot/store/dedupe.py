"""A conversation's dedupe set, ``sb:c:{<cid>}:d``: the push script's check that an id was seen.

Members are ``keys.dedupe_member`` of each id (8 bytes of its SHA-1), scored by when it was seen
(ms), and the mark ``keys.SEEN_MARK`` (scored ``+inf``: the TTL refresh's trim never drops it). The
push adds the id and the mark in one ``ZADD NX``: 1 added, a new id (as one ``ZADD`` before); 0, a
duplicate (then its score says whether it is inside the window); 2, the set is new — and then an
old-layout set, ``sb:c:{<cid>}:seen`` (the ids themselves, 35 B each for a live chat id
``lc:<32 hex>``, before issue 14's third wave), is moved into it as digests (``redis.sha1hex``, the
same bytes), its scores kept, and deleted; an id of that set is a duplicate as before. So an id
seen just before an upgrade is still dropped after it, with no command more per message: the move
costs one ``ZRANGE`` (and the set's ``EXPIRE``) on a conversation's first push only.
"""

from __future__ import annotations

#: ``dd_seen(set, old, member, now, window, expire)``: whether ``member`` was seen less than
#: ``window`` ms before ``now`` (a duplicate), and whether this call created the set (then it has
#: set its TTL, ``expire`` seconds). Otherwise ``member`` is recorded, scored ``now``.
SEEN = """
local function dd_digest(id)
  return (string.gsub(string.sub(redis.sha1hex(id), 1, 16), '..', function(h) return string.char(tonumber(h, 16)) end))
end
local function dd_seen(set, old, member, now, window, expire)
  local added = redis.call('ZADD', set, 'NX', now, member, '+inf', '')
  local seen = added == 0
  if added == 2 then
    redis.call('EXPIRE', set, expire)
    local ids = redis.call('ZRANGE', old, 0, -1, 'WITHSCORES')
    for i = 1, #ids, 200 do
      local kv = {}
      for j = i, math.min(i + 198, #ids - 1), 2 do
        local d = dd_digest(ids[j])
        kv[#kv + 1] = ids[j + 1]; kv[#kv + 1] = d
        if d == member then seen = true end
      end
      redis.call('ZADD', set, unpack(kv))
    end
    if #ids > 0 then redis.call('DEL', old) end
  end
  if seen then
    if tonumber(redis.call('ZSCORE', set, member)) > now - window then return true, added == 2 end
    redis.call('ZADD', set, now, member)  -- seen longer ago: new again (the set is trimmed lazily)
  end
  return false, added == 2
end
"""
