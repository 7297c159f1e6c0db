"""One-time renames of keys whose layout changed, run at start on a single Redis.

The timer shards became ``sb:timers:{<n>}`` (with ``sb:timers:{<n>}:claimed``) so the claim
script touches one Redis Cluster slot. A store written by an older version still has
``sb:timers:<n>``: its members are merged into the new key (the earlier due time wins) and the
old key is deleted, atomically per key, so a timer is neither lost nor doubled. A Redis Cluster
deployment is new (the server did not speak the Cluster protocol before): nothing to rename.
"""

from __future__ import annotations

from redis.asyncio import Redis

from . import keys as k

#: Keys an older version wrote that nothing reads any more, unlinked at start (freed in the
#: background): the embedded CRM's ``sb:crm:idx:leads`` (every lead id, about 100 B a lead).
DEAD_KEYS = ("sb:crm:idx:leads",)

_MERGE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('ZUNIONSTORE', KEYS[2], 2, KEYS[2], KEYS[1], 'AGGREGATE', 'MIN')
redis.call('DEL', KEYS[1])
return 1
"""


async def rename_old_keys(redis: Redis, *, shards: int) -> int:
    """Merge the old timer shard keys into the new ones; the number of keys merged."""
    pipe = redis.pipeline(transaction=False)
    pipe.unlink(*DEAD_KEYS)
    for old, new in k.renamed_timer_keys(shards):
        pipe.eval(_MERGE, 2, old, new)
    return sum(int(n) for n in await pipe.execute())
