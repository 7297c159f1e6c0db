"""A short transcript kept in the conversation's metadata hash, in fields of at most 63 bytes.

Why (issue 14 aim 3: bytes per idle conversation): a transcript list is a key of its own (its
name, its entries in the main and expiry dictionaries: ~85 B) and a quicklist node around a
ziplist (~200 B) for a few hundred bytes of entries; an idle conversation's transcript is short.
Kept in the metadata hash (a ziplist: fields of at most 64 bytes, like the state's chunks in
``statefields.py``) it costs its bytes and a few bytes a chunk, and the push, which reads the
hash whole anyway (``HGETALL``), hands the turn its chunks: the save writes the changed ones with
its metadata ``HSET`` (no ``RPUSH``).

Layout: ``~t`` holds ``<chunks>,<entries>``; ``~t0`` … ``~t<chunks-1>`` the entries in order,
oldest first, each behind its length (one byte below 128, else two: ``0x80 | len >> 8``,
``len & 0xff``), concatenated and cut into ``CHUNK`` bytes. The newest entry is numbered as in
the list layout by the metadata's ``n``: the first one kept is ``n - entries + 1``. Trimming to
``transcript_max`` drops the oldest. An append that would make the packed bytes longer than
``INLINE_MAX`` (or takes an entry longer than that) moves the whole transcript, trimmed, to the
list ``sb:c:{<cid>}:t`` (``bot/store/transcript.py``), deletes these fields, and from then on the
conversation keeps the list (it never comes back: a conversation that spilled once is a long
one). ``~t`` absent with ``n`` set: the list layout (a conversation an older version started, or
a long one); neither: no transcript yet, the next append starts in the hash (unless it finds an
old-layout stream or a list whose count was lost: those stay lists).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from . import replies

#: Bytes per chunk: one below Redis' default ``hash-max-ziplist-value`` (64), the longest value
#: a ziplist/listpack entry keeps behind a one-byte length (a 64-byte one takes two: 1 B a chunk,
#: issue 14 aim 3). Chunks of 64 bytes, as older versions cut them, read alike (their lengths
#: are never assumed).
CHUNK = 63
#: The packed bytes (lengths included) a transcript in the hash may hold.
INLINE_MAX = 1024
#: The field holding ``<chunks>,<entries>``; the chunks' names start with it.
COUNT = "~t"
_COUNT = COUNT.encode()
_NAMES = tuple(f"{COUNT}{i}" for i in range(-(-INLINE_MAX // CHUNK) + 1))
_RAW_NAMES = tuple(name.encode() for name in _NAMES)

#: Lua: ``tf_split(bytes)`` the entries; ``tf_read(flat)`` of an ``HGETALL`` reply: ``n`` (nil:
#: absent), the entries in the hash (nil: not this layout) and a map of the chunk fields present;
#: ``tf_write(meta, entries, first, chunks, last)`` writes ``entries[first..]`` and ``n`` into the
#: hash (changed chunks only, stale ones deleted) and returns true, or false (nothing written)
#: when they are too long for it.
LUA = f"""
local function tf_split(s)
  local out, p = {{}}, 1
  while p <= #s do
    local len = string.byte(s, p)
    if len < 128 then p = p + 1 else len = (len - 128) * 256 + string.byte(s, p + 1); p = p + 2 end
    out[#out + 1] = string.sub(s, p, p + len - 1)
    p = p + len
  end
  return out
end
local function tf_read(flat)
  local n, count, chunks = nil, nil, {{}}
  for j = 1, #flat, 2 do
    local f = flat[j]
    if f == 'n' then n = tonumber(flat[j + 1])
    elseif string.sub(f, 1, 2) == '{COUNT}' then
      if f == '{COUNT}' then count = flat[j + 1] else chunks[f] = flat[j + 1] end
    end
  end
  if not count then return n, nil, chunks end
  local parts = {{}}
  for c = 0, tonumber(string.match(count, '^(%d+)')) - 1 do parts[#parts + 1] = chunks['{COUNT}' .. c] or '' end
  return n, tf_split(table.concat(parts)), chunks
end
local function tf_write(meta, es, first, chunks, last)
  local parts, size = {{}}, 0
  for j = first, #es do
    local len = #es[j]
    if len > {INLINE_MAX} then return false end
    if len < 128 then parts[#parts + 1] = string.char(len)
    else parts[#parts + 1] = string.char(128 + math.floor(len / 256), len % 256) end
    parts[#parts + 1] = es[j]
    size = size + #parts[#parts - 1] + len
    if size > {INLINE_MAX} then return false end
  end
  local s, c = table.concat(parts), 0
  local kv = {{'n', string.format('%d', last)}}
  for off = 1, #s, {CHUNK} do
    local name, piece = '{COUNT}' .. c, string.sub(s, off, off + {CHUNK - 1})
    if chunks[name] ~= piece then kv[#kv + 1] = name; kv[#kv + 1] = piece end
    chunks[name] = nil
    c = c + 1
  end
  kv[#kv + 1] = '{COUNT}'; kv[#kv + 1] = c .. ',' .. (#es - first + 1)
  redis.call('HSET', meta, unpack(kv))
  local stale = {{}}
  for name in pairs(chunks) do stale[#stale + 1] = name end
  if #stale > 0 then redis.call('HDEL', meta, unpack(stale)) end
  return true
end
"""


_SHORT = tuple(bytes((size,)) for size in range(128))


def prefixed(entry: bytes) -> bytes:
    """``entry`` behind its length (one byte below 128, else two: at most ``0x7fff``)."""
    size = len(entry)
    if size < 128:
        return _SHORT[size] + entry
    return bytes((0x80 | size >> 8, size & 0xFF)) + entry


def unpacked(data: bytes) -> list[bytes]:
    """The entries of a transcript's packed bytes, oldest first."""
    out: list[bytes] = []
    p, end = 0, len(data)
    while p < end:
        size = data[p]
        if size < 128:
            p += 1
        else:
            size = (size - 128) << 8 | data[p + 1]
            p += 2
        out.append(data[p:p + size])
        p += size
    return out


@dataclass(slots=True)
class Inline:
    """A transcript in the hash as the lock taker read it: its chunks, in order, and its entry count."""

    chunks: list[bytes]
    entries: int


#: A transcript in the hash the lock taker did not read (a reply not of bytes, or a count not as
#: this version writes it): its save's script reads it.
UNREAD = Inline([], -1)


def _counts(value: bytes) -> tuple[int, int]:
    chunks, _, entries = value.partition(b",")
    return int(chunks), int(entries)


def inline_of(count: bytes, fields: Mapping[bytes, bytes]) -> Inline:
    """The transcript in the hash from its count field's value and the hash's fields (bytes)."""
    try:
        chunks, _, entries = count.partition(b",")
        k = int(chunks)
        names = _RAW_NAMES[:k] if k < len(_RAW_NAMES) else tuple(map(_name, range(k)))
        return Inline(list(map(fields.__getitem__, names)), int(entries))
    except (KeyError, ValueError, TypeError):
        return UNREAD


def entries(raw: Mapping[bytes, bytes] | Mapping[bytes | str, bytes | str]) -> list[bytes] | None:
    """The transcript's entries in a reader's ``HGETALL`` of the metadata (redis-py: bytes), oldest
    first; None when it is not in the hash (the list layout, or no transcript)."""
    count = raw.get(_COUNT)
    if not isinstance(count, bytes):
        return None
    chunks, _ = _counts(count)
    return unpacked(b"".join(replies.raw(raw.get(_name(i), b"")) for i in range(chunks)))


def _name(i: int) -> bytes:
    return _RAW_NAMES[i] if i < len(_RAW_NAMES) else f"{COUNT}{i}".encode()


def appended(inline: Inline, log: Sequence[bytes], cap: int) -> list[str | bytes | int] | None:
    """The save's group of fields that append ``log`` to ``inline``: their count, the fields (name,
    value, …), the count of stale chunks and their names (``savescript.py``); None when the result
    does not fit in the hash (the save's script moves it to the list) or ``inline`` is ``UNREAD``
    (the script reads it)."""
    had = inline.entries
    count = had + len(log)
    if had < 0:
        return None
    chunks = inline.chunks
    k = len(chunks)
    if count > cap:
        return _trimmed(chunks, log, cap)
    # only the last chunk (if not full) and new ones are written
    start = k - 1 if k and len(chunks[-1]) < CHUNK else k
    parts = [chunks[start] if start < k else b""]
    for entry in log:
        size = len(entry)
        if size < 128:
            parts.append(_SHORT[size])
        elif size > INLINE_MAX:
            return None
        else:
            parts.append(bytes((0x80 | size >> 8, size & 0xFF)))
        parts.append(entry)
    tail = b"".join(parts)
    size = len(tail)
    if sum(map(len, chunks[:start])) + size > INLINE_MAX:
        return None
    out: list[str | bytes | int] = [0]
    for off in range(0, size, CHUNK):
        out += (_NAMES[start], tail[off:off + CHUNK])
        start += 1
    out += (COUNT, f"{start},{count}", 0)
    out[0] = len(out) // 2 - 1
    return out


def _trimmed(chunks: list[bytes], log: Sequence[bytes], cap: int) -> list[str | bytes | int] | None:
    """``appended`` when the oldest entries go: the whole written again (only the chunks that changed)."""
    kept = [*unpacked(b"".join(chunks)), *log][-cap:]
    if max(map(len, kept)) > INLINE_MAX:
        return None
    data = b"".join(map(prefixed, kept))
    if len(data) > INLINE_MAX:
        return None
    k = len(chunks)
    out: list[str | bytes | int] = [0]
    made = 0
    for off in range(0, len(data), CHUNK):
        piece = data[off:off + CHUNK]
        if made >= k or chunks[made] != piece:
            out += (_NAMES[made], piece)
        made += 1
    out += (COUNT, f"{made},{len(kept)}")
    out[0] = len(out) // 2
    stale = _NAMES[made:k]
    return [*out, len(stale), *stale]
