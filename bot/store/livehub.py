"""Fan-out of "conversation X has new transcript entries" to this process's waiters.

One Redis pub/sub subscription per process (channel ``sb:events``, published by the store's
save script from any process; ``fanout.Subscription``), held while WebSockets, long polls or
dashboard streams wait here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator

from redis.asyncio import Redis

from .fanout import Subscription
from .keys import EVENTS_CHANNEL

log = logging.getLogger("salesbot.livehub")


class LiveHub:
    """Subscribed only while this process has watchers (and ``linger`` seconds after the last).

    A process that serves no widget, long poll or dashboard stream then spends nothing on other
    conversations' notifications; a watcher is registered *before* the subscription is
    confirmed, and callers read the transcript after ``watch`` returns, so nothing is missed.
    """

    def __init__(self, redis: Redis, *, linger: float = 30.0) -> None:
        self.redis = redis
        self.linger = linger
        self._waiters: dict[str, set[asyncio.Queue[int]]] = defaultdict(set)
        self._all: set[asyncio.Queue[tuple[str, int]]] = set()
        self._channel = Subscription(lambda: self.redis, EVENTS_CHANNEL, on_message=self._message,
                                     on_resync=self.resync, listening=lambda: bool(self._waiters or self._all),
                                     linger=linger, name="livehub", log=log)

    async def start(self) -> None:
        """Nothing to do until someone watches (kept for the services' lifecycle)."""

    async def stop(self) -> None:
        await self._channel.stop()

    def _message(self, data: str) -> None:
        cid, _, last = data.rpartition(" ")
        self.notify(cid, int(last) if last.isdigit() else 0)

    def resync(self) -> None:
        """Notifications may have been missed: every waiter re-reads (a stream gets ``("", 0)``)."""
        for queues in list(self._waiters.values()):
            for q in list(queues):
                q.put_nowait(0)
        for feed in list(self._all):
            feed.put_nowait(("", 0))

    def wake_all(self) -> None:
        """Wake every waiter (shutdown): long polls answer with what they have."""
        for queues in list(self._waiters.values()):
            for q in list(queues):
                q.put_nowait(-1)

    def notify(self, cid: str, last: int) -> None:
        for q in list(self._waiters.get(cid, ())):
            q.put_nowait(last)
        for feed in list(self._all):
            feed.put_nowait((cid, last))

    @contextlib.asynccontextmanager
    async def watch(self, cid: str) -> AsyncIterator[asyncio.Queue[int]]:
        q: asyncio.Queue[int] = asyncio.Queue()
        self._waiters[cid].add(q)
        try:
            await self._channel.acquire()
            yield q
        finally:
            self._waiters[cid].discard(q)
            if not self._waiters[cid]:
                del self._waiters[cid]
            self._channel.release()

    @contextlib.asynccontextmanager
    async def watch_all(self) -> AsyncIterator[asyncio.Queue[tuple[str, int]]]:
        q: asyncio.Queue[tuple[str, int]] = asyncio.Queue()
        self._all.add(q)
        try:
            await self._channel.acquire()
            yield q
        finally:
            self._all.discard(q)
            self._channel.release()
