"""Short lists stored as one field of a bucket hash (``owner -> a,b,c``) instead of a set per owner.

A set of its own costs a key (name, object, dictionary entry) and, for members that are not
integers, a hash table: about 280 B for a contact's one identity; a field of one big shared hash
about 100 B, as that hash is a real hash table (a dictionary entry and two strings per field). So
the owners are spread over *buckets*, hashes of at most ``BUCKET`` owners each (``bucket``:
``<key>:b:<id // 128>`` for the embedded CRM's numeric ids), which Redis keeps in its compact
encoding (ziplist/listpack: up to 128 fields of at most 64 bytes by default in Redis 7,
``hash-max-listpack-entries``): a field then costs its bytes and a few more, about 10 B for a
contact's lead ids, 45 B for an identity (issue 14, aim 3). The embedded CRM keeps two such
lists: each contact's channel identities (``sb:crm:identities``) and each contact's lead ids
(``sb:crm:leads_of``).

Before issue 14's fifth wave each list was one big hash (``sb:crm:identities`` itself): at start,
``move_unbucketed`` moves its fields into the buckets (once; later starts find no such hash), so
readers read the buckets only. As for every layout change (``bot/store/layout.py``), stop the
processes of an older version before this one starts.

An older version kept them as sets (``sb:crm:identities_of:<id>``, ``sb:crm:leads_of:<id>``).
``read`` moves such a set into the owner's field the first time it meets it, in one script that
also deletes the set, so no concurrent edit is lost. That script touches two slots: it only runs on
a single Redis, where the old sets can exist (a Redis Cluster deployment is new: no old sets, and
``read`` does not look for them there).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from typing import Any, cast

from redis.asyncio import Redis

from bot.store.clusterclient import is_cluster

from .codec import text

#: Add (ARGV[3] = '1') or remove ('0') ARGV[2] in field ARGV[1] of the hash KEYS[1], whose members
#: are joined by the character ARGV[4]; an emptied field is deleted. Returns the member count.
EDIT = """
local v, sep = redis.call('HGET', KEYS[1], ARGV[1]) or '', ARGV[4]
local out = {}
for m in string.gmatch(v, '[^' .. sep .. ']+') do if m ~= ARGV[2] then out[#out + 1] = m end end
if ARGV[3] == '1' then out[#out + 1] = ARGV[2] end
if #out == 0 then redis.call('HDEL', KEYS[1], ARGV[1])
else redis.call('HSET', KEYS[1], ARGV[1], table.concat(out, sep)) end
return #out
"""

#: Move the old layout's set KEYS[2] into field ARGV[1] of the hash KEYS[1] (joined by ARGV[2]),
#: members not there yet appended in order, and delete the set. Returns the field.
MOVE = """
local v, sep = redis.call('HGET', KEYS[1], ARGV[1]) or '', ARGV[2]
local have = {}
for m in string.gmatch(v, '[^' .. sep .. ']+') do have[m] = true end
local old = redis.call('SMEMBERS', KEYS[2])
table.sort(old)
for _, m in ipairs(old) do
  if not have[m] then
    if v == '' then v = m else v = v .. sep .. m end
    have[m] = true
  end
end
if v ~= '' then redis.call('HSET', KEYS[1], ARGV[1], v) end
redis.call('DEL', KEYS[2])
return v
"""


#: Owners per bucket: the embedded CRM's ids are dense (one counter, ``sb:crm:ids``), so a bucket
#: holds at most this many owners, within Redis 7's default compact-hash bound (128 fields).
BUCKET = 128
#: Buckets of owners whose id is not a number (none of the embedded CRM's; tests, old data).
TEXT_BUCKETS = 1024


def bucket(key: str, owner: str) -> str:
    """The hash holding ``owner``'s field of the list ``key`` (``sb:crm:leads_of:b:0`` holds the
    owners 0-127; ``…:t:<n>`` those whose id is not a number)."""
    if owner.isdigit() and owner.isascii():
        return f"{key}:b:{int(owner) // BUCKET}"
    return f"{key}:t:{zlib.crc32(owner.encode()) % TEXT_BUCKETS}"


def edit(key: str, owner: str, member: str, *, add: bool, sep: str) -> tuple[str, int, str, str, str, str, str]:
    """The ``EVAL`` arguments that add or remove ``member`` in ``owner``'s field of the list
    ``key`` (in its bucket; for a pipeline: ``pipe.eval(*edit(...))``)."""
    return (EDIT, 1, bucket(key, owner), owner, member, "1" if add else "0", sep)


def _by_bucket(key: str, owners: Sequence[str]) -> dict[str, list[int]]:
    """The positions of ``owners`` by the bucket holding their field of the list ``key``."""
    by: dict[str, list[int]] = {}
    for n, owner in enumerate(owners):
        by.setdefault(bucket(key, owner), []).append(n)
    return by


def _queue_reads(pipe: Any, owners: Sequence[str], by: dict[str, list[int]]) -> None:
    for name, ns in by.items():
        pipe.hmget(name, [owners[n] for n in ns])


def _sorted_back(by: dict[str, list[int]], replies: Sequence[Any], n: int) -> list[Any]:
    out: list[Any] = [None] * n
    for ns, found in zip(by.values(), replies, strict=True):
        for i, line in zip(ns, found, strict=True):
            out[i] = line
    return out


async def lines(redis: Any, key: str, owners: Sequence[str]) -> list[Any]:
    """Each owner's raw field of the list ``key`` (None: none), one ``HMGET`` per bucket, in one
    round trip. ``redis`` may be a pipeline that runs commands at once (after a WATCH) when the
    owners share one bucket (one owner: ``open_leads.newest_open_watched``)."""
    by = _by_bucket(key, owners)
    if len(by) == 1:
        return list(await redis.hmget(next(iter(by)), list(owners)))
    pipe = redis.pipeline(transaction=False)
    _queue_reads(pipe, owners, by)
    return _sorted_back(by, await pipe.execute(), len(owners))


async def read(redis: Redis, key: str, owners: Sequence[str], old_key: Callable[[str], str],
               sep: str) -> dict[str, list[str]]:
    """Each owner's members in the order they were added (an old layout's set moved in first)."""
    if not owners:
        return {}
    single = not is_cluster(redis)
    by = _by_bucket(key, owners)
    pipe = redis.pipeline(transaction=False)
    _queue_reads(pipe, owners, by)
    if single:
        for owner in owners:
            pipe.exists(old_key(owner))
    replies = await pipe.execute()
    found: dict[str, list[str]] = {}
    for n, (owner, line) in enumerate(zip(owners, _sorted_back(by, replies[:len(by)], len(owners)), strict=True)):
        if single and replies[len(by) + n]:
            line = await redis.eval(MOVE, 2, bucket(key, owner), old_key(owner), owner, sep)
        found[owner] = members(line, sep)
    return found


def members(line: Any, sep: str) -> list[str]:
    """The members of one owner's line (``None``: none)."""
    return [m for m in text(line).split(sep) if m] if line else []


#: Move the fields ARGV of the unbucketed hash KEYS[1] into their buckets (the keys after it, one
#: per field, in order), joined by the separator in the last ARGV: a field the bucket has already
#: gets the old members first, then its own not among them. Returns the fields moved.
MOVE_FIELDS = """
local sep = ARGV[#ARGV]
for i = 1, #ARGV - 1 do
  local owner = ARGV[i]
  local v = redis.call('HGET', KEYS[1], owner)
  if v then
    local have, out = {}, {}
    for _, line in ipairs({v, redis.call('HGET', KEYS[i + 1], owner) or ''}) do
      for m in string.gmatch(line, '[^' .. sep .. ']+') do
        if not have[m] then have[m] = true; out[#out + 1] = m end
      end
    end
    redis.call('HSET', KEYS[i + 1], owner, table.concat(out, sep))
    redis.call('HDEL', KEYS[1], owner)
  end
end
return #ARGV - 1
"""
#: Fields moved per script (``move_unbucketed``).
MOVE_PAGE = 200


async def move_unbucketed(redis: Redis, key: str, sep: str) -> int:
    """Move the fields of the hash ``key`` (a list's layout before its buckets) into the buckets;
    the number of fields moved (0 and one ``HSCAN`` when there is no such hash). On one Redis one
    script per page, so an edit of the same field is never lost; on a Redis Cluster (the buckets
    are in other slots) a read, a merge and a write per page: start no process of this version
    while another one moves (the start of every process runs this)."""
    moved, cursor = 0, 0
    single = not is_cluster(redis)
    while True:
        cursor, page = await redis.hscan(key, cursor, count=MOVE_PAGE)
        rows = [(text(owner), line) for owner, line in cast("dict[Any, Any]", page).items()]
        owners = [owner for owner, _ in rows]
        if owners and single:
            keys = [key, *(bucket(key, o) for o in owners)]
            await redis.eval(MOVE_FIELDS, len(keys), *keys, *owners, sep)
        elif owners:
            now = await lines(redis, key, owners)
            pipe = redis.pipeline(transaction=False)
            for (owner, line), there in zip(rows, now, strict=True):
                merged = dict.fromkeys([*members(line, sep), *members(there, sep)])
                pipe.hset(bucket(key, owner), owner, sep.join(merged))
            pipe.hdel(key, *owners)
            await pipe.execute()
        moved += len(owners)
        if not cursor:
            return moved
