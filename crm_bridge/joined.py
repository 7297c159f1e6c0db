"""Short lists stored as one field of a bucket hash (``owner -> a,b,c``) instead of a set per owner.

A set of its own costs a key (name, object, dictionary entry) and, for members that are not
integers, a hash table: about 280 B for a contact's one identity; a field of one big shared hash
about 100 B, as that hash is a real hash table (a dictionary entry and two strings per field). So
the owners are spread over *buckets* (``bot/store/buckets.py``: ``<key>:b:<id // 128>``), hashes
small enough for Redis' compact encoding: a field then costs its bytes and a few more, about 10 B
for a contact's lead ids, 40 B for an identity (issue 14, aim 3). The embedded CRM keeps two such
lists: each contact's channel identities (``sb:crm:identities``) and each contact's lead ids
(``sb:crm:leads_of``).

Before issue 14's fifth wave each list was one big hash (``sb:crm:identities`` itself): at start,
``buckets.move_unbucketed`` moves its fields into the buckets, a field of both keeping the old
members first (once; later starts find no such hash), so readers read the buckets only. As for
every layout change (``bot/store/layout.py``), stop the processes of an older version before this
one starts.

An older version kept them as sets (``sb:crm:identities_of:<id>``, ``sb:crm:leads_of:<id>``).
``read`` moves such a set into the owner's field the first time it meets it, in one script that
also deletes the set, so no concurrent edit is lost. That script touches two slots: it only runs on
a single Redis, where the old sets can exist (a Redis Cluster deployment is new: no old sets, and
``read`` does not look for them there).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from redis.asyncio import Redis

from bot.store import buckets
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


def edit(key: str, owner: str, member: str, *, add: bool, sep: str) -> tuple[str, int, str, str, str, str, str]:
    """The ``EVAL`` arguments that add or remove ``member`` in ``owner``'s field of the list
    ``key`` (in its bucket; for a pipeline: ``pipe.eval(*edit(...))``)."""
    return (EDIT, 1, buckets.bucket(key, owner), owner, member, "1" if add else "0", sep)


async def read(redis: Redis, key: str, owners: Sequence[str], old_key: Callable[[str], str],
               sep: str) -> dict[str, list[str]]:
    """Each owner's members in the order they were added (an old layout's set moved in first)."""
    if not owners:
        return {}
    single = not is_cluster(redis)
    pipe = redis.pipeline(transaction=False)
    sort_back = buckets.queue_reads(pipe, key, owners)
    if single:
        for owner in owners:
            pipe.exists(old_key(owner))
    replies = await pipe.execute()
    found: dict[str, list[str]] = {}
    got = sort_back(replies)  # (takes the fields' replies off the front: the EXISTS replies are left)
    old = replies if single else []
    for n, (owner, line) in enumerate(zip(owners, got, strict=True)):
        if single and old[n]:
            line = await redis.eval(MOVE, 2, buckets.bucket(key, owner), old_key(owner), owner, sep)
        found[owner] = members(line, sep)
    return found


def members(line: Any, sep: str) -> list[str]:
    """The members of one owner's line (``None``: none)."""
    return [m for m in text(line).split(sep) if m] if line else []
