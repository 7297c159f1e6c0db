"""Bringing an older version's CRM indexes up to date (``indexes.upgrade``) off the start-up
path: the walk runs in the background once a process has started, one process at a time (a
``SET NX`` guard with a TTL), and a request that filters by what the walk adds waits until the
layout is current, so no listing is short meanwhile (docs/crm.md, "Upgrading")."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid

from redis.asyncio import Redis

from bot.store.scripts import DROP_IF_HELD

from .indexes import LAYOUT, LAYOUT_KEY, T, upgrade

log = logging.getLogger("salesbot.crm.upgrading")

#: Held by the process that walks; others leave the walk to it. Its life bounds how long a
#: process that died mid-walk keeps the others from walking (the walk is idempotent: a slow walk
#: outliving it is only done twice).
GUARD_KEY = f"{T}:indexing"
GUARD_MS = 600_000


class IndexUpgrade:
    """A process's index upgrade: ``start`` it after start-up (the services own it and ``close``
    it); ``current`` before reading an index an older version did not keep."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._current = False  # the layout was seen current: no more reads
        self._task: asyncio.Task[int] | None = None

    def start(self) -> asyncio.Task[int]:
        """The walk in the background, if no other process is walking (its errors are logged;
        a filtered request walks then)."""
        if self._task is None:
            self._task = asyncio.create_task(self._background(), name="crm.indexes_upgrade")
        return self._task

    async def current(self) -> None:
        """Return once the layout is current: at once when it is (one ``GET`` until it is seen),
        else after this process's walk; when none runs here (another process holds the guard,
        or ours failed) this process walks too: the walk is idempotent, a short list is not."""
        while not self._current:
            if int(await self.redis.get(LAYOUT_KEY) or 0) >= LAYOUT:
                self._current = True
                return
            if self._task is None or self._task.done():
                self._task = asyncio.create_task(self._walk(exclusive=False), name="crm.indexes_upgrade")
            await asyncio.shield(self._task)  # a cancelled request leaves the walk to the others

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _background(self) -> int:
        try:
            return await self._walk(exclusive=True)
        except Exception:
            log.exception("crm.indexes_upgrade_failed")
            return 0

    async def _walk(self, *, exclusive: bool) -> int:
        """Contacts added to a ``responsible`` set (0 without walking: current, or, ``exclusive``,
        another process holds the guard)."""
        token = uuid.uuid4().hex
        if exclusive and not await self.redis.set(GUARD_KEY, token, nx=True, px=GUARD_MS):
            return 0
        try:
            added = await upgrade(self.redis)  # one GET when another process finished meanwhile
        finally:
            if exclusive:
                await self.redis.eval(DROP_IF_HELD, 1, GUARD_KEY, token)
        self._current = True
        if added:
            log.info("crm.indexes_upgraded", extra={"contacts": added})
        return added
