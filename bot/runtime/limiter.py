"""A first-come-first-served limit on work in flight, whose release hands its slot on in O(1).

Why not ``asyncio.Semaphore``: the worker starts every claimed timer's delivery at once and lets
128 run (``timerloop.py``); a round of more (a bench's 450, a burst of 1,000 due a second at a
250 ms poll) leaves hundreds waiting. Python 3.11's ``Semaphore.release`` then walks its waiters
from the head past every one already woken but not yet run, and each waiter removes its own future
from the middle of the deque: work per release that grows with the queue (issue 14 aim 5: 56
Python lines of a timer's fire in ``bench/timers_inprocess.py``). Here a release gives its slot
to the oldest waiter directly (one ``popleft``, one ``set_result``); a waiter cancelled before
its turn is skipped when its turn comes, one cancelled after it passes the slot on.
"""

from __future__ import annotations

import asyncio
import collections
from types import TracebackType


class Limiter:
    """``async with limiter:`` runs at most ``limit`` bodies at once, the others in arrival order."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("a limit of at least 1")
        self._free = limit
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def waiting(self) -> int:
        """Bodies waiting for a slot (cancelled ones not yet skipped included)."""
        return len(self._waiters)

    async def __aenter__(self) -> None:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # the slot was handed over: pass it on
                self._release()
            raise  # (cancelled while queued: ``_release`` skips its future)

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self._release()

    def _release(self) -> None:
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():  # (a cancelled one is done: skipped)
                waiter.set_result(None)  # the slot goes to it, never back to ``_free``
                return
        self._free += 1
