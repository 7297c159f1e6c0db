"""One-time renames of keys whose layout changed, run at start on a single Redis.

The timer shards became ``sb:timers:{<n>}`` (with ``sb:timers:{<n>}:claimed``) so the claim
script touches one Redis Cluster slot. A store written by an older version still has
``sb:timers:<n>``: its members are merged into the new key (the earlier due time wins) and the
old key is deleted, atomically per key, so a timer is neither lost nor doubled. A Redis Cluster
deployment is new (the server did not speak the Cluster protocol before): nothing to rename.

The conversations' activity index moved from ``sb:idx:activity`` to ``sb:idx:{conv}:activity``
(the slot of the dashboard's filter sets, which then need no re-scoring on every message): its
members are merged the same way, the later activity winning. On a Redis Cluster the two keys
are in different slots, so there they are copied a page at a time and the old key dropped; a
member an older process writes meanwhile is merged at the next start (meanwhile that
conversation's next message lists it again).

The dashboard's filter sets became plain sets named ``sb:idx:{conv}:f:…`` (bot/store/indexes.py;
about 45 B less per conversation and set): the sorted sets of older versions
(``sb:idx:{conv}:status:bot`` …) are found with one ``SCAN`` at the first start, moved a page at
a time (``SADD`` to the set, ``ZREM`` from the sorted set, one script per page: all these keys
share the slot ``{conv}``, also on a Redis Cluster), and the key ``sb:layout:filter_sets`` says
it is done: later starts only read it. So, as for every layout change, stop every process of an
older version before the first start of this one: a member an older process added to an old
sorted set after that start would not be moved. One it moved that a newer save has removed is
not trusted by the listing (it checks each row's metadata).

The activity index was then partitioned by channel and bot (bot/store/partitions.py), which took
the place of the filter sets per channel and per bot: ``move_partitions`` moves the members of
``sb:idx:{conv}:activity`` a page per script into their partitions (``ZADD GT`` there, ``ZREM``
from the old index, the label into the registry: a crash or a refused write midway loses
nothing, the next start goes on), each member's channel and bot read from its membership of the
old ``f:channel:*`` / ``f:bot:*`` sets (in none: the partition of no channel or no bot), then
drops those sets; the key ``sb:layout:partitions`` says it is done (later starts: one read).

Conversations' own layout changes are not moved here but on a conversation's first touch, in
the script that touches it: the transcript stream, the state's key, the dedupe sets ``d`` and
``seen`` (into the metadata's ``~d`` records by the first push: bot/store/dedupe.py).

The timer shards were then split into buckets (``sb:timers:{<n>}:w:<b>``, bot/store/timers.py):
``move_timer_buckets`` moves the members of ``sb:timers:{<n>}`` into them a page per script
(one slot: the shard's hash tag, also on a Redis Cluster), a member only if it is still there
(claimed meanwhile: not brought back), the earlier due time winning, its bucket's top lowered;
``sb:layout:timer_buckets`` says it is done. Until then the claim script also claims from the
old keys, so a member fires once, moved or not.

Timers' entries need no rename: a conversation's one timer entry (``{<cid>}``, bot/store/timers.py) sits
in the same shards beside the entries of older versions (``<cid>:t<n>``), which fire and are
cancelled as before until they drain (docs/server.md, "Timers").

The start runs these moves (and the CRM's and the leads' bucket moves) under a lease
(``moving``), one process at a time: on a Redis Cluster some moves read, merge and write
without a script, and a second process's moves and first edits could otherwise fall in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from typing import cast

from redis.asyncio import Redis
from redis.exceptions import RedisError

from . import indexes, partitions, replies, statefields
from . import keys as k
from .scripts import DROP_IF_HELD, RENEW_IF_HELD
from .timers import cid_of

#: Keys an older version wrote that nothing reads any more, unlinked at start (freed in the
#: background): the embedded CRM's ``sb:crm:idx:leads`` (every lead id, about 100 B a lead).
DEAD_KEYS = ("sb:crm:idx:leads",)

_MERGE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('ZUNIONSTORE', KEYS[2], 2, KEYS[2], KEYS[1], 'AGGREGATE', 'MIN')
redis.call('DEL', KEYS[1])
return 1
"""


_MERGE_LATEST = _MERGE.replace("'MIN'", "'MAX'")
#: Members copied per round trip when the activity index is moved on a Redis Cluster.
_PAGE = 1000


async def rename_old_keys(redis: Redis, *, shards: int) -> int:
    """Merge the old timer shard keys and activity index into the new ones; the number of keys merged."""
    pipe = redis.pipeline(transaction=False)
    pipe.unlink(*DEAD_KEYS)
    for old, new in k.renamed_timer_keys(shards):
        pipe.eval(_MERGE, 2, old, new)
    pipe.eval(_MERGE_LATEST, 2, k.OLD_ACTIVITY_INDEX, k.FLAT_ACTIVITY_INDEX)
    return sum(int(n) for n in await pipe.execute())


#: Set when the filter sets' move is done (its value: how many members were moved).
FILTER_SETS_DONE = f"{k.PREFIX}:layout:filter_sets"

_MOVE_PAGE = """
local m = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
if #m == 0 then return 0 end
redis.call('SADD', KEYS[2], unpack(m))
redis.call('ZREM', KEYS[1], unpack(m))
return #m
"""


async def move_filter_sets(redis: Redis) -> int:
    """The older versions' filter sorted sets moved into the plain sets, once; members moved."""
    if await redis.exists(FILTER_SETS_DONE):
        return 0
    moved = 0
    move = redis.register_script(_MOVE_PAGE)
    async for raw in redis.scan_iter(match=f"{k.PREFIX}:idx:{{conv}}:*", count=_PAGE):
        old = replies.text(raw)
        if not indexes.OLD_FILTER.match(old) or await redis.type(old) not in (b"zset", "zset"):
            continue
        while n := int(await move(keys=[old, indexes.new_filter_key(old)], args=[_PAGE])):
            moved += n
    await redis.set(FILTER_SETS_DONE, moved)
    return moved


#: Set when the activity index is moved into its partitions (its value: how many members were moved).
PARTITIONS_DONE = f"{k.PREFIX}:layout:partitions"

#: KEYS the old index, the registry, the partitions; ARGV n members, then per member its id, its
#: score, its partition's number; then the partitions' labels.
_MOVE_INTO_PARTS = """
local n = tonumber(ARGV[1])
local parts = #KEYS - 2
for i = 0, n - 1 do
  local cid, score, p = ARGV[2 + 3 * i], ARGV[3 + 3 * i], tonumber(ARGV[4 + 3 * i])
  redis.call('ZADD', KEYS[2 + p], 'GT', score, cid)
  redis.call('ZREM', KEYS[1], cid)
end
for p = 1, parts do redis.call('SADD', KEYS[2], ARGV[1 + 3 * n + p]) end
return n
"""


async def _old_sets(redis: Redis, kind: str) -> dict[str, str]:
    """The old ``f:<kind>:*`` sets: key -> the channel or bot it is of."""
    prefix = f"{indexes.FILTER}{kind}:"
    found = {}
    async for raw in redis.scan_iter(match=f"{prefix}*", count=_PAGE):
        name = replies.text(raw)
        found[name] = name.removeprefix(prefix)
    return found


async def move_partitions(redis: Redis, *, page: int = _PAGE, pages: int | None = None) -> int:
    """The flat activity index moved into its partitions, once; members moved (``pages``: at
    most that many, for tests of a move cut short)."""
    if await redis.exists(PARTITIONS_DONE):
        return 0
    channels, bots = await _old_sets(redis, "channel"), await _old_sets(redis, "bot")
    move = redis.register_script(_MOVE_INTO_PARTS)
    moved = 0
    while pages is None or pages > 0:
        rows = replies.scored(await redis.zrange(k.FLAT_ACTIVITY_INDEX, 0, page - 1, withscores=True))
        if not rows:
            break
        cids = [cid for cid, _ in rows]
        pipe = redis.pipeline(transaction=False)
        for name in [*channels, *bots]:
            pipe.smismember(name, cids)
        found = await pipe.execute()
        in_channel, in_bot = found[:len(channels)], found[len(channels):]
        labels: list[str] = []
        args: list[str | float | int] = []
        for i, (cid, score) in enumerate(rows):
            channel = next((c for c, m in zip(channels.values(), in_channel, strict=True) if m[i]), "")
            bot = next((b for b, m in zip(bots.values(), in_bot, strict=True) if m[i]), "")
            name = partitions.label(channel, bot)
            if name not in labels:
                labels.append(name)
            args += [cid, repr(score), labels.index(name) + 1]
        moved += int(await move(keys=[k.FLAT_ACTIVITY_INDEX, partitions.REGISTRY, *map(partitions.key, labels)],
                                args=[len(rows), *args, *labels]))
        if pages is not None:
            pages -= 1
    if pages is not None and await redis.exists(k.FLAT_ACTIVITY_INDEX):
        return moved  # cut short (a test's): not done
    if channels or bots:
        await redis.unlink(*channels, *bots)
    await redis.set(PARTITIONS_DONE, moved)
    return moved


async def move_activity_index(redis: Redis) -> int:
    """The activity index's move on a Redis Cluster (other slot: no script); members moved."""
    moved, cursor = 0, 0
    while True:
        cursor, page = await redis.zscan(k.OLD_ACTIVITY_INDEX, cursor, count=_PAGE)
        if page:
            await redis.zadd(k.FLAT_ACTIVITY_INDEX, dict(replies.scored(page)), gt=True)
            moved += len(page)
        if cursor == 0:
            break
    if moved:
        await redis.delete(k.OLD_ACTIVITY_INDEX)
    return moved


async def drop_derived_sets(redis: Redis) -> None:
    """At every start: the filter set of the status that has none any more
    (``indexes.DERIVED_STATUS``), which older versions kept (one ``EXISTS`` after the first). A
    member of it also in another status's set is stale in that one (an earlier life of the
    conversation that expired there: its metadata says which); that stale membership would hide
    it from the derived status, so it is removed first."""
    bot = indexes.status_key(indexes.DERIVED_STATUS)
    if await redis.exists(bot):  # before dropping it: who is in it and in another status's set
        # is stale in one of them (an expired life's member); its metadata says which
        for other in indexes.Filters(status=indexes.DERIVED_STATUS).excluded():
            both = [replies.text(c) for c in await redis.sinter([bot, other])]
            for cid in both:
                meta = statefields.split(await redis.hgetall(k.ConversationKey(cid).meta), cid)[0]
                if meta.get("status", "") != other.rsplit(":", 1)[-1]:
                    await redis.srem(other, cid)
    await redis.unlink(bot)


#: Set when the timer shards' members are moved into their buckets (its value: how many were moved).
TIMER_BUCKETS_DONE = f"{k.PREFIX}:layout:timer_buckets"

#: KEYS the shard's key before buckets, the shard's tops, the buckets written; ARGV n, then per
#: member: the member, its bucket's index in KEYS (from 1 after the tops), the bucket's number. A
#: member no longer in the old key (claimed meanwhile) is skipped: nothing fires twice.
_MOVE_INTO_BUCKETS = """
local n = tonumber(ARGV[1])
local moved = 0
for i = 0, n - 1 do
  local m, key, b = ARGV[2 + 3 * i], KEYS[2 + tonumber(ARGV[3 + 3 * i])], ARGV[4 + 3 * i]
  local due = redis.call('ZSCORE', KEYS[1], m)
  if due then
    redis.call('ZADD', key, 'LT', due, m)  -- the earlier due time wins
    redis.call('ZADD', KEYS[2], 'LT', due, b)
    redis.call('ZREM', KEYS[1], m)
    moved = moved + 1
  end
end
return moved
"""


async def move_timer_buckets(redis: Redis, *, shards: int, page: int = _PAGE, pages: int | None = None) -> int:
    """The members of the timer shards' keys before buckets (``sb:timers:{<n>}``) moved into
    their buckets, a page per script (one slot: the shard's hash tag), once; members moved
    (``pages``: at most that many, for tests of a move cut short). Until it is done the claim
    script also claims from the old keys, so a member fires once whether moved or not."""
    if await redis.exists(TIMER_BUCKETS_DONE):
        return 0
    move = redis.register_script(_MOVE_INTO_BUCKETS)
    moved = 0
    for shard in range(shards):
        old = k.timer_shard_key(shard)
        while pages is None or pages > 0:
            members = [replies.text(m) for m in cast("list[bytes]", await redis.zrange(old, 0, page - 1))]
            if not members:
                break
            buckets: list[int] = []
            args: list[str | int] = []
            for member in members:
                bucket = k.timer_bucket(cid_of(member), shards)[1]
                if bucket not in buckets:
                    buckets.append(bucket)
                args += [member, buckets.index(bucket) + 1, bucket]
            keys = [old, k.timer_tops_key(shard), *(k.timer_bucket_key(shard, b) for b in buckets)]
            moved += int(await move(keys=keys, args=[len(members), *args]))
            if pages is not None:
                pages -= 1
    if pages is not None and any([await redis.exists(k.timer_shard_key(s)) for s in range(shards)]):
        return moved  # cut short (a test's): not done
    await redis.set(TIMER_BUCKETS_DONE, moved)
    return moved



#: Held by the process running the start's moves (``moving``): a second process that starts
#: meanwhile waits for it, then runs its own moves (which find nothing left). On a Redis Cluster
#: some moves read, merge and write without a script (their keys are in several slots): two at
#: once could bring back what the first one's process, already serving, changed. The holder
#: renews it every third of its life, so a process that died mid-move holds the others for
#: ``MOVING_MS`` at most (the moves are idempotent).
MOVING_KEY = f"{k.PREFIX}:layout:moving"
MOVING_MS = 15_000
#: How often a waiting process looks at the lease.
_MOVING_POLL = 0.1


@contextlib.asynccontextmanager
async def moving(redis: Redis) -> AsyncIterator[None]:
    """Run the start's layout moves one process at a time (``MOVING_KEY``)."""
    token = secrets.token_hex(8)
    while True:
        if await redis.set(MOVING_KEY, token, nx=True, px=MOVING_MS):
            break
        await asyncio.sleep(_MOVING_POLL)  # another process moves: its moves first, then ours
    renewing = asyncio.create_task(_renew(redis, token), name="layout.moving_renew")
    try:
        yield
    finally:
        renewing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewing
        await redis.eval(DROP_IF_HELD, 1, MOVING_KEY, token)


async def _renew(redis: Redis, token: str) -> None:
    while True:
        await asyncio.sleep(MOVING_MS / 3000)
        with contextlib.suppress(RedisError):  # a blip: the next round renews (the moves go on)
            await redis.eval(RENEW_IF_HELD, 1, MOVING_KEY, token, MOVING_MS)
