"""The push script (``ConversationStore.push``: see ``conversations.py`` for the protocol), and the
metadata field by which it settles a conversation's early wake without queueing it.

``WAKE_FIELD`` (``w`` in ``sb:c:{<cid>}:meta``) holds the earliest due time of the timers in
the conversation's state (``repr`` of the float, seconds), ``-`` when it had timers and has none
left; absent: unknown (a conversation no turn of this version saved since it had timers). The
turn writes it in the save's ``HSET`` with the state, only when it changed
(``ConversationService._process_batch``), so it costs no command and is never older than the
state. It is trusted only while the state's chunk count carries ``statefields.SYNCED``: an
older version's save (which leaves ``w`` as it was) writes the count without it (this version's
next save that writes the metadata marks it: ``Batch.unsynced``), and a state in its own key has
none. A push of a wake (``ARGV`` after the TTLs: the later of the wake's due time and the
clock, else empty) reads the metadata first; when the field proves no timer due by then (a due
time strictly later, or ``-``; or no metadata at all: the conversation expired, its timers with
it) it returns ``{2, field}`` at once: no dedupe, no inbox, no lock, nothing written.
The worker arms the wake at that time (``ZADD LT``) and acknowledges the claim. Otherwise it
goes on as any push, the metadata already read (docs/server.md, "Early wakes"). On one Redis
(not a cluster: the recovery set is in another slot) the wake's recovery entry is written by the
script after that check, so a settled wake writes none (nor leaves recovery one to forget).
"""

from __future__ import annotations

from . import dedupe, inboxlock, statefields

#: The metadata field holding the earliest due time of the state's timers (``-``: none left).
WAKE_FIELD = "w"
NO_TIMERS = "-"

PUSH = statefields.MOVE + dedupe.SEEN + inboxlock.FUNCTIONS + f"""
local nmeta = tonumber(ARGV[8])
local ttl, refresh_every = tonumber(ARGV[9 + nmeta * 2]), tonumber(ARGV[10 + nmeta * 2])
local wake, meta = ARGV[11 + nmeta * 2], nil
if wake ~= '' then
  -- a wake: settled here when no timer of the state is due by then (see pushscript.py)
  meta = redis.call('HGETALL', KEYS[4])
  local w, synced
  for i = 1, #meta, 2 do
    if meta[i] == '{WAKE_FIELD}' then w = meta[i + 1]
    elseif meta[i] == '{statefields.COUNT}' then synced = string.sub(meta[i + 1], 1, 1) == '{statefields.SYNCED}' end
  end
  -- no metadata: the conversation is gone (expired), and its timers with it
  if #meta == 0 or (synced and w == '{NO_TIMERS}') then return {{2, ''}} end
  if synced and tonumber(w) and tonumber(w) > tonumber(wake) then return {{2, w}} end
  -- queued: its recovery entry (KEYS[6], on one Redis: else sent beside the script)
  if ARGV[12 + nmeta * 2] ~= '' then redis.call('ZADD', KEYS[6], ARGV[12 + nmeta * 2], ARGV[13 + nmeta * 2]) end
end
local now, window = tonumber(ARGV[3]), tonumber(ARGV[6]) * 1000
-- the dedupe records (dedupe.py), in the metadata: KEYS[2] the older ids' set, KEYS[5] the old layout's
local seen = nil
if ARGV[2] ~= '' then
  if not meta then meta = redis.call('HGETALL', KEYS[4]) end
  local dup
  dup, seen = dd_seen(KEYS[4], meta, KEYS[2], KEYS[5], ARGV[2], now, window, ARGV[6] + refresh_every, ttl)
  if dup then return {{-1}} end
end
-- the lock is the inbox's head entry (inboxlock.py): an empty inbox is a free conversation
local expiry = string.format('%d', now + tonumber(ARGV[5]))
local n = redis.call('RPUSH', KEYS[1], lk_entry(ARGV[4], expiry, '', ARGV[1]))
local head, holder, held_until = false, nil, '0'
if n > 1 then
  -- not the head: only the head carries a header (this entry's is dropped)
  redis.call('LSET', KEYS[1], -1, ARGV[1])
  head = redis.call('LINDEX', KEYS[1], 0)
  holder, held_until = lk_read(head)
end
if holder and tonumber(held_until) > now then
  -- queued behind the holder, whose save pops its batch and sees this entry after it
  local kv = {{}}
  for i = 1, nmeta * 2 do kv[i] = ARGV[8 + i] end
  for i = 1, #(seen or {{}}) do kv[#kv + 1] = seen[i] end
  if #kv > 0 then redis.call('HSET', KEYS[4], unpack(kv)) end
  return {{0}}
end
-- the processor: the metadata as it will be, written only where it changes
if not meta then meta = redis.call('HGETALL', KEYS[4]) end
local at, kv = {{}}, {{}}
for i = 1, #meta, 2 do at[meta[i]] = i + 1 end
local function put(name, value)
  local j = at[name]
  if j == nil then
    if value == '' then return end  -- absent reads as empty: an empty field is never stored anew
    meta[#meta + 1] = name; meta[#meta + 1] = value; at[name] = #meta
  elseif meta[j] == value then
    return
  else
    meta[j] = value
  end
  kv[#kv + 1] = name; kv[#kv + 1] = value
end
for i = 9, 8 + nmeta * 2, 2 do put(ARGV[i], ARGV[i + 1]) end
for i = 1, #(seen or {{}}), 2 do put(seen[i], seen[i + 1]) end
-- TTLs are refreshed at most once per refresh_every (r: when, in s; an older version's ttl_at: in ms);
-- the save learns it from the reply
local r = at['r'] and tonumber(meta[at['r']])  -- nil, not an error, for a value that is no number
local last = (r and r * 1000) or (at['ttl_at'] and tonumber(meta[at['ttl_at']]))
local refresh = 0
if not last or now - last >= refresh_every * 1000 then
  put('r', string.format('%d', math.floor(now / 1000)))
  refresh = 1
end
local dd = at['{dedupe.FIELD}'] and meta[at['{dedupe.FIELD}']]
if refresh == 1 and dd and string.sub(dd, 1, 1) == '{dedupe.OVER}' then
  -- the older ids' set trimmed with the TTLs; gone: no longer read
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
  if redis.call('EXPIRE', KEYS[2], tonumber(ARGV[6]) + refresh_every) == 0 then
    put('{dedupe.FIELD}', '{dedupe.NOT_OVER}' .. string.sub(dd, 2))
  end
end
if #kv > 0 then redis.call('HSET', KEYS[4], unpack(kv)) end
if refresh == 1 then redis.call('EXPIRE', KEYS[4], ttl) end
local events
if n == 1 then
  events = {{ARGV[1]}}
else  -- a free head (no header, or its holder's time is up): taken over
  redis.call('LSET', KEYS[1], 0, lk_entry(ARGV[4], expiry, '', lk_event(head)))
  events = lk_events(redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[7]) - 1))
end
return {{1, st_move(KEYS[4], KEYS[3], at['~'] and meta[at['~']]), events, meta, refresh}}
"""
