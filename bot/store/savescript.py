"""The save script (``ConversationStore.save``: see ``conversations.py`` for the protocol) and how
the save appends a turn's transcript entries without reading them again.

The transcript (``transcript.py``, ``transcriptfields.py``): the lock taker's read of the
metadata says where it is and its count ``n``; the save sends a ``mode`` with its entries:

- ``h``: in the hash, and the turn's entries fit: the save sends the chunk fields to write (only
  the last, partial one and new ones; all when trimming to ``transcript_max`` moved them) and
  the stale ones to delete, written with the metadata's ``HSET`` (no command of their own);
- ``l``: a list: the entries are pushed first (``RPUSH``, the write a full Redis refuses), as
  before the hash layout;
- empty: no count yet (a new conversation, an old-layout stream), or a transcript in the hash
  that this append moves to the list: the script reads the metadata (``tr_append``).

An append outside the turn meanwhile (``transcript.APPEND``) marks the lock (``+``): the save
then ignores what it was sent for ``h`` (or takes back its ``RPUSH``) and appends as
``tr_append`` finds the transcript. A save without the ``RPUSH`` writes a ``SETRANGE`` of
nothing first instead (a no-op a full Redis refuses: such a save is refused whole).
"""

from __future__ import annotations

from collections.abc import Sequence

from . import inboxlock, transcript, transcriptfields

#: KEYS state, inbox, list, oldlog, meta, out, oldn, counters…; ARGV token, state, processed,
#: expiry, ttl, cap, refresh, mode, nlog, entries…, nfields, fields…, nstale, stale…, nout, out…,
#: nmeta, meta…, ndrop, drop…, channel, cid, ncount, counters…, known ``n`` (empty: none).
SAVE = transcript.FUNCTIONS + inboxlock.FUNCTIONS + """
-- first a write a full Redis refuses (never the LPOP): such a save is refused whole, with the commands
-- beside it. A list's new entries (taken back if the lock is not ours), or a SETRANGE of nothing
local mode, nlog, pushed = ARGV[8], tonumber(ARGV[9]), nil
if nlog > 0 and mode == 'l' then pushed = redis.call('RPUSH', KEYS[3], unpack(ARGV, 10, 9 + nlog))
else redis.call('SETRANGE', KEYS[1], 0, '') end
-- the batch and the entry after it: the first must be this holder's (inboxlock.py)
local n = tonumber(ARGV[3])
local popped, holder, _, marks = redis.call('LPOP', KEYS[2], n + 1), nil, '0', ''
if popped then holder, _, marks = lk_read(popped[1]) end
if holder ~= ARGV[1] then
  if pushed then redis.call('RPOP', KEYS[3], nlog) end
  local back = {}  -- what was popped goes back, in order
  for j = #(popped or {}), 1, -1 do back[#back + 1] = popped[j] end
  if #back > 0 then redis.call('LPUSH', KEYS[2], unpack(back)) end
  return {-1, 0, 0}
end
-- more wait: the next entry back as the head, our lock renewed, before any write that could fail
local more = #popped > n  -- (a script is not rolled back: an error must not lose an unrun event)
if more then redis.call('LPUSH', KEYS[2], lk_entry(ARGV[1], ARGV[4], '', lk_event(popped[n + 1]))) end
-- the transcript's count as the lock taker read it, if nothing appended since (no ``+``)
local known = not string.find(marks, '+', 1, true) and ARGV[#ARGV] ~= '' and tonumber(ARGV[#ARGV])
local ttl = tonumber(ARGV[5])
if ARGV[2] ~= '' then redis.call('SET', KEYS[1], ARGV[2], 'EX', ttl) end
local refresh = ARGV[7] == '1'
local i = 10
local first, last = 0, 0
local nfields = tonumber(ARGV[i + nlog])
local inline = known and mode == 'h'  -- the chunk fields sent are right: written below
if nlog > 0 then
  last = inline and known + nlog
    or tr_append(KEYS[3], KEYS[5], KEYS[4], KEYS[7], tonumber(ARGV[6]), ttl, refresh, ARGV, i, nlog, known, pushed)
  first = last - nlog + 1
end
i = i + nlog + 1
local kv, drop = {}, {}
if inline then for j = i, i + nfields * 2 - 1 do kv[#kv + 1] = ARGV[j] end end
i = i + nfields * 2
local nstale = tonumber(ARGV[i]); i = i + 1
if inline then for j = i, i + nstale - 1 do drop[#drop + 1] = ARGV[j] end end
i = i + nstale
local nout = tonumber(ARGV[i]); i = i + 1
for j = 1, nout do redis.call('RPUSH', KEYS[6], ARGV[i]); i = i + 1 end
if nout > 0 then redis.call('EXPIRE', KEYS[6], ttl) end
local nmeta = tonumber(ARGV[i]); i = i + 1
for j = 1, nmeta * 2 do kv[#kv + 1] = ARGV[i]; i = i + 1 end
if known and nlog > 0 then kv[#kv + 1] = 'n'; kv[#kv + 1] = string.format('%d', last) end
if #kv > 0 then redis.call('HSET', KEYS[5], unpack(kv)) end
local ndrop = tonumber(ARGV[i]); i = i + 1  -- copies no longer stored (statemeta.py): once, after an upgrade
for j = i, i + ndrop - 1 do drop[#drop + 1] = ARGV[j] end
i = i + ndrop
if #drop > 0 then redis.call('HDEL', KEYS[5], unpack(drop)) end
if refresh then redis.call('EXPIRE', KEYS[5], ttl) end
local channel, cid = ARGV[i], ARGV[i + 1]; i = i + 2
local ncount = tonumber(ARGV[i]); i = i + 1
for j = 1, ncount do redis.call('HINCRBY', KEYS[7 + j], ARGV[i], ARGV[i + 1]); i = i + 2 end
if nlog > 0 then redis.call('PUBLISH', channel, cid .. ' ' .. last) end
-- the lock kept for the next batch, or (the inbox held only this batch) gone with the inbox
return {more and 1 or 0, first, last}
"""

#: What the lock taker read of the transcript, kept for its save: ``n`` ("": absent) and the
#: transcript in the hash (None: not there; ``transcriptfields.UNREAD``: the script reads it).
Read = tuple[str, transcriptfields.Inline | None]


def transcript_args(read: Read | None, log: Sequence[bytes], cap: int) -> tuple[str, list[str | bytes | int]]:
    """The save's ``mode`` and its group of fields and stale chunks (see the module docstring) for
    appending ``log``, from what the lock taker read (None: nothing kept: the script reads)."""
    if not log or read is None or not read[0]:
        return "", _NONE
    inline = read[1]
    if inline is None:
        return "l", _NONE
    group = transcriptfields.appended(inline, log, cap)
    return ("", _NONE) if group is None else ("h", group)


_NONE: list[str | bytes | int] = [0, 0]
