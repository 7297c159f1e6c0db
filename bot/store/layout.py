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
"""

from __future__ import annotations

from redis.asyncio import Redis

from . import keys as k
from . import replies

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
    pipe.eval(_MERGE_LATEST, 2, k.OLD_ACTIVITY_INDEX, k.activity_index_key())
    return sum(int(n) for n in await pipe.execute())


async def move_activity_index(redis: Redis) -> int:
    """The activity index's move on a Redis Cluster (other slot: no script); members moved."""
    moved, cursor = 0, 0
    while True:
        cursor, page = await redis.zscan(k.OLD_ACTIVITY_INDEX, cursor, count=_PAGE)
        if page:
            await redis.zadd(k.activity_index_key(), dict(replies.scored(page)), gt=True)
            moved += len(page)
        if cursor == 0:
            break
    if moved:
        await redis.delete(k.OLD_ACTIVITY_INDEX)
    return moved
