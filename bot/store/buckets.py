"""Maps of numeric ids spread over small hashes ("buckets") instead of one big hash (issue 14, aim 3).

One big hash of many fields is a real hash table in Redis: a dictionary entry and two strings per
field, about 80-100 B each. A hash of at most 128 short fields is kept in Redis' compact encoding
(ziplist, listpack since Redis 7: ``hash-max-listpack-entries`` 128 and ``-value`` 64 by default),
where a field costs its bytes and a few more. So a map of ids (the embedded CRM's contact id ->
its lead ids, a lead id -> its conversation) is split by id: the field of owner ``1234`` lives in
``<key>:b:9`` (``1234 // 128``). That suits ids from a counter (the embedded CRM's ``sb:crm:ids``),
which fill their buckets; ids from elsewhere are sparse (Kommo's lead ids are global, tens of
millions: one bucket each would cost 152 B a lead where the one hash cost 96), so an id of
``DENSE_MAX`` or more, or one that is not a number, goes to one of ``TEXT_BUCKETS`` buckets by its
CRC-32 (measured with 1,000 / 2,000 / 10,000 such leads: 110 / 83 / 43 B a lead against 96 / 96 /
108 in the one hash). A value over 64 bytes turns its one bucket into a plain hash table: still
correct.

Before these buckets each map was the one hash ``<key>``: ``move_unbucketed`` moves its fields
into the buckets at start, so readers read the buckets only. As for every layout change
(``layout.py``), stop the processes of an older version before the first start of this one.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from typing import Any, cast

from redis.asyncio import Redis

from .clusterclient import is_cluster
from .replies import text

#: Owners per bucket: the embedded CRM's ids are dense (one counter, ``sb:crm:ids``), so a bucket
#: holds at most this many owners, within Redis 7's default compact-hash bound (128 fields).
BUCKET = 128
#: Ids below this are taken for a counter's (dense); the others are spread by their CRC-32.
DENSE_MAX = 1 << 24
#: Buckets of owners whose id is not a dense number (other CRMs' ids, tests).
TEXT_BUCKETS = 1024


def bucket(key: str, owner: str) -> str:
    """The hash holding ``owner``'s field of the map ``key`` (``<key>:b:0`` holds the owners
    0-127; ``<key>:t:<n>`` those whose id is not a number below ``DENSE_MAX``)."""
    if owner.isdigit() and owner.isascii() and len(owner) <= 8 and int(owner) < DENSE_MAX:
        return f"{key}:b:{int(owner) // BUCKET}"
    return f"{key}:t:{zlib.crc32(owner.encode()) % TEXT_BUCKETS}"


def per_bucket(pipe: Any, names: Sequence[str], ids: Sequence[str],
               queue: Callable[[Any, str, list[str]], Any]) -> Callable[[list[Any]], list[Any]]:
    """Queue on ``pipe`` one command per bucket for the ids in it (``names``: each id's bucket;
    ``queue(pipe, bucket, ids)`` queues the command, whose reply holds one item per id); returns
    what takes these replies off the front of a list of the pipeline's replies and gives each
    id's item, in the order of ``ids``."""
    by: dict[str, list[int]] = {}
    for n, name in enumerate(names):
        by.setdefault(name, []).append(n)
    for name, ns in by.items():
        queue(pipe, name, [ids[n] for n in ns])

    def take(replies: list[Any]) -> list[Any]:
        out: list[Any] = [None] * len(ids)
        for ns, found in zip(by.values(), replies[:len(by)], strict=True):
            for n, item in zip(ns, found, strict=True):
                out[n] = item
        del replies[:len(by)]
        return out

    return take


def queue_reads(pipe: Any, key: str, owners: Sequence[str]) -> Callable[[list[Any]], list[Any]]:
    """Queue on ``pipe`` one ``HMGET`` per bucket of ``owners``' fields; returns what takes the
    pipeline's replies off the front of their list and gives the owners' fields (None: none)."""
    return per_bucket(pipe, [bucket(key, owner) for owner in owners], owners,
                      lambda p, name, some: p.hmget(name, some))


async def fields(redis: Any, key: str, owners: Sequence[str]) -> list[Any]:
    """Each owner's raw field of the map ``key`` (None: none), in one round trip. ``redis`` may
    be a pipeline that runs commands at once (after a WATCH) when there is one owner."""
    if len(owners) == 1:
        return list(await redis.hmget(bucket(key, owners[0]), list(owners)))
    pipe = redis.pipeline(transaction=False)
    sort_back = queue_reads(pipe, key, owners)
    return sort_back(await pipe.execute())


#: Move the fields ARGV of the unbucketed hash KEYS[1] into their buckets (the keys after it, one
#: per field, in order). The last ARGV is the lists' separator: a field its bucket has already
#: gets the old members first, then its own not among them; '' (a map of single values): the
#: bucket's value, written by this version, is kept. Returns the fields moved.
MOVE_FIELDS = """
local sep = ARGV[#ARGV]
for i = 1, #ARGV - 1 do
  local owner = ARGV[i]
  local v = redis.call('HGET', KEYS[1], owner)
  if v and sep == '' then
    redis.call('HSETNX', KEYS[i + 1], owner, v)
  elseif v then
    local have, out = {}, {}
    for _, line in ipairs({v, redis.call('HGET', KEYS[i + 1], owner) or ''}) do
      for m in string.gmatch(line, '[^' .. sep .. ']+') do
        if not have[m] then have[m] = true; out[#out + 1] = m end
      end
    end
    redis.call('HSET', KEYS[i + 1], owner, table.concat(out, sep))
  end
  redis.call('HDEL', KEYS[1], owner)
end
return #ARGV - 1
"""
#: Fields moved per script (``move_unbucketed``).
MOVE_PAGE = 200


def _merged(old: Any, new: Any, sep: str) -> str:
    if not sep:
        return text(new or old)
    return sep.join(dict.fromkeys(m for line in (old, new) if line for m in text(line).split(sep) if m))


async def move_unbucketed(redis: Redis, key: str, sep: str) -> int:
    """Move the fields of the hash ``key`` (the map's layout before its buckets) into the buckets;
    ``sep``: the separator of the lists a field holds ('' for single values, see ``MOVE_FIELDS``).
    Returns the number of fields moved (0 after one ``HSCAN`` when there is no such hash). On one
    Redis one script per page, so an edit of the same field meanwhile is never lost; on a Redis
    Cluster (the buckets are in other slots) a read, a merge and a write per page, and the old
    fields' ``HDEL`` only once the writes succeeded (a node at ``maxmemory`` refuses the writes of
    a pipeline but still runs its deletes)."""
    moved, cursor = 0, 0
    single = not is_cluster(redis)
    while True:
        cursor, page = await redis.hscan(key, cursor, count=MOVE_PAGE)
        rows = [(text(owner), value) for owner, value in cast("dict[Any, Any]", page).items()]
        owners = [owner for owner, _ in rows]
        if owners and single:
            keys = [key, *(bucket(key, o) for o in owners)]
            await redis.eval(MOVE_FIELDS, len(keys), *keys, *owners, sep)
        elif owners:
            there = await fields(redis, key, owners)
            pipe = redis.pipeline(transaction=False)
            for (owner, value), now in zip(rows, there, strict=True):
                pipe.hset(bucket(key, owner), owner, _merged(value, now, sep))
            await pipe.execute()  # raises if a write was refused: then nothing is deleted
            await redis.hdel(key, *owners)
        moved += len(owners)
        if not cursor:
            return moved
