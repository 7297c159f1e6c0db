"""The embedded CRM's sets of record ids (a stage's leads, the contacts with a lead in a stage, a
tag's, a responsible's, a status's records) spread over small sets, "buckets" (issue 14, aim 3).

One big set of many ids is a real hash table in Redis: about 70 B a member. A set of at most 512
integers is an *intset* (``set-max-intset-entries`` 512 by default): 2 or 4 bytes a member. The
ids come from one counter (``sb:crm:ids``), so the set ``<key>`` keeps the id ``1234`` in
``<key>:b:2`` (``1234 // 512``); an id that is not such a number (none the CRM makes) goes to
``<key>:x``. Every bucket of a set shares its hash tag (``{crm}``): one Redis Cluster slot.

Each set also keeps the numbers of its non-empty ``:b:`` buckets in the intset
``sb:{crm}:nb:<kind>:<field>:<value>`` (``index``: same hash tag, outside ``by:``, where a tag's
free text may name any key an older version's whole set had; a few bytes a bucket, a few hundred
bytes a set at 100,000 ids): an id's bucket number is added after the id (``add``, and
``indexes.STAGE_COUNT``), and dropped in the script that takes the bucket's last id out
(``REMOVE``, ``STAGE_COUNT``), so a listed bucket may be empty for a moment, a non-empty one is
always listed. Readers that need the whole set (a filtered listing) union or intersect only those
buckets and ``<key>:x`` server-side (``walks``: one round trip, as the counter's read it replaced);
a membership test asks the one bucket of each id (``queue_checks``). The walk grows with the set's
buckets, not with the ids the CRM ever made (``bench/crm_listing.py 10000 COUNTER``: a stage and a
tag about 2 ms of Redis CPU both at 20,000 and at 10,000,000 ids made, where walking every bucket
up to the counter cost 2.5 and 36 ms: docs/crm.md).

Before these buckets each set was the one set ``<key>``: ``move_unbucketed_sets`` moves their
members into the buckets at the first start of this version (``DONE`` then says so), so readers
read the buckets only. Buckets written before the indexes get theirs at the first start
of this version (``index_sets``, then ``INDEXED``); until then readers walk every bucket up to the
counter (``walks``). As for every layout change, stop the processes of an older version first.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any, cast

from redis.asyncio import Redis

from bot.store import recency
from bot.store.buckets import per_bucket

from .codec import text

#: Ids per bucket: the default ``set-max-intset-entries``.
SET_BUCKET = 512
#: The record id counter (``redis_crm``): its value bounds the buckets there can be.
IDS = "sb:crm:ids"
#: Set once the sets of older versions are moved into their buckets (its value: how many members).
DONE = "sb:{crm}:layout:id_sets"
#: Set once every set's buckets are listed in its ``index`` (its value: how many buckets).
INDEXED = "sb:{crm}:layout:id_set_index"
#: A bucket's name, its set's key first. An older version's whole set of a value that ends so (a
#: tag ``vip:x``) is named so too: ``is_bucket`` tells them apart by their members.
IS_BUCKET = re.compile(r"^(sb:\{crm\}:by:[^:]+:[^:]+:.+):(?:b:(\d+)|x)$")
#: The sets' prefix, and their indexes' (``index``).
BY, NB = "sb:{crm}:by:", "sb:{crm}:nb:"
#: Members moved per transaction (``move_unbucketed_sets``).
MOVE_PAGE = 500
#: Buckets looked at per pipeline (``index_sets``).
INDEX_PAGE = 1000


def number(rid: str) -> int | None:
    """The number of the ``:b:`` bucket that holds the id ``rid``; None for ``<key>:x``."""
    n = recency.dense(rid)  # (as the recency buckets': four of theirs in one of these, recent.py)
    return None if n is None else n // SET_BUCKET


def bucket(key: str, rid: str) -> str:
    """The bucket of the set ``key`` that holds the id ``rid``."""
    n = number(rid)
    return f"{key}:x" if n is None else f"{key}:b:{n}"


def index(key: str) -> str:
    """The intset of the numbers of the set ``key``'s non-empty ``:b:`` buckets: not under ``by:``
    (``<key>:nb`` there is the name of an older version's whole set of a tag ``…:nb``)."""
    return f"{NB}{key.removeprefix(BY)}"


def buckets(key: str, numbers: Iterable[int]) -> list[str]:
    """The buckets ``numbers`` of the set ``key``, and its ``<key>:x``."""
    return [*(f"{key}:b:{n}" for n in numbers), f"{key}:x"]


async def walks(redis: Any, keys: Sequence[str]) -> list[list[int]]:
    """For each set of ``keys``, the numbers of the buckets a reader walks, ascending: the ones its
    ``index`` lists, or, before ``index_sets`` ran, every one up to the counter's. One round trip."""
    pipe = redis.pipeline(transaction=False)
    pipe.get(INDEXED)
    pipe.get(IDS)
    for key in keys:
        pipe.smembers(index(key))
    indexed, top, *listed = await pipe.execute()
    if indexed is None:
        return [list(range(int(top or 0) // SET_BUCKET + 1)) for _ in keys]
    return [sorted(int(n) for n in found) for found in listed]


def add(pipe: Any, key: str, rid: str) -> None:
    """Queue ``rid``'s addition to the set ``key``: its bucket, then that bucket's number (never a
    moment where the bucket holds an id its number is not listed for, ``REMOVE`` may run between)."""
    pipe.sadd(bucket(key, rid), rid)
    n = number(rid)
    if n is not None:
        pipe.sadd(index(key), n)


#: Take ARGV[1] out of the bucket KEYS[1]; if the bucket is empty then, its number ARGV[2] out of
#: the set's index KEYS[2] (one script: no id added in between goes unlisted).
REMOVE = """
redis.call('SREM', KEYS[1], ARGV[1])
if redis.call('SCARD', KEYS[1]) == 0 then redis.call('SREM', KEYS[2], ARGV[2]) end
return 1
"""


def remove(pipe: Any, key: str, rid: str) -> None:
    """Queue ``rid``'s removal from the set ``key`` (and its bucket's from the index if it empties)."""
    n = number(rid)
    if n is None:
        pipe.srem(bucket(key, rid), rid)
    else:
        pipe.eval(REMOVE, 2, bucket(key, rid), index(key), rid, n)


def queue_checks(pipe: Any, key: str, ids: Sequence[str]) -> Callable[[list[Any]], list[bool]]:
    """Queue on ``pipe`` one ``SMISMEMBER`` per bucket of ``ids``; returns what takes this check's
    replies off the front of a list of the pipeline's replies and gives each id's membership."""
    take = per_bucket(pipe, [bucket(key, rid) for rid in ids], ids, lambda p, name, some: p.smismember(name, some))
    return lambda replies: [bool(found) for found in take(replies)]


async def names(redis: Any, key: str) -> list[str]:
    """The buckets a reader of the set ``key`` walks now (``walks``)."""
    return buckets(key, (await walks(redis, [key]))[0])


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


async def index_sets(redis: Redis) -> int:
    """At the first start of this version: every non-empty ``:b:`` bucket an older version wrote
    listed in its set's ``index`` (a ``SCAN``, then three pipelines per page of ``INDEX_PAGE``
    names); ``INDEXED`` then records it and readers trust the indexes (``walks``). A bucket this
    version fills or empties meanwhile lists or drops its own number (a stale one is harmless).
    Returns the buckets listed."""
    if await redis.exists(INDEXED):
        return 0
    listed, page = 0, []
    async for raw in redis.scan_iter(match="sb:{crm}:by:*:b:*", count=INDEX_PAGE):
        named = IS_BUCKET.match(text(raw))
        if named is not None and named.group(2) is not None:
            page.append((text(raw), named.group(1), int(named.group(2))))
        if len(page) >= INDEX_PAGE:
            listed, page = listed + await _index_page(redis, page), []
    listed += await _index_page(redis, page)
    await redis.set(INDEXED, listed)
    return listed


async def _index_page(redis: Redis, page: Sequence[tuple[str, str, int]]) -> int:
    """The non-empty sets of ``page`` (bucket, its set, its number) listed in their indexes."""
    if not page:
        return 0
    pipe = redis.pipeline(transaction=False)
    for name, _, _ in page:
        pipe.type(name)
    sets = [one for one, kind in zip(page, await pipe.execute(), strict=True) if kind in (b"set", "set")]
    pipe = redis.pipeline(transaction=False)
    for name, _, _ in sets:
        pipe.scard(name)
    full = [one for one, n in zip(sets, await pipe.execute(), strict=True) if n]
    pipe = redis.pipeline(transaction=False)
    for _, key, n in full:
        pipe.sadd(index(key), n)
    await pipe.execute()
    return len(full)
