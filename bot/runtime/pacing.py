"""Background work that gives way to conversations (``apply_to_existing`` jobs).

A job over 100k leads shares the event loop (and the CPU) with the conversations of its
process. asyncio has no priorities, so the job asks before each step: ``Pacer.step`` waits while
a conversation batch is in flight in this process (``Activity``, counted by the queue loop),
lets the callbacks that are ready run first, and keeps the job under a rate ceiling
(``[automations] apply_rate``). A busy process still lets the job through now and then
(``max_wait``), so a constant chat load slows a job down but never stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable


class Activity:
    """Work in flight (the conversation batches of this process): who gives way waits for idle."""

    def __init__(self) -> None:
        self._n = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def busy(self) -> bool:
        return self._n > 0

    def track(self) -> Activity:
        """``with activity.track():`` around a batch (the object is its own context manager: a
        generator-based one cost a few µs per message)."""
        return self

    def __enter__(self) -> None:
        self._n += 1
        if self._n == 1:
            self._idle.clear()

    def __exit__(self, *exc: object) -> None:
        self._n -= 1
        if self._n == 0:
            self._idle.set()

    async def idle(self) -> None:
        await self._idle.wait()


class Pacer:
    """Before each step of a background job: give way to ``activity``, then keep under ``rate``
    steps/s (0: no ceiling). ``paused`` counts the steps that waited for the activity."""

    def __init__(self, activity: Activity | None = None, *, rate: float = 0.0, max_wait: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.activity = activity
        self.rate = rate
        self.max_wait = max_wait
        self.clock = clock
        self.paused = 0
        self._next = 0.0

    async def step(self) -> None:
        if self.rate > 0:
            now = self.clock()
            due = max(self._next, now)
            self._next = due + 1 / self.rate
            if due > now:
                await asyncio.sleep(due - now)
        await asyncio.sleep(0)  # what became ready meanwhile (a request just read) goes first
        activity = self.activity
        if activity is None or not activity.busy:
            return
        self.paused += 1
        waited = self.clock()
        while activity.busy:
            left = self.max_wait - (self.clock() - waited)
            if left <= 0:
                return  # a process that is never idle still moves the job on
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(activity.idle(), timeout=left)
            await asyncio.sleep(0)  # a conversation that became ready just now starts before the job
