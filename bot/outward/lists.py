"""Contact lists (SALESmanago's): which lists a contact is subscribed to, kept per contact.

A list is a name; a contact is ``subscribed`` or ``unsubscribed`` to it (a list the contact was
never put on is absent). The flow action ``lists`` writes them; the e-mail unsubscribe link
writes ``email``: ``unsubscribed`` (``EMAIL_LIST``), and a process sends no ``send_email`` to a
contact unsubscribed from ``email`` (``bot.runtime.processes``). One hash per contact,
``sb:lists:{contact:<id>}``: list name -> ``<state>:<epoch seconds>``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

from redis.asyncio import Redis

from ..engine.process import EMAIL_LIST
from ..store import replies

__all__ = ["EMAIL_LIST", "SUBSCRIBED", "UNSUBSCRIBED", "ContactLists", "lists_key"]

SUBSCRIBED, UNSUBSCRIBED = "subscribed", "unsubscribed"


def lists_key(contact_id: str) -> str:
    return f"sb:lists:{{contact:{contact_id}}}"


class ContactLists:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def change(self, contact_id: str, *, subscribe: Iterable[str] = (), unsubscribe: Iterable[str] = (),
                     now: float | None = None) -> dict[str, str]:
        """Subscribe and unsubscribe at once; returns every list of the contact with its state."""
        at = f"{time.time() if now is None else now:.0f}"
        key = lists_key(contact_id)
        commands = [*(("HSET", key, name, f"{SUBSCRIBED}:{at}") for name in subscribe),
                    *(("HSET", key, name, f"{UNSUBSCRIBED}:{at}") for name in unsubscribe)]
        async with self.redis.pipeline(transaction=False) as pipe:
            for command in commands:
                pipe.execute_command(*command)
            pipe.hgetall(key)
            found = (await pipe.execute())[-1]
        return _states(found)

    async def of(self, contact_id: str) -> dict[str, str]:
        """list name -> ``subscribed`` | ``unsubscribed``."""
        return _states(await self.redis.hgetall(lists_key(contact_id)))

    async def unsubscribed(self, contact_id: str, name: str) -> bool:
        found = await self.redis.hget(lists_key(contact_id), name)
        return found is not None and replies.text(found).startswith(UNSUBSCRIBED)


def _states(found: Mapping[bytes | str, bytes | str]) -> dict[str, str]:
    return {k: v.partition(":")[0] for k, v in replies.text_map(found).items()}
