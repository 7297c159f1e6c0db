"""The embedded CRM's sets of record ids (a stage's leads, the contacts with a lead in a stage, a
tag's, a responsible's, a status's records) spread over small sets, "buckets" (issue 14, aim 3).

One big set of many ids is a real hash table in Redis: about 70 B a member. A set of at most 512
integers is an *intset* (``set-max-intset-entries`` 512 by default): 2 or 4 bytes a member. The
ids come from one counter (``sb:crm:ids``), so the set ``<key>`` keeps the id ``1234`` in
``<key>:b:2`` (``1234 // 512``); an id that is not such a number (none the CRM makes) goes to
``<key>:x``. Every bucket of a set shares its hash tag (``{crm}``): one Redis Cluster slot.

Readers that need the whole set (a filtered listing) union its buckets server-side first
(``SUNIONSTORE`` of ``buckets(key, top)``, ``top`` the counter's value: the buckets of every id
made so far); a membership test asks the one bucket of each id (``queue_checks``). Measured at
100,000 leads in one stage, the filtered listing's union is the same order of work as the
intersection it feeds; but that walk of every bucket grows with the ids made, not with the sets
(at 10,000,000 ids a stage and a tag cost about 30 ms of Redis CPU: docs/crm.md).

Before these buckets each set was the one set ``<key>``: ``move_unbucketed_sets`` moves their
members into the buckets at the first start of this version (``DONE`` then says so), so readers
read the buckets only. As for every layout change, stop the processes of an older version first.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, cast

from redis.asyncio import Redis

from .codec import text

#: Ids per bucket: the default ``set-max-intset-entries``.
SET_BUCKET = 512
#: Ids below this are numbers from the counter; others (none the CRM makes) go to ``<key>:x``.
DENSE_MAX = 1 << 31
#: The record id counter (``redis_crm``): its value bounds the buckets there can be.
IDS = "sb:crm:ids"
#: Set once the sets of older versions are moved into their buckets (its value: how many members).
DONE = "sb:{crm}:layout:id_sets"
#: A bucket's name, its set's key first. An older version's whole set of a value that ends so (a
#: tag ``vip:x``) is named so too: ``is_bucket`` tells them apart by their members.
IS_BUCKET = re.compile(r"^(sb:\{crm\}:by:[^:]+:[^:]+:.+):(?:b:\d+|x)$")
#: Members moved per transaction (``move_unbucketed_sets``).
MOVE_PAGE = 500


def bucket(key: str, rid: str) -> str:
    """The bucket of the set ``key`` that holds the id ``rid``."""
    if rid.isdigit() and rid.isascii() and len(rid) <= 10 and int(rid) < DENSE_MAX:
        return f"{key}:b:{int(rid) // SET_BUCKET}"
    return f"{key}:x"


def buckets(key: str, top: int) -> list[str]:
    """Every bucket the set ``key`` may have when ``top`` is the counter's value."""
    return [*(f"{key}:b:{n}" for n in range(top // SET_BUCKET + 1)), f"{key}:x"]


async def top(redis: Any) -> int:
    """The counter's value: no record id is above it."""
    return int(await redis.get(IDS) or 0)


def add(pipe: Any, key: str, rid: str) -> None:
    pipe.sadd(bucket(key, rid), rid)


def remove(pipe: Any, key: str, rid: str) -> None:
    pipe.srem(bucket(key, rid), rid)


def queue_checks(pipe: Any, key: str, ids: Sequence[str]) -> Callable[[list[Any]], list[bool]]:
    """Queue on ``pipe`` one ``SMISMEMBER`` per bucket of ``ids``; returns what takes this check's
    replies off the front of a list of the pipeline's replies and gives each id's membership."""
    by: dict[str, list[int]] = {}
    for n, rid in enumerate(ids):
        by.setdefault(bucket(key, rid), []).append(n)
    for name, ns in by.items():
        pipe.smismember(name, [ids[n] for n in ns])

    def take(replies: list[Any]) -> list[bool]:
        out = [False] * len(ids)
        for ns in by.values():
            for n, found in zip(ns, replies.pop(0), strict=True):
                out[n] = bool(found)
        return out

    return take


#: The records of the recency zset KEYS[2] that are in every filter set and in no excluded one,
#: with their recency scores, added to the zset KEYS[1]; returns how many it holds. KEYS[3..]:
#: the buckets of each filter set (ARGV[1] sets), then of each excluded set (ARGV[2] sets), ARGV[3]
#: buckets each, in the same order: an id is in bucket n of every set, so the filters intersect
#: bucket by bucket (``SINTER``: the work is bounded by the smallest set, as one ``ZINTERSTORE``
#: of whole sets was) and only the ids found are looked up and scored.
MATCHES = """
local f, e, per = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local function each(cmd, key, m, from)
  local out = {}
  for s = 1, #m, 500 do
    local part = redis.call(cmd, key, unpack(m, s, math.min(s + 499, #m)))
    for j = 1, #part do out[#out + 1] = part[j] end
  end
  return out
end
for n = 0, per - 1 do
  local m
  if f == 1 then m = redis.call('SMEMBERS', KEYS[3 + n])
  else
    local ks = {}
    for i = 0, f - 1 do ks[i + 1] = KEYS[3 + i * per + n] end
    m = redis.call('SINTER', unpack(ks))
  end
  for i = 0, e - 1 do
    if #m == 0 then break end
    local inside, keep = each('SMISMEMBER', KEYS[3 + (f + i) * per + n], m), {}
    for j = 1, #m do if inside[j] == 0 then keep[#keep + 1] = m[j] end end
    m = keep
  end
  if #m > 0 then
    local scores, args = each('ZMSCORE', KEYS[2], m), {}
    for j = 1, #m do
      if scores[j] then args[#args + 1] = scores[j]; args[#args + 1] = m[j] end
    end
    for s = 1, #args, 1000 do redis.call('ZADD', KEYS[1], unpack(args, s, math.min(s + 999, #args))) end
  end
end
return redis.call('ZCARD', KEYS[1])
"""


def matches(dest: str, recent: str, within: Sequence[str], outside: Sequence[str], top: int) -> tuple[Any, ...]:
    """The ``EVAL`` arguments of ``MATCHES``: the records of ``recent`` in every set ``within``
    (one at least) and none ``outside``, scored into ``dest``."""
    per = top // SET_BUCKET + 2  # (with ``<key>:x``)
    names = [name for key in [*within, *outside] for name in buckets(key, top)]
    return (MATCHES, 2 + len(names), dest, recent, *names, len(within), len(outside), per)


async def names(redis: Any, key: str) -> list[str]:
    """The buckets the set ``key`` may have now."""
    return buckets(key, await top(redis))


async def members(redis: Redis, key: str) -> set[str]:
    """Every id of the set ``key`` (tests, tools: a listing unions server-side)."""
    pipe = redis.pipeline(transaction=False)
    for name in await names(redis, key):
        pipe.smembers(name)
    return {text(m) for found in await pipe.execute() for m in found}


async def is_bucket(redis: Redis, key: str) -> bool:
    """Whether the set ``key`` is a bucket (``move_unbucketed_sets`` leaves those): named as one
    and every member is an id of that bucket. An older version's whole set named alike (the tag
    ``vip:x``'s is ``<tag vip>:x``) holds the counter's ids, which no ``:x`` bucket does; one
    named ``…:b:<n>`` is told apart unless all its ids are of that one bucket's 512."""
    named = IS_BUCKET.match(key)
    if named is None:
        return False
    async for member in redis.sscan_iter(key, count=SET_BUCKET):
        if bucket(named.group(1), text(member)) != key:
            return False
    return True


async def move_unbucketed_sets(redis: Redis) -> int:
    """At the first start of this version: the members of every id set an older version kept
    whole (``sb:{crm}:by:…``) moved into its buckets, ``MOVE_PAGE`` at a time in one MULTI/EXEC
    (all in the slot ``{crm}``, also on a Redis Cluster); ``DONE`` then records it, later starts
    read one key. Buckets (``is_bucket``) are left as they are. Returns the members moved."""
    if await redis.exists(DONE):
        return 0
    moved = 0
    # every name first: the buckets this makes match the pattern too
    old = [text(raw) async for raw in redis.scan_iter(match="sb:{crm}:by:*", count=1000)]
    for key in old:
        if await redis.type(key) not in (b"set", "set") or await is_bucket(redis, key):
            continue  # (an older version's sorted set of the contacts' stages: ``move_contact_stages``)
        while page := [text(m) for m in cast("list[bytes]", await redis.srandmember(key, MOVE_PAGE))]:
            pipe = redis.pipeline(transaction=True)
            for rid in page:
                add(pipe, key, rid)
            pipe.srem(key, *page)
            await pipe.execute()
            moved += len(page)
    await redis.set(DONE, moved)
    return moved
