"""A conversation's lock as tests read and age it: the header of its inbox's head entry
(``bot/store/inboxlock.py``). Time is the store's clock, so a lock expires when a test moves
that clock past it; ``expire`` is for tests that run on the real clock."""

from __future__ import annotations

import time
from typing import cast

from redis.asyncio import Redis

from bot.store import inboxlock
from bot.store import keys as k


async def head(redis: Redis, cid: str) -> bytes | None:
    return cast(bytes | None, await redis.lindex(k.ConversationKey(cid).inbox, 0))  # type: ignore[misc]


async def holder(redis: Redis, cid: str) -> tuple[str, int] | None:
    """The lock's token and expiry (ms); None: no lock (an empty inbox, or a head without header)."""
    return inboxlock.holder(await head(redis, cid))


async def marks(redis: Redis, cid: str) -> bytes:
    """The marks after the holder's token (``+``: the transcript was appended outside the turn)."""
    entry = await head(redis, cid) or b""
    if not entry.startswith(bytes([inboxlock.HEAD])):
        return b""
    owner = entry[entry.index(b" ") + 1:entry.index(b"\n")]
    return owner[len(owner.rstrip(b"+")):]


async def events(redis: Redis, cid: str) -> list[bytes]:
    """The queued events, without the headers their pushes wrote."""
    entries = cast(list[bytes], await redis.lrange(k.ConversationKey(cid).inbox, 0, -1))
    return [e[e.index(b"\n") + 1:] if e.startswith(bytes([inboxlock.HEAD])) else e for e in entries]


async def expire(redis: Redis, cid: str) -> bool:
    """As if the holder's lock TTL had run out: its expiry set to the epoch (its token kept: it
    holds until another process takes the conversation over). False: no lock to expire."""
    entry = await head(redis, cid)
    if entry is None or not entry.startswith(bytes([inboxlock.HEAD])):
        return False
    await redis.lset(k.ConversationKey(cid).inbox, 0, b"\xc10" + entry[entry.index(b" "):])  # type: ignore[misc]
    return True


async def take_over(redis: Redis, cid: str, token: str = "another-process") -> None:
    """As if another process had taken the conversation over (for a lock TTL of a day)."""
    entry = await head(redis, cid)
    assert entry is not None, "no inbox to take over"
    event = entry[entry.index(b"\n") + 1:] if entry.startswith(bytes([inboxlock.HEAD])) else entry
    header = b"\xc1%d %s\n" % (int((time.time() + 86400) * 1000), token.encode())
    await redis.lset(k.ConversationKey(cid).inbox, 0, header + event)  # type: ignore[misc]


async def release(redis: Redis, cid: str) -> None:
    """As if the holder had died and its lock were given back: the head's header dropped."""
    entry = await head(redis, cid)
    if entry is not None and entry.startswith(bytes([inboxlock.HEAD])):
        await redis.lset(k.ConversationKey(cid).inbox, 0, entry[entry.index(b"\n") + 1:])  # type: ignore[misc]
