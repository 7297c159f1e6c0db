"""A recency index (member -> time of its last write, listed newest first) spread over small
sorted sets, "buckets" (issue 14, aim 3).

One big sorted set is a skiplist in Redis: about 118 B a member. A sorted set of at most 128
members of at most 64 bytes is a ziplist (``zset-max-ziplist-entries`` 128, listpack since Redis
7), where an integer member with its score costs about 15 B. So the index ``<key>`` keeps the
member ``1234`` in ``<key>:b:9`` (``1234 // 128``): members that are numbers from a counter (the
embedded CRM's record ids) fill their buckets. Any other member (a text id, a number of
``DENSE_MAX`` or more) goes to one of ``TEXT_BUCKETS`` buckets ``<key>:t:<k>`` by its CRC-32
(correct at any count; past 128 a bucket is a skiplist again).

Next to the buckets, ``<key>:max`` maps each non-empty bucket's number (``number``: a text
bucket ``k`` is ``-1 - k``) to the highest score in it, raised with ``ZADD GT`` on every write
and set to the bucket's true top when a removal leaves it non-empty (dropped when it empties): an
upper bound, exact unless a member's score went down. A newest-first page (``PAGE``) visits
the buckets in descending max and stops once it holds ``offset + limit`` candidates that all
score above the next bucket's max: without ``before`` at most ``offset + limit`` buckets; with
it, also the buckets written since ``before``. ``<key>:n`` counts the members: the write scripts
add or take one when ``ZADD`` says the member is new or ``ZREM`` removed it (atomic with the
write, so exact under concurrent writers).

The scripts build the buckets' names from the index's key: every name shares its hash tag, so
they stay in one Redis Cluster slot (which a script may reach without declaring it).

Before these buckets the index was the one sorted set ``<key>``: ``move_whole`` moves its
members at start (a script per page: the writes and the removal from the old set at once, also
on a Redis Cluster), and a marker key then says so. As for every layout change (``layout.py``),
stop the processes of an older version first.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, cast

from redis.asyncio import Redis

from .buckets import per_bucket
from .replies import text

#: Members per bucket: the default ``zset-max-ziplist-entries``.
BUCKET = 128
#: Members that are numbers below this are a counter's (dense); the others go to text buckets.
DENSE_MAX = 1 << 31
#: Buckets of the members that are not dense numbers (a listing may visit all of them).
TEXT_BUCKETS = 64
#: Members moved per script (``move_whole``); buckets read per pipeline (``pages``).
MOVE_PAGE = 500


def dense(member: str) -> int | None:
    """The member as a counter's number, or None when it is not one (text, ``DENSE_MAX`` or more)."""
    if member.isdigit() and member.isascii() and len(member) <= 10 and int(member) < DENSE_MAX:
        return int(member)
    return None


def number(member: str) -> int:
    """The number of ``member``'s bucket: ``n // BUCKET`` for a dense number, else ``-1 - k`` for
    the text bucket ``k`` (its CRC-32 modulo ``TEXT_BUCKETS``)."""
    n = dense(member)
    return n // BUCKET if n is not None else -1 - zlib.crc32(member.encode()) % TEXT_BUCKETS


def name(key: str, n: int) -> str:
    """The bucket ``n`` (``number``) of the index ``key``."""
    return f"{key}:b:{n}" if n >= 0 else f"{key}:t:{-1 - n}"


def label(n: int) -> str:
    """The bucket ``n``'s member in the ``tops``: 8 digits for a dense bucket (``ZREVRANGE``
    lists buckets of one max by number, descending), ``-1 - k`` for the text bucket ``k`` (after them)."""
    return f"{n:08d}" if n >= 0 else str(n)


def ordinal(member: str) -> int | None:
    """Among members of one score, the later first: a counter's number (written as ``str(int)``)
    by its value, any other member after those, by its bytes (descending)."""
    n = dense(member)
    return n if n is not None and str(n) == member else None


def order(member: str, score: float) -> tuple[float, int, int, bytes]:
    """The key that sorts members as a page lists them, with ``reverse=True``: newest first, then
    by ``ordinal`` (the later first), then the others by their bytes, descending."""
    n = ordinal(member)
    return (score, 0, 0, member.encode()) if n is None else (score, 1, n, b"")


def after(member: str, score: float, before: float | None, before_id: str | None) -> bool:
    """Whether a page whose cursor is ``before`` (a score) and ``before_id`` (the previous page's
    last member, None: every member at ``before`` was listed) lists ``member`` scored ``score``:
    it comes after the cursor in the order of ``order``."""
    if before is None:
        return True
    if before_id is None:
        return score < before
    return order(member, score) < order(before_id, before)


def tops(key: str) -> str:
    """The sorted set bucket number -> highest score in it."""
    return f"{key}:max"


def count(key: str) -> str:
    """The count of the index's members."""
    return f"{key}:n"


#: Lua: ``bucket(key, n)``, the name of bucket ``n`` (a number or its ``label``) of the index
#: ``key`` (as ``name``); ``ordinal(m)`` and ``label(n)`` as their namesakes, for scripts.
NAME_LUA = """
local function bucket(key, n)
  n = tonumber(n)
  if n >= 0 then return key .. ':b:' .. n end
  return key .. ':t:' .. (-1 - n)
end
local function ordinal(m)
  if #m <= 10 and string.match(m, '^%d+$') and (m == '0' or string.sub(m, 1, 1) ~= '0') then
    local n = tonumber(m)
    if n < 2147483648 then return n end
  end
  return nil
end
local function label(n)
  if n >= 0 then return string.format('%08d', n) end
  return tostring(n)
end
"""

#: Lua for pages: a candidate is {member, score, its text, ``ordinal``}; ``first(a, b)``: whether
#: ``a`` comes before ``b`` (newest first, ties by ``ordinal``); ``before_all(c, top, n, size)``:
#: whether ``c`` comes before every member of bucket ``n`` whose max is ``top``; ``best(cands,
#: want)``: the first ``want`` of them, sorted; ``offer(cands, c, want, edge)``: ``c`` into such a
#: list whose ``want``-th is ``edge`` (or, for a deep page, an earlier ``want``-th: still a bound);
#: ``cursor(top, id)``: the page's cursor as a candidate (nil without ``id``), from the highest
#: score ``top`` ('(<score>') and the id of the previous page's last member; ``tied(name, cur,
#: floor, top, n, size)``: the members of bucket ``name`` (number ``n``) at the cursor's score
#: that come after it, flat {member, score, …} (the reads below the cursor's score take the rest;
#: a number bucket above the cursor's costs a short read, not all its ties: an import's thousands
#: of records of one time are read a page at a time).
RANK_LUA = """
local function first(a, b)
  if a[2] ~= b[2] then return a[2] > b[2] end
  if a[4] and b[4] then return a[4] > b[4] end
  if a[4] or b[4] then return a[4] ~= nil end
  local la, lb = #a[1], #b[1]
  for i = 1, math.min(la, lb) do
    local x, y = string.byte(a[1], i), string.byte(b[1], i)
    if x ~= y then return x > y end
  end
  return la > lb
end
local function cursor(top, id)
  if id == '' or string.sub(top, 1, 1) ~= '(' then return nil end
  local text = string.sub(top, 2)
  return {id, tonumber(text), text, ordinal(id)}
end
local function tied(name, cur, floor, top, n, size)
  local out = {}
  if not cur or (top and top < cur[2]) or (floor ~= '-inf' and tonumber(floor) > cur[2]) then return out end
  local function keep(got)
    for j = 1, #got, 2 do
      if first(cur, {got[j], cur[2], got[j + 1], ordinal(got[j])}) then
        out[#out + 1] = got[j]; out[#out + 1] = got[j + 1]
      end
    end
  end
  if n >= 0 and (not cur[4] or n * size > cur[4]) then
    -- a number bucket whose every counter's id comes before the cursor: only its ids written with
    -- leading zeros (no ordinal) may come after it; one score lists them first (by their bytes)
    local from = 0
    while true do
      local got = redis.call('ZRANGEBYSCORE', name, cur[3], cur[3], 'WITHSCORES', 'LIMIT', from, 4)
      local zeros = {}
      for j = 1, #got, 2 do
        if string.sub(got[j], 1, 1) ~= '0' then keep(zeros); return out end
        if #got[j] > 1 then zeros[#zeros + 1] = got[j]; zeros[#zeros + 1] = got[j + 1] end  -- ('0': a counter's)
      end
      keep(zeros)
      if #got < 8 then return out end
      from = from + 4
    end
  end
  keep(redis.call('ZREVRANGEBYSCORE', name, cur[3], cur[3], 'WITHSCORES'))
  return out
end
local function before_all(c, top, n, size)
  if c[2] ~= top then return c[2] > top end
  if not c[4] then return false end
  return n < 0 or c[4] > (n + 1) * size - 1
end
local function best(cands, want)
  table.sort(cands, first)
  for j = #cands, want + 1, -1 do cands[j] = nil end
  return cands
end
local function offer(cands, c, want, edge)  -- c into the list if it comes before edge; the new edge
  if not first(c, edge) then return edge end
  if want > 256 then  -- a deep page: appended, sorted at twice the page (an insertion moves O(want))
    cands[#cands + 1] = c
    if #cands < 2 * want then return edge end
    best(cands, want)
    return cands[want]
  end
  local lo, hi = 1, #cands + 1
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if first(cands[mid], c) then lo = mid + 1 else hi = mid end
  end
  table.insert(cands, lo, c)
  if #cands > want then cands[#cands] = nil end
  return cands[want]
end
-- The buckets of the tops ``tops`` in descending max until a page of ``want`` is certain;
-- ``read(n, floor, top)``: bucket ``n`` (its max ``top``)'s candidates scored from ``floor`` up,
-- a flat {member, score, …}.
local function visit(tops, want, size, read)
  local cands, floor, edge = {}, '-inf', nil  -- edge: the page's last candidate so far
  local from = 0
  while true do
    local row = redis.call('ZREVRANGE', tops, from, from + want, 'WITHSCORES')
    if #row == 0 then return cands end
    from = from + #row / 2
    for i = 1, #row, 2 do
      local top, n = tonumber(row[i + 1]), tonumber(row[i])
      if edge and before_all(edge, top, n, size) then return cands end
      local got = read(n, floor, top)
      for j = 1, #got, 2 do
        local c = {got[j], tonumber(got[j + 1]), got[j + 1], ordinal(got[j])}
        if edge then edge = offer(cands, c, want, edge) else cands[#cands + 1] = c end
      end
      if not edge and #cands >= want then edge = best(cands, want)[want] end
      if edge then floor = edge[3] end
    end
  end
end
local function reply(total, cands, offset, want)
  table.sort(cands, first)
  local out = {total}
  for j = offset + 1, math.min(want, #cands) do
    out[#out + 1] = cands[j][1]; out[#out + 1] = cands[j][3]
  end
  return out
end
"""

#: Score ARGV[2] for member ARGV[3] in bucket KEYS[1] (``label`` ARGV[1]); KEYS[2] its ``tops``,
#: KEYS[3] its ``count``.
ADD = """
if redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3]) == 1 then redis.call('INCR', KEYS[3]) end
redis.call('ZADD', KEYS[2], 'GT', ARGV[2], ARGV[1])
return 1
"""

#: Member ARGV[2] out of bucket KEYS[1] (``label`` ARGV[1]); the bucket's max set to its new top, or
#: dropped when it is empty; the count one fewer if it was there.
REMOVE = """
if redis.call('ZREM', KEYS[1], ARGV[2]) == 0 then return 0 end
redis.call('DECR', KEYS[3])
local top = redis.call('ZREVRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #top == 0 then redis.call('ZREM', KEYS[2], ARGV[1])
else redis.call('ZADD', KEYS[2], top[2], ARGV[1]) end
return 1
"""


def add(pipe: Any, key: str, member: str, score: float) -> None:
    """Queue ``member``'s score (its write time) in the index ``key``."""
    n = number(member)
    pipe.eval(ADD, 3, name(key, n), tops(key), count(key), label(n), repr(float(score)), member)


def plain_new(command: Sequence[Any]) -> list[tuple[Any, ...]] | None:
    """A command ``add`` queued, as plain commands for a member known to be new (a script that
    runs a new record's commands one by one: ``redis_crm.CREATE``); None for any other command."""
    if len(command) != 9 or command[0] != "EVAL" or command[1] != ADD:
        return None
    _, _, _, bucket, top, members, n, at, member = command
    return [("ZADD", bucket, at, member), ("ZADD", top, "GT", at, n), ("INCR", members)]


def remove(pipe: Any, key: str, member: str) -> None:
    """Queue ``member``'s removal from the index ``key``."""
    n = number(member)
    pipe.eval(REMOVE, 3, name(key, n), tops(key), count(key), label(n), member)


#: The newest-first page: KEYS[1] the ``tops``, KEYS[2] the ``count``; ARGV[1] the index's key,
#: ARGV[2] the highest score ('+inf', or '(<before>'), ARGV[3] offset, ARGV[4] limit, ARGV[5]
#: ``BUCKET``, ARGV[6] the cursor's id ('' for none: with one, the members at ``before`` that come
#: after that id are listed too). Returns {count, member, score, member, score, …}. Members of one
#: score go by ``ordinal``, the later first: the buckets of one max are listed by number,
#: descending, so a page stops at the first bucket whose members all come after its last candidate.
PAGE = NAME_LUA + RANK_LUA + """
local offset, limit, size = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local want = offset + limit
local cur = cursor(ARGV[2], ARGV[6])
local total = tonumber(redis.call('GET', KEYS[2]) or '0')
if limit <= 0 or offset >= total then return {total} end  -- (a hostile offset costs nothing)
local cands = visit(KEYS[1], want, size, function(n, floor, top)
  local name = bucket(ARGV[1], n)
  local got = redis.call('ZREVRANGEBYSCORE', name, ARGV[2], floor, 'WITHSCORES', 'LIMIT', 0, want + 1)
  if #got == 2 * want + 2 then  -- one more than needed: if cut within a score, all of its (``ordinal``)
    local last, k = got[#got], #got
    if got[k - 2] == last then
      while k > 0 and got[k] == last do got[k] = nil; got[k - 1] = nil; k = k - 2 end
      for _, v in ipairs(redis.call('ZREVRANGEBYSCORE', name, last, last, 'WITHSCORES')) do got[#got + 1] = v end
    else got[k] = nil; got[k - 1] = nil end
  end
  for _, v in ipairs(tied(name, cur, floor, top, n, size)) do got[#got + 1] = v end
  return got
end)
return reply(total, cands, offset, want)
"""


def top_of(before: float | None) -> str:
    """A page's highest score as the scripts take it: '+inf', or '(<before>' (below ``before``)."""
    return "+inf" if before is None else f"({float(before)!r}"


def queue_page(pipe: Any, key: str, *, offset: int, limit: int, before: float | None,
               before_id: str | None = None) -> None:
    """Queue ``PAGE``: the members of ``key`` newest first (``before``: only those that come after
    the cursor, see ``after``), ``offset`` of them skipped, ``limit`` at most; its reply goes to
    ``page_of``."""
    pipe.eval(PAGE, 2, tops(key), count(key), key, top_of(before), offset, limit, BUCKET, before_id or "")


def page_of(reply: Sequence[Any]) -> tuple[list[tuple[str, float]], int]:
    """``PAGE``'s reply: the page's (member, score) and the index's member count."""
    return [(text(reply[i]), float(reply[i + 1])) for i in range(1, len(reply), 2)], int(reply[0])


async def page(redis: Any, key: str, *, offset: int = 0, limit: int = 50, before: float | None = None,
               before_id: str | None = None) -> tuple[list[tuple[str, float]], int]:
    """The page of ``queue_page``, and the index's member count: one round trip."""
    pipe = redis.pipeline(transaction=False)
    queue_page(pipe, key, offset=offset, limit=limit, before=before, before_id=before_id)
    (reply,) = await pipe.execute()
    return page_of(reply)


def queue_scores(pipe: Any, key: str, members: Sequence[str]) -> Callable[[list[Any]], list[float | None]]:
    """Queue one ``ZMSCORE`` per bucket of ``members``; returns what takes these replies off the
    front of the pipeline's replies and gives each member's score (None: not in the index)."""
    take = per_bucket(pipe, [name(key, number(m)) for m in members], members,
                      lambda p, bucket, some: p.zmscore(bucket, some))
    return lambda replies: [None if score is None else float(score) for score in take(replies)]


async def scores(redis: Any, key: str, members: Sequence[str]) -> list[float | None]:
    """Each member's score (None: not in the index), in one round trip."""
    if not members:
        return []
    pipe = redis.pipeline(transaction=False)
    take = queue_scores(pipe, key, members)
    return take(await pipe.execute())


async def pages(redis: Redis, key: str) -> AsyncIterator[list[tuple[str, float]]]:
    """Every member of the index with its score, a page of buckets at a time (upgrades, tools):
    a ``ZSCAN`` of the ``tops``, then a ``ZRANGE`` of each bucket it names."""
    cursor = 0
    while True:
        cursor, rows = await redis.zscan(tops(key), cursor, count=MOVE_PAGE // BUCKET + 1)
        if rows:
            pipe = redis.pipeline(transaction=False)
            for n, _ in rows:
                pipe.zrange(name(key, int(n)), 0, -1, withscores=True)
            yield [(text(m), float(s)) for found in await pipe.execute() for m, s in found]
        if not cursor:
            return


#: Move the members ARGV (member, score, bucket ``label``, …) of the old whole sorted set KEYS[1]
#: into its buckets (a member the bucket has keeps the later score); KEYS[2] the ``tops``, KEYS[3]
#: the ``count``. Returns the members moved.
MOVE = NAME_LUA + """
for i = 1, #ARGV, 3 do
  local new = redis.call('ZADD', bucket(KEYS[1], ARGV[i + 2]), 'GT', ARGV[i + 1], ARGV[i])
  if new == 1 then redis.call('INCR', KEYS[3]) end
  redis.call('ZADD', KEYS[2], 'GT', ARGV[i + 1], ARGV[i + 2])
  redis.call('ZREM', KEYS[1], ARGV[i])
end
return #ARGV / 3
"""


async def move_whole(redis: Redis, key: str) -> int:
    """Move the members of the sorted set ``key`` (the index before its buckets) into the
    buckets, ``MOVE_PAGE`` per script; the members moved (0 after one ``ZRANGE`` when there is
    no such set). A member is removed from ``key`` in the script that writes it to its bucket."""
    moved = 0
    while rows := cast("list[tuple[Any, float]]", await redis.zrange(key, 0, MOVE_PAGE - 1, withscores=True)):
        args = [v for m, s in rows for v in (text(m), repr(float(s)), label(number(text(m))))]
        moved += int(await redis.eval(MOVE, 3, key, tops(key), count(key), *args))
    return moved
