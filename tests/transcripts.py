"""A conversation's transcript as tests read it raw, in either layout: in the metadata hash while
short (``bot/store/transcriptfields.py``), else the list ``sb:c:{<cid>}:t``."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from bot.store import keys as k
from bot.store import transcriptfields


async def blobs(redis: Redis, cid: str) -> list[bytes]:
    """The packed entries kept, oldest first."""
    return (await many(redis, [cid]))[0]


async def many(redis: Redis, cids: list[str]) -> list[list[bytes]]:
    """``blobs`` of each conversation, in one round trip."""
    pipe = redis.pipeline(transaction=False)
    for cid in cids:
        pipe.hgetall(k.ConversationKey(cid).meta)
        pipe.lrange(k.ConversationKey(cid).transcript, 0, -1)
    found: list[Any] = await pipe.execute()
    pairs = zip(found[0::2], found[1::2], strict=True)
    return [transcriptfields.entries(meta) or list(listed) for meta, listed in pairs]


async def as_list(redis: Redis, cid: str, entries: list[bytes]) -> None:
    """The transcript replaced by ``entries`` in a list, as an older version kept it (``n`` as it is)."""
    key = k.ConversationKey(cid)
    stale = [name for name in await redis.hkeys(key.meta) if name.startswith(b"~t")]
    if stale:
        await redis.hdel(key.meta, *stale)
    await redis.delete(key.transcript)
    await redis.rpush(key.transcript, *entries)
