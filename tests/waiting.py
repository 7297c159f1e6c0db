"""Bounded waiting for tests: poll a condition, or drive the worker until it holds.

One place for the loop so every test waits the same way: a deadline, a short polling
interval (never a sleep standing in for synchronisation), and a failure that names the wait.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: importing the app here would load it for every test helper
    from bot.runtime.worker import Worker
    from bot.server.services import Services


#: How long a wait lasts before it fails, unless the test says otherwise: a bound against a hang,
#: not a latency requirement, so generous for a loaded 2-core CI machine (it costs nothing when
#: the condition holds, which is when the test passes).
WAIT = 30.0


async def wait_for(check: Callable[[], Any], timeout: float = WAIT, interval: float = 0.02, *,
                   what: str = "", between: Callable[[], Awaitable[Any]] | None = None) -> Any:
    """Until ``check()`` (sync or async) is truthy; fails after ``timeout``.

    ``between`` is run between checks (e.g. one worker round); the interval is slept only when
    it did nothing."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or check}")
        if between is None or not await between():
            await asyncio.sleep(interval)  # the polling interval, bounded by the deadline


class WorkerDriver:
    """For harnesses that run the app's worker loops by hand (needs ``worker`` and ``services``)."""

    worker: Worker
    services: Services

    async def step(self) -> int:
        """One round of the worker: due timers, then one outbox round."""
        fired = await self.worker.fire_timers()
        return int(fired) + int(await self.services.outbox.run_once())

    async def until(self, predicate: Callable[[], Any], timeout: float = WAIT, what: str = "") -> Any:
        """Drive the worker until ``predicate()`` (sync or async) holds; bounded by ``timeout``."""
        return await wait_for(predicate, timeout, what=what, between=self.step)

    async def drain(self, timeout: float = WAIT) -> None:
        """Run worker rounds until every account's outbox is empty."""
        async def empty() -> bool:
            await self.step()
            return not any([await self.services.outbox.depth(a) for a in self.services.outbox.accounts])
        await self.until(empty, timeout, "the outbox to drain")
