"""Background work of a process with the worker role: timers, recovery, outbound delivery, the
shop's follow-ups left undone (``Shop.sweep``).

Each loop is bounded per iteration, tolerant of Redis hiccups (it logs and tries again), and
stops between iterations when asked, so a graceful shutdown finishes in-flight work.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from crm_bridge.outbox import CrmOutbox

from ..engine import events as ev
from ..errors import CrmTemporary
from ..store.conversations import ConversationStore
from ..store.keys import member_cid
from ..store.outbox import Outbox
from ..store.timers import DueTimer, TimerWheel
from .applyjobs import ApplyJobs
from .leads import LeadService, is_lead_queue
from .metrics import Metrics
from .processjobs import ProcessJobs
from .queueloop import IdentityPending
from .service import ConversationService
from .shop import Shop
from .ticks import wait_tick
from .timerloop import TimerLoop

if TYPE_CHECKING:
    from ..config import Config

log = logging.getLogger("salesbot.worker")
CONCURRENCY = 32


class WorkerServices(Protocol):
    """What the worker's loops use of the process's shared services (``bot.server.services``)."""

    @property
    def config(self) -> Config: ...

    @property
    def store(self) -> ConversationStore: ...

    @property
    def timers(self) -> TimerWheel: ...

    @property
    def outbox(self) -> Outbox: ...

    @property
    def crm_outbox(self) -> CrmOutbox | None: ...

    @property
    def conversations(self) -> ConversationService: ...

    @property
    def leads(self) -> LeadService: ...

    @property
    def shop(self) -> Shop: ...

    @property
    def jobs(self) -> ApplyJobs | None: ...

    @property
    def process_jobs(self) -> ProcessJobs | None: ...

    @property
    def metrics(self) -> Metrics: ...


class Receiver(Protocol):
    """A loop that fetches inbound work itself (a channel's long-polling ``Poller``)."""

    async def run(self, stop: asyncio.Event) -> None: ...


class Worker:
    def __init__(self, services: WorkerServices, *, receivers: Sequence[Receiver] = ()) -> None:
        self.s = services
        self.poll = services.config.timer_poll_interval
        self._receivers = tuple(receivers)
        self._stopping = False
        self._sem = asyncio.Semaphore(CONCURRENCY)
        #: Where this process's loops wake on the clock (``ticks.py``): workers of one host apart.
        self.phase = random.random()
        self.timer_loop = TimerLoop(services.timers, self._deliver_timer, poll=self.poll,
                                    coalesce=services.config.timer_coalesce, phase=self.phase)

    def stop(self) -> None:
        self._stopping = True
        self.timer_loop.stop()

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.gather(self.timer_loop.run(stop),
                             self._loop(stop, self.recover, max(1.0, self.poll * 4), "recovery"),
                             *self.deliveries(stop),
                             self._loop(stop, self.s.shop.sweep, max(1.0, self.poll * 4), "shop_unsent"),
                             *self.crm_retries(stop), *self.apply_jobs(stop), *self.receivers(stop))

    def deliveries(self, stop: asyncio.Event) -> list[Awaitable[None]]:
        """The channel outbox's poll (retries, and replies whose hand-off did not happen), ten
        times a second; none in a process with no channel account: a worker serving only the
        live chat (its replies are in the transcript) would wake for nothing."""
        if not self.s.outbox.sends:
            return []
        return [self._loop(stop, self.s.outbox.run_once, min(self.poll, 0.1), "outbox")]

    def apply_jobs(self, stop: asyncio.Event) -> list[Awaitable[None]]:
        """``apply_to_existing`` jobs nobody runs: stored by a web-only process, or left unfinished
        by a process that died; taken over here (looked for every second: one ``SMEMBERS``)."""
        jobs = self.s.jobs
        out: list[Awaitable[None]] = []
        if jobs is not None:
            out.append(self._loop(stop, jobs.resume, max(1.0, self.poll * 4), "apply_jobs"))
        if self.s.process_jobs is not None:  # POST /api/processes/{id}/contacts batches, the same way
            out.append(self._loop(stop, self.s.process_jobs.resume, max(1.0, self.poll * 4), "process_jobs"))
        return out

    def crm_retries(self, stop: asyncio.Event) -> list[Awaitable[None]]:
        """The CRM outbox: commands that met a temporary CRM failure, retried in order per lead.
        Looked at every 0.1 s while it has work, every second while it has none (a command queued
        by a failure is retried after its backoff, ``crm.retry_base`` or more: 1 s by default),
        never less often than that backoff: ten calls a second through redis-py were a third of an
        idle worker's CPU (issue 14 aim 5)."""
        crm_outbox = self.s.crm_outbox
        if crm_outbox is None:
            return []
        interval = min(self.poll, 0.1)
        idle = max(interval, min(max(1.0, self.poll * 4), crm_outbox.base_delay))
        return [self._loop(stop, crm_outbox.run_once, interval, "crm_outbox", idle=idle)]

    def receivers(self, stop: asyncio.Event) -> list[Awaitable[None]]:
        """The long-polling receivers this worker was given (e.g. Telegram's getUpdates for the
        accounts with ``settings.mode = "polling"``)."""
        return [receiver.run(stop) for receiver in self._receivers]

    async def _loop(self, stop: asyncio.Event, body: Callable[[], Awaitable[object]], interval: float,
                    name: str, idle: float | None = None) -> None:
        """``body`` every ``interval`` seconds; every ``idle`` seconds instead after a round that
        found nothing to do (``body`` returned a false value), when given. On the loop clock's
        grid of that interval (``ticks.py``): the loops of one interval wake together."""
        while not stop.is_set() and not self._stopping:
            wait = interval
            try:
                if not await body() and idle is not None:
                    wait = idle
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception(f"worker.{name}_failed")
            await wait_tick(stop, wait, self.phase)

    def _queue(self, cid: str) -> ConversationService | LeadService:
        """Who processes a store queue: lead queues (``lead:<id>``) the lead loop, the rest conversations."""
        return self.s.leads if is_lead_queue(cid) else self.s.conversations

    async def _deliver_timer(self, timer: DueTimer) -> None:
        """A due timer as a ``TimerFired`` event, deduplicated by its id (it may be offered twice);
        a conversation's wake as a ``TimerFired`` of the wake, not deduplicated: its turn fires the
        timers then due, each once (a wake offered twice finds them gone; they count there)."""
        extra = {"due": timer.due} if timer.due is not None else None
        if timer.wake:
            done = await self.s.conversations.deliver(timer.cid, ev.TimerFired(timer.timer_id), entry_extra=extra)
            if done.wake_at is not None:  # early: no timer due yet (the push said when; never later)
                await self.s.timers.arm(timer.timer_id, done.wake_at)
            return
        event, dedupe_id = ev.TimerFired(timer.timer_id), f"timer:{timer.timer_id}"
        queue = self._queue(timer.cid)
        if isinstance(queue, LeadService):
            fired = await queue.deliver_timer(timer.cid, event, dedupe_id=dedupe_id, entry_extra=extra)
        else:
            fired = not (await queue.deliver(timer.cid, event, dedupe_id=dedupe_id, entry_extra=extra)).duplicate
        if fired:
            self.s.metrics.timer_fired()

    async def fire_timers(self) -> int:
        """One round: claim and deliver every due timer (and dead workers' claims); how many were claimed."""
        return await self.timer_loop.fire_due()

    async def recover(self) -> int:
        """Process conversations whose events wait with no live processor (a crashed process).

        Every due entry is handled, forgotten or moved later, so the next round reaches the next
        ones whatever happens to these: a conversation still locked by a live processor waits until
        its lock expires, a failing one waits its backoff (then is parked), an idle one is forgotten."""
        store = self.s.store
        now = store.clock()
        due = await store.pending_due_in(range(store.shards), now)
        taken = await asyncio.gather(*(self._recover_one(member, score, now) for member, score in due))
        return sum(taken)

    async def _recover_one(self, member: str, score: float, now: float) -> bool:
        """One due entry (a conversation id, or its ``keys.retry_member``: either stands for it)."""
        store = self.s.store
        cid = member_cid(member)
        async with self._sem:
            try:
                batch = await store.acquire(cid)
                if batch is None:
                    await store.forget_pending(member, score)
                    return False
                if batch is False:  # a live processor has it: look again once its lock expires
                    await store.postpone_pending(member, now)
                    return False
                log.warning("conversation.recovered", extra={"cid": cid})
                await self._queue(cid).process(batch)
                return True
            except (IdentityPending, CrmTemporary):  # the CRM is away: its lock expires, the next rounds retry
                return False
            except Exception:  # an outage: this one is tried again next round, the others go on
                log.exception("conversation.recovery_failed", extra={"cid": cid})
                return False
