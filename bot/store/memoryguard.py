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
    def __init__(self, redis: Redis, *, high_water: float = 0.9, interval: float = 2.0) -> None:
        self.redis = redis
        self.high_water = high_water
        self.interval = interval
        #: True while used memory is above the mark: new conversations are refused.
        self.high = False
        self.used = 0
        self.maxmemory = 0
        self._task: asyncio.Task[None] | None = None

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
            self._task = asyncio.create_task(self._run(), name="memory-guard")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(RedisError, OSError):  # Redis down: others report it
                await self.check()
            await asyncio.sleep(self.interval)
