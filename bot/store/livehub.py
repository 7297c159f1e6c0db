"""Fan-out of "conversation X has new transcript entries" to this process's waiters.

One Redis pub/sub subscription per process (channel ``sb:events``, published by the store's
save script from any process), held while WebSockets, long polls or dashboard streams wait here.
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
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._idle: asyncio.TimerHandle | None = None
        self._ending: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Nothing to do until someone watches (kept for the services' lifecycle)."""

    async def stop(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        self._drop()
        for task in list(self._ending):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._ending.clear()

    async def _subscribed(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        if self._task is None:
            self._ready = asyncio.Event()
            self._task = asyncio.create_task(self._run(self._ready), name="livehub")
        await asyncio.wait_for(self._ready.wait(), timeout=10)

    def _released(self) -> None:
        if self._waiters or self._all or self._task is None or self._idle is not None:
            return
        self._idle = asyncio.get_running_loop().call_later(self.linger, self._unsubscribe)

    def _unsubscribe(self) -> None:
        self._idle = None
        if not (self._waiters or self._all):
            self._drop()

    def _drop(self) -> None:
        """End the subscription task (``stop`` waits for the ones still ending)."""
        if self._task is not None:
            self._task.cancel()
            self._ending.add(self._task)
            self._task.add_done_callback(self._ending.discard)
            self._task = None

    async def _run(self, ready: asyncio.Event) -> None:
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(EVENTS_CHANNEL)
                async for msg in pubsub.listen():
                    kind = msg.get("type")
                    if kind == "subscribe":  # confirmed by Redis (also after a reconnect)
                        if ready.is_set():
                            self.resync()  # what was published meanwhile is lost: re-read
                        ready.set()
                        continue
                    if kind != "message":
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
            await self._subscribed()
            yield q
        finally:
            self._waiters[cid].discard(q)
            if not self._waiters[cid]:
                del self._waiters[cid]
            self._released()

    @contextlib.asynccontextmanager
    async def watch_all(self) -> AsyncIterator[asyncio.Queue[tuple[str, int]]]:
        q: asyncio.Queue[tuple[str, int]] = asyncio.Queue()
        self._all.add(q)
        try:
            await self._subscribed()
            yield q
        finally:
            self._all.discard(q)
            self._released()
