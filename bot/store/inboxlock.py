"""A conversation's lock, held in the head entry of its inbox: no lock key (issue 14 aim 2).

An inbox entry is an event, or an event behind a header naming a processor:
``\\xc1<expiry, ms> <token><marks>\\n<event>`` (``\\xc1`` is a byte msgpack never uses, so an
event never starts with it). Only the head entry's header counts: it is the lock, held by its
token until its expiry; the conversation is free when the head has no header or its expiry has
passed, and when the inbox is empty there is no lock at all. So:

- a push writes its entry with its own header (it cannot know before its ``RPUSH`` whether it
  will be the head): an ``RPUSH`` that answers 1 found the inbox empty and took the lock with
  that one command. Otherwise it drops its own entry's header (``LSET`` of the tail: only the
  head ever carries one, so whatever becomes the head carries no stale lock) and is queued
  behind a head that is held, or takes the lock over from a free one by rewriting the head's
  header (``LSET``);
- the save pops its batch and the entry after it with one ``LPOP``: the first must carry its
  token (else everything popped is put back, in order, and the save is refused); the entry after
  the batch, if any, goes back with the holder's header (the lock kept for the next batch); if
  there is none the inbox is gone, and the lock with it. No ``GET``, ``DEL`` or ``LLEN``. The
  transcript's ``RPUSH`` comes first (taken back if the save is refused), a write a full Redis
  refuses, so such a save is refused whole (``conversations._SAVE``);
- ``load``, ``extend`` and recovery's ``acquire`` read and rewrite the head; a failure or a
  set-aside releases the lock by writing the head back without its header.

Expiry is judged by the clock of the process that looks (the taker's ``now`` plus the lock's TTL
is written; a pusher or recovery compares it with its own ``now``), so processes' clocks must
agree to well within a lock TTL, as the recovery entry already needs (docs/server.md). A holder
whose lock expired keeps it until another process takes it over: its save, renewal or load
succeeds while the head still carries its token, which is safe (nobody else has run the batch)
and saves redoing it. Marks (after the token): ``+``, an append to the transcript outside a
turn moved its count since the holder read it (``conversations``, "The transcript's count").

The lead queues' events are queued by plain ``RPUSH`` (``ConversationStore.enqueue_commands``):
entries without a header. Behind a holder they are popped like any; at the head they leave the
queue free for recovery, which the same commands schedule. An older version's lock key is not
read: stop older processes before upgrading (docs/architecture.md).
"""

from __future__ import annotations

#: The byte that starts a header (never the first byte of a msgpack value).
HEAD = 0xC1

#: Lua: ``lk_read(entry)`` -> token (nil: no header), expiry (ms, a string), marks;
#: ``lk_event(entry)``: the entry without its header; ``lk_entry(token, expiry, marks, event)``.
#: An entry is a header only when whole (``0xc1``, digits, a space, a newline after): one that
#: only starts with ``0xc1`` (never written here) is an event, handed out as it is, so its batch
#: fails and parks instead of every script on its conversation failing for ever.
FUNCTIONS = """
local function lk_split(entry)
  if string.byte(entry, 1) ~= 193 then return nil end
  local sp = string.find(entry, ' ', 2, true)
  if not sp or sp == 2 or string.find(entry, '[^0-9]', 2) < sp then return nil end
  return sp, string.find(entry, '\\n', sp, true)
end
local function lk_read(entry)
  local sp, nl = lk_split(entry)
  if not nl then return nil, '0', '' end
  local owner = string.sub(entry, sp + 1, nl - 1)
  local token = string.match(owner, '^[^%+]*')
  return token, string.sub(entry, 2, sp - 1), string.sub(owner, #token + 1)
end
local function lk_event(entry)
  local _, nl = lk_split(entry)
  if not nl then return entry end
  return string.sub(entry, nl + 1)
end
local function lk_entry(token, expiry, marks, event)
  return '\\193' .. expiry .. ' ' .. token .. marks .. '\\n' .. event
end
local function lk_events(entries)
  for i = 1, #entries do entries[i] = lk_event(entries[i]) end
  return entries
end
"""


def holder(entry: bytes | None) -> tuple[str, int] | None:
    """The token and expiry (ms) in an inbox entry's header (None: an event without one)."""
    if not entry or entry[0] != HEAD:
        return None
    space = entry.find(b" ")
    newline = entry.find(b"\n", space) if space > 1 and entry[1:space].isdigit() else -1
    if newline < 0:
        return None  # only starts like a header: an event (see ``FUNCTIONS``)
    return entry[space + 1:newline].rstrip(b"+").decode(), int(entry[1:space])
