"""The two parts every live stream of a process is made of.

``Subscription``: one Redis pub/sub subscription of a channel per process, held only while
something here listens (and ``linger`` seconds after), made again after a dropped connection,
with a ``resync`` call then (what was published meanwhile is lost). ``Fanout``: bounded queues,
one per open stream, each given every item; a queue far behind is emptied and told to reload
instead of holding memory.

``LiveHub`` (conversation changes) is a subscription; the dashboard's list feed is a fan-out of
the hub; the orders feed (``bot/server/orders_live.py``) is both.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Generic, TypeVar

from redis.asyncio import Redis

T = TypeVar("T")


class Subscription:
    """``channel``'s messages (text) to ``on_message`` while ``listening()``; ``acquire`` after a
    listener is registered returns once Redis confirmed the subscription, so a caller that reads
    its state afterwards misses nothing."""

    def __init__(self, redis: Callable[[], Redis], channel: str, *, on_message: Callable[[str], None],
                 on_resync: Callable[[], None], listening: Callable[[], bool], linger: float,
                 name: str, log: logging.Logger) -> None:
        self._redis = redis
        self.channel = channel
        self._on_message = on_message
        self._on_resync = on_resync
        self._listening = listening
        self.linger = linger
        self._name = name
        self._log = log
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._idle: asyncio.TimerHandle | None = None
        self._ending: set[asyncio.Task[None]] = set()

    async def acquire(self) -> None:
        """Subscribed (now or already); raises after 10 seconds without Redis's confirmation."""
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        if self._task is None or self._task.done():
            self._ready = asyncio.Event()
            self._task = asyncio.create_task(self._run(self._ready), name=self._name)
        await asyncio.wait_for(self._ready.wait(), timeout=10)

    def release(self) -> None:
        """A listener left: unsubscribe ``linger`` seconds after the last one (at once for 0)."""
        if self._listening() or self._task is None or self._idle is not None:
            return
        if self.linger <= 0:
            self._drop()
        else:
            self._idle = asyncio.get_running_loop().call_later(self.linger, self._unsubscribe)

    async def stop(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        self._drop()
        for task in list(self._ending):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._ending.clear()

    def _unsubscribe(self) -> None:
        self._idle = None
        if not self._listening():
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
            pubsub = self._redis().pubsub()
            try:
                await pubsub.subscribe(self.channel)
                async for msg in pubsub.listen():
                    kind = msg.get("type")
                    if kind == "subscribe":  # confirmed by Redis (also after a reconnect)
                        if ready.is_set():
                            self._on_resync()  # what was published meanwhile is lost: re-read
                        ready.set()
                    elif kind == "message":
                        data = msg["data"]
                        self._on_message(data.decode(errors="replace") if isinstance(data, bytes) else str(data))
            except asyncio.CancelledError:
                raise
            except Exception:  # a dropped connection: subscribe again (listeners re-read anyway)
                self._log.warning(f"{self._name}.reconnect", exc_info=True)
                await asyncio.sleep(0.5)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()


class Fanout(Generic[T]):
    """The queues of this process's open streams: ``put`` gives each every item; a queue
    ``backlog`` items behind is emptied and given ``resync`` (its reader reloads); ``close``
    gives each ``closing`` (shutdown). ``opened`` and ``emptied`` start and end the source."""

    def __init__(self, *, backlog: int, resync: T, closing: T) -> None:
        self.backlog = backlog
        self.resync_item = resync
        self.closing_item = closing
        self.subscribers: set[asyncio.Queue[T]] = set()

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[asyncio.Queue[T]]:
        q: asyncio.Queue[T] = asyncio.Queue(maxsize=self.backlog)
        self.subscribers.add(q)
        try:
            await self.opened()
            yield q
        finally:
            self.subscribers.discard(q)
            if not self.subscribers:
                self.emptied()

    async def opened(self) -> None:
        """A queue was added: the source runs once this returns."""

    def emptied(self) -> None:
        """The last queue left."""

    def put(self, item: T) -> None:
        for q in list(self.subscribers):
            self._put(q, item)

    def resync(self) -> None:
        """Every stream reloads (items may have been missed)."""
        self.put(self.resync_item)

    def close(self) -> None:
        for q in list(self.subscribers):
            if q.full():  # a reader far behind still learns that it ends
                self._drain(q)
            q.put_nowait(self.closing_item)

    def _put(self, q: asyncio.Queue[T], item: T) -> None:
        try:
            q.put_nowait(item)
        except asyncio.QueueFull:  # a reader far behind: it reloads instead
            self._drain(q)
            q.put_nowait(self.resync_item)

    @staticmethod
    def _drain(q: asyncio.Queue[T]) -> None:
        while not q.empty():
            q.get_nowait()
