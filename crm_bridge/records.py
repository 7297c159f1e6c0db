"""Where the embedded CRM keeps its records (issue 14, aim 3).

A contact or a lead is a field of a bucket hash (``bot/store/buckets.py``): the lead ``1234``'s
compact msgpack record (``codec.pack_record``) is the field ``1234`` of ``sb:crm:rec:lead:b:9``.
Their ids come from one counter (``sb:crm:ids``), so a bucket holds up to 128 records of its
kind (about 64: contacts and leads take turns) in Redis' compact hash encoding while each is at
most 64 bytes (``hash-max-ziplist-value``), as an unnamed lead and a live chat contact are: a
record then costs its bytes and a few more, where a string key of its own cost about 150 B more
(the key's name, its object and its slot in the key space). A bigger record (a named contact
with a phone and an email) turns its bucket into a plain hash table: still correct, each field
then costs about what a key of its own did less the object and the longer name.

A company (rare: one per firm, written by commands only) keeps its string key
``sb:crm:company:<id>``.

Before these buckets each record was a string key ``sb:crm:<kind>:<id>``: ``move_old_records``
moves them in at start, once (``RECORDS_DONE`` says it is done), so readers read the buckets only.
As for every layout change (``bot/store/layout.py``), stop the processes of an older version
before the first start of this one.
"""

from __future__ import annotations

from typing import Any, cast

from redis.asyncio import Redis

from bot.store import buckets
from bot.store.clusterclient import is_cluster

from .codec import text

#: The bucketed maps of records, by kind.
RECORDS = {"contact": "sb:crm:rec:contact", "lead": "sb:crm:rec:lead"}
#: Set once the string keys of older versions are moved (its value: how many).
RECORDS_DONE = "sb:crm:layout:records"
#: Keys moved per script (one Redis) or per read-write round (a Redis Cluster).
MOVE_PAGE = 200


def company_key(rid: str) -> str:
    return f"sb:crm:company:{rid}"


def old_key(kind: str, rid: str) -> str:
    """A contact's or a lead's string key in older versions (``move_old_records``)."""
    return f"sb:crm:{kind}:{rid}"


def at(kind: str, rid: str) -> tuple[str, str]:
    """The hash and field of a contact's or a lead's record."""
    return buckets.bucket(RECORDS[kind], rid), rid


def read(kind: str, rid: str) -> tuple[str, str] | tuple[str, str, str]:
    """The command that reads a record's bytes (its reply: None when there is none)."""
    if kind in RECORDS:
        return ("HGET", *at(kind, rid))
    return ("GET", company_key(rid))


def write(kind: str, rid: str, raw: bytes) -> tuple[str, str, bytes] | tuple[str, str, str, bytes]:
    """The command that writes a record's bytes."""
    if kind in RECORDS:
        return ("HSET", *at(kind, rid), raw)
    return ("SET", company_key(rid), raw)


async def get(redis: Redis, kind: str, rid: str) -> bytes | None:
    """A record's bytes (None: none)."""
    raw = await (redis.hget(*at(kind, rid)) if kind in RECORDS else redis.get(company_key(rid)))
    return cast("bytes | None", raw)  # our clients never decode replies (codec.py)


async def get_many(redis: Any, kind: str, ids: list[str], *, watched: bool = False) -> list[Any]:
    """The records' bytes (None: none), in one round trip (one ``HMGET`` per bucket). ``watched``:
    ``redis`` is a pipeline after its WATCH, which runs commands at once on its own connection:
    one ``HMGET`` after the other there (a contact's leads are in one bucket or two)."""
    if not ids:
        return []
    if kind in RECORDS and watched:
        by: dict[str, list[str]] = {}
        for rid in ids:
            by.setdefault(buckets.bucket(RECORDS[kind], rid), []).append(rid)
        found: dict[str, Any] = {}
        for name, owners in by.items():
            found.update(zip(owners, await redis.hmget(name, owners), strict=True))
        return [found[rid] for rid in ids]
    if kind in RECORDS:
        return await buckets.fields(redis, RECORDS[kind], ids)
    pipe = redis.pipeline(transaction=False)
    for rid in ids:
        pipe.get(company_key(rid))
    return list(await pipe.execute())


#: Move the string keys KEYS[1..n/2] into the fields ARGV[1..n/2] of the buckets KEYS[n/2+1..n]:
#: a field this version wrote already is newer and kept. Returns how many keys there were.
_MOVE = """
local n, moved = #ARGV, 0
for i = 1, n do
  local v = redis.call('GET', KEYS[i])
  if v then
    redis.call('HSETNX', KEYS[n + i], ARGV[i], v)
    redis.call('DEL', KEYS[i])
    moved = moved + 1
  end
end
return moved
"""


async def move_old_records(redis: Redis) -> int:
    """At the first start of this version: the contacts' and leads' string keys of older versions
    moved into their buckets (a ``SCAN``, then one script per page on one Redis; on a Redis
    Cluster, where the keys are in other slots, a read, the ``HSETNX``es, then the ``DEL`` per page,
    under the start's lease, ``layout.moving``). ``RECORDS_DONE`` then records it: later starts
    read one key. Returns the records moved."""
    if await redis.exists(RECORDS_DONE):
        return 0
    moved = 0
    single = not is_cluster(redis)
    for kind, records in RECORDS.items():
        prefix = old_key(kind, "")
        page: list[str] = []
        async for raw in redis.scan_iter(match=prefix + "*", count=1000):  # (no glob character in it)
            rid = text(raw)[len(prefix):]
            if rid and ":" not in rid:  # not another key under the prefix
                page.append(rid)
            if len(page) >= MOVE_PAGE:
                moved += await _move_page(redis, kind, records, page, single)
                page = []
        if page:
            moved += await _move_page(redis, kind, records, page, single)
    await redis.set(RECORDS_DONE, moved)
    return moved


async def _move_page(redis: Redis, kind: str, records: str, rids: list[str], single: bool) -> int:
    olds = [old_key(kind, rid) for rid in rids]
    if single:
        keys = [*olds, *(buckets.bucket(records, rid) for rid in rids)]
        return int(await redis.eval(_MOVE, len(keys), *keys, *rids))
    pipe = redis.pipeline(transaction=False)
    for old in olds:
        pipe.get(old)
    values = await pipe.execute()
    found = [(rid, old, v) for rid, old, v in zip(rids, olds, values, strict=True) if v is not None]
    if not found:
        return 0
    # written first, deleted after: a cluster pipeline runs every command even when some fail (a
    # node away, a full one refusing HSETNX but not DEL), and a key deleted unwritten is lost
    pipe = redis.pipeline(transaction=False)
    for rid, _, v in found:
        pipe.hsetnx(buckets.bucket(records, rid), rid, v)
    await pipe.execute()
    await redis.delete(*(old for _, old, _ in found))  # (redis-py's cluster client splits it by slot)
    return len(found)
