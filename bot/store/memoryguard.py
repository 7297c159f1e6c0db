"""Refuse new conversations before Redis runs out of memory.

Redis with ``maxmemory`` and ``noeviction`` refuses writes once it is full ("OOM command not
allowed"); then every conversation fails at once, the ones under way included. The guard reads
``INFO memory`` every few seconds and, above a high-water mark of ``maxmemory``, makes
``ConversationService.deliver`` refuse events for conversations that do not exist yet
(``StoreFull``, answered 503 with ``Retry-After``), so the memory left goes to the conversations
already under way. Below the mark it costs nothing: ``high`` is a plain attribute read.
Without ``maxmemory`` (0) it never trips.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from ..errors import StoreFull
from .clusterclient import is_cluster
from .keys import ConversationKey

log = logging.getLogger("salesbot.store")


class MemoryGuard:
    def __init__(self, redis: Redis, *, high_water: float = 0.9, interval: float = 2.0,
                 stop_grace: float = 5.0) -> None:
        self.redis = redis
        self.stop_grace = stop_grace
        self.high_water = high_water
        self.interval = interval
        #: True while used memory is above the mark: new conversations are refused.
        self.high = False
        self.used = 0
        self.maxmemory = 0
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._wake = asyncio.Event()

    async def check(self) -> bool:
        """Read ``INFO memory`` once; whether memory is above the mark."""
        if is_cluster(self.redis):  # every primary's: the fullest one decides
            found: dict[str, dict[str, Any]] = await self.redis.info(
                "memory", target_nodes=RedisCluster.PRIMARIES)
            info = max(found.values(), key=lambda i: int(i.get("used_memory", 0)) / max(int(i.get("maxmemory", 0)), 1)
                       if int(i.get("maxmemory", 0)) else 0.0)
        else:
            info = await self.redis.info("memory")
        self.used = int(info.get("used_memory", 0))
        self.maxmemory = int(info.get("maxmemory", 0))
        high = self.maxmemory > 0 and self.used >= self.high_water * self.maxmemory
        if high != self.high:
            extra = {"used_memory": self.used, "maxmemory": self.maxmemory}
            if high:
                log.warning("store.memory_high", extra=extra)
            else:
                log.info("store.memory_ok", extra=extra)
        self.high = high
        return high

    async def admit(self, cid: str) -> None:
        """Raise ``StoreFull`` for a conversation that does not exist yet (only while high)."""
        key = ConversationKey(cid)
        if self.high and not await self.redis.exists(key.meta, key.state):
            raise StoreFull(retry_after=max(1, round(self.interval * 2)))

    def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self._wake = asyncio.Event()
            self._task = asyncio.create_task(self._run(), name="memory-guard")

    async def stop(self) -> None:
        """End the loop: let a reading under way finish (up to ``stop_grace``), then cancel it.

        Not a plain cancel: a cancel that lands inside ``INFO`` can come out of redis-py as its
        ``TimeoutError`` (a ``RedisError``, suppressed by the loop), leaving the loop running and
        ``stop`` waiting for ever (seen as ``open_services`` hanging on exit under load) and the
        connection half-read. ``_stopping`` ends the loop whatever became of a cancel."""
        task = self._task
        if task is None:
            return
        self._stopping = True
        self._wake.set()
        try:
            with contextlib.suppress(asyncio.CancelledError):  # (cancelled by someone else: ended too)
                await asyncio.wait_for(asyncio.shield(task), self.stop_grace)
        except TimeoutError:  # a reading that hangs (Redis unreachable): cut it short
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._task = None

    async def _run(self) -> None:
        while not self._stopping:
            with contextlib.suppress(RedisError, OSError):  # Redis down: others report it
                await self.check()
            if self._stopping:
                return
            with contextlib.suppress(TimeoutError):  # the interval, cut short by ``stop``
                await asyncio.wait_for(self._wake.wait(), self.interval)
