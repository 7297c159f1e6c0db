"""Fan-out of "conversation X has new transcript entries" to this process's waiters.

One Redis pub/sub subscription per process (channel ``sb:events``, published by the store's
save script from any process); WebSockets, long polls and dashboard streams wait here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator

from redis.asyncio import Redis

from .keys import EVENTS_CHANNEL

log = logging.getLogger("salesbot.livehub")


class LiveHub:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._waiters: dict[str, set[asyncio.Queue[int]]] = defaultdict(set)
        self._all: set[asyncio.Queue[tuple[str, int]]] = set()
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="livehub")
        await asyncio.wait_for(self._ready.wait(), timeout=10)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(EVENTS_CHANNEL)
                self._ready.set()
                async for msg in pubsub.listen():
                    if msg.get("type") != "message":
                        continue
                    data = msg["data"].decode() if isinstance(msg["data"], bytes) else str(msg["data"])
                    cid, _, last = data.rpartition(" ")
                    self.notify(cid, int(last) if last.isdigit() else 0)
            except asyncio.CancelledError:
                raise
            except Exception:  # a dropped connection: resubscribe (waiters re-read the log anyway)
                log.warning("livehub.reconnect", exc_info=True)
                await asyncio.sleep(0.5)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    def wake_all(self) -> None:
        """Wake every waiter (shutdown): long polls answer with what they have."""
        for queues in list(self._waiters.values()):
            for q in list(queues):
                q.put_nowait(-1)

    def notify(self, cid: str, last: int) -> None:
        for q in list(self._waiters.get(cid, ())):
            q.put_nowait(last)
        for q in list(self._all):
            q.put_nowait((cid, last))

    @contextlib.asynccontextmanager
    async def watch(self, cid: str) -> AsyncIterator[asyncio.Queue[int]]:
        q: asyncio.Queue[int] = asyncio.Queue()
        self._waiters[cid].add(q)
        try:
            yield q
        finally:
            self._waiters[cid].discard(q)
            if not self._waiters[cid]:
                del self._waiters[cid]

    @contextlib.asynccontextmanager
    async def watch_all(self) -> AsyncIterator[asyncio.Queue[tuple[str, int]]]:
        q: asyncio.Queue[tuple[str, int]] = asyncio.Queue()
        self._all.add(q)
        try:
            yield q
        finally:
            self._all.discard(q)
