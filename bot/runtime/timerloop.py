"""The worker's timer loop: claims two polls ahead, fires each timer at its due time, beats for liveness.

Every ``poll`` seconds (on the loop clock's grid, ``ticks.py``: a busy round does not push the
next one back, and the worker's other loops wake with it) one round trip claims the timers due
by the round *after next*; each is fired at its due time by a timer of the event loop, so
lateness is the event loop's, not the poll's. (Claiming only up to the next round left the
timers due between its planned and its actual start late by its delay: a busy event loop's
pass, a starved CPU.)
Timers due within the same slot start together at its end, so their pushes and saves leave in
shared writes and their replies come back in shared reads. A slot is as wide as the due rate
asks: 10 ms (``SLOT``) at 100 timers a second and fewer, growing with the rate up to
``coalesce`` (``timer_coalesce``, 100 ms) at 1,000 a second. Measured with ``bench/timers.py``
(1,000 due a second), a fire cost the worker 328 µs of CPU in 10 ms slots and 237 µs in 100 ms
ones: a slot's share of the event loop's passes, of the writes and reads, of the scheduling,
and a worker woken ten times less often. A light load keeps its 10 ms lateness; a heavy one
trades up to ``coalesce`` of it, well within the poll's. Deliveries run ``concurrency`` at a
time, acks are gathered into one ``ZREM`` per shard per event-loop pass, and no more than
``backlog`` claims are held at once (a worker behind leaves the rest to other workers). A
heartbeat every third of ``dead_after`` keeps this worker's claims its own and takes over those
of dead workers (see ``bot/store/timers.py`` for why that is exactly once).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from ..store.timers import DueTimer, TimerWheel
from .limiter import Limiter
from .ticks import wait_tick

log = logging.getLogger("salesbot.worker")

Deliver = Callable[[DueTimer], Awaitable[None]]
#: The narrowest slot, in seconds: timers due within one start together (one write for their pushes).
SLOT = 0.01
#: A slot is this many seconds wide per timer due a second (10 ms at 100 a second; at most ``coalesce``).
WIDTH_PER_RATE = 1e-4


class TimerLoop:
    def __init__(self, wheel: TimerWheel, deliver: Deliver, *, poll: float, concurrency: int = 128,
                 batch: int = 100, backlog: int = 4000, coalesce: float = 0.1, phase: float = 0.0) -> None:
        self.wheel = wheel
        self.deliver = deliver
        self.poll = poll
        #: The widest slot (seconds); at most ``SLOT`` keeps every slot at its narrowest.
        self.coalesce = coalesce
        #: This process's shift of the loop clock's grid its rounds wake on (``ticks.py``).
        self.phase = phase
        self.batch = batch
        self.backlog = backlog
        self._sem = Limiter(concurrency)  # (not asyncio.Semaphore: see limiter.py)
        #: Timer ids claimed by this worker and not acknowledged (waiting for their due time or firing).
        self._held: set[str] = set()
        #: Slot (its end on the event loop's clock, exact: two slots of different widths may end
        #: within a millisecond, and neither may start the other's timers early) -> the timers that
        #: start then, and its handle.
        self._slots: dict[float, tuple[list[DueTimer], asyncio.TimerHandle]] = {}
        #: Timers waiting in ``_slots``: all due within the claims' look-ahead (two polls).
        self._waiting = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._acks: list[DueTimer] = []
        self._ack_task: asyncio.Task[None] | None = None
        self._stopping = False

    def stop(self) -> None:
        """Stop claiming (the loops end at their next round; ``stop`` the event to end them now)."""
        self._stopping = True

    async def run(self, stop: asyncio.Event) -> None:
        try:
            await asyncio.gather(self._claims(stop), self._heartbeats(stop))
        finally:
            await self._drain()

    async def fire_due(self) -> int:
        """One round without looking ahead: claim what is due (and what dead workers held),
        deliver it, acknowledge it; how many were claimed. (Tests drive the worker with it, and
        the time with the wheel's clock.)"""
        due = await self.wheel.take_over() + await self.wheel.claim(self.wheel.clock(), self.batch)
        due = [t for t in due if t.timer_id not in self._held]
        if not due:
            return 0
        results = await asyncio.gather(*(self._deliver(t) for t in due), return_exceptions=True)
        await self.wheel.ack([t for t, r in zip(due, results, strict=True) if r is True])
        return len(due)

    async def _deliver(self, timer: DueTimer) -> bool:
        async with self._sem:
            try:
                await self.deliver(timer)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # its claim comes back ``claim_ttl`` after it fell due
                log.error("timer.delivery_failed", extra={"timer": timer.timer_id, "error": repr(exc)})
                return False
            return True

    async def _claims(self, stop: asyncio.Event) -> None:
        while not stop.is_set() and not self._stopping:
            try:
                room = self.backlog - len(self._held)
                if room > 0:
                    now = time.time()
                    self._schedule(await self.wheel.claim(now, min(self.batch, room), horizon=now + 2 * self.poll))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("worker.timers_failed")
            await wait_tick(stop, self.poll, self.phase)

    async def _heartbeats(self, stop: asyncio.Event) -> None:
        every = self.wheel.dead_after / 3
        while not stop.is_set() and not self._stopping:
            try:
                await self.wheel.heartbeat()
                taken = await self.wheel.take_over()
                if taken:
                    log.warning("timer.claims_taken_over", extra={"count": len(taken)})
                    self._schedule(taken)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("worker.timer_heartbeat_failed")
            await wait_tick(stop, every, self.phase)

    def _schedule(self, timers: list[DueTimer]) -> None:
        loop = asyncio.get_running_loop()
        now = time.time()
        offset = loop.time() - now  # wall clock -> the loop's clock
        width = self.width(len(timers) + self._waiting)
        for t in timers:
            if t.timer_id in self._held:
                continue  # already firing here (offered again while its delivery runs)
            self._held.add(t.timer_id)
            if t.due is None or t.due <= now:
                self._start(t)
                continue
            end = (int((t.due + offset) / width) + 1) * width
            if end in self._slots:
                self._slots[end][0].append(t)
            else:
                self._slots[end] = ([t], loop.call_at(end, self._start_slot, end))
            self._waiting += 1

    def width(self, ahead: int) -> float:
        """The slot's width with ``ahead`` timers due within the look-ahead (two polls): the due
        rate times ``WIDTH_PER_RATE``, between ``SLOT`` and ``coalesce``."""
        rate = ahead / (2 * self.poll)
        return max(SLOT, min(self.coalesce, rate * WIDTH_PER_RATE))

    def _start_slot(self, slot: float) -> None:
        timers = self._slots.pop(slot)[0]
        self._waiting -= len(timers)
        for timer in timers:
            self._start(timer)

    def _start(self, timer: DueTimer) -> None:
        task = asyncio.get_running_loop().create_task(self._fire(timer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _fire(self, timer: DueTimer) -> None:
        try:
            if await self._deliver(timer):
                self._acks.append(timer)
                if self._ack_task is None:
                    self._ack_task = asyncio.get_running_loop().create_task(self._flush_acks())
        finally:
            self._held.discard(timer.timer_id)

    async def _flush_acks(self) -> None:
        """Acknowledge what fired, in one pipeline for every delivery finished meanwhile."""
        try:
            while self._acks:
                await asyncio.sleep(0)  # let the deliveries finishing in this pass join
                acks, self._acks = self._acks, []
                try:
                    await self.wheel.ack(acks)
                except asyncio.CancelledError:
                    raise
                except Exception:  # not acknowledged: offered again later, and the dedupe drops it
                    log.exception("worker.timer_ack_failed")
        finally:
            self._ack_task = None

    async def _drain(self) -> None:
        """On stop: timers not started yet stay claimed (taken over once this worker is silent);
        deliveries under way finish and are acknowledged."""
        for _, handle in self._slots.values():
            handle.cancel()
        self._slots.clear()
        self._waiting = 0
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self._ack_task is not None:
            await asyncio.gather(self._ack_task, return_exceptions=True)
