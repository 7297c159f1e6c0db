"""The loop every store queue runs under its lock: batches until the inbox is empty, the lock
renewed while a batch is slow, failures counted and the queue parked after ``park_after``.

Conversations (``service.py``) and lead queues (``leads.py``) are both queues of the
conversation store; they differ only in what one batch does (``_process_batch``), so the
guarantees of ``bot/store/conversations.py`` (order, dedupe, exactly once across crashes,
recovery) hold for both through this one loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from ..engine.transcript import system_entry
from ..errors import RuntimeFault
from ..store.conversations import Batch, ConversationStore, SaveRequest
from ..store.outages import store_outage
from .pacing import Activity

log = logging.getLogger("salesbot.runtime")
P = TypeVar("P")


class IdentityPending(RuntimeFault):
    """The CRM could not find or create the conversation's lead yet; the events stay queued."""


def _outage(exc: Exception) -> bool:
    """Failures that are outages, not the conversation's fault, never count towards parking (the
    lock expires and recovery tries again, as after a crash): the CRM or Redis away, Redis full."""
    return isinstance(exc, IdentityPending) or store_outage(exc) is not None


class QueueProcessor(Generic[P]):
    """Processes the batches of store queues; ``P`` is what a push may have read along."""

    def __init__(self, store: ConversationStore, *, park_after: int = 5,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        #: Failed batches in a row after which a queue is parked (see ``_failed``).
        self.park_after = park_after
        #: (cid, lock token) of the batches in progress -> when their lock was last taken or renewed.
        self._held: dict[tuple[str, str], float] = {}
        self._renewal: asyncio.TimerHandle | None = None
        self._renewal_loop: asyncio.AbstractEventLoop | None = None
        self._renewing: set[asyncio.Task[None]] = set()
        self._renewing_keys: set[tuple[str, str]] = set()
        #: Batches of this processor in flight: background jobs give way to them (``pacing.Pacer``).
        self.activity = Activity()

    async def retry(self, cid: str, *, skip: int = 0, user: str = "") -> bool:
        """A person's retry of a parked (or failing) queue: clear the mark, optionally
        discard the ``skip`` oldest queued events (the poison), and process what waits.
        False when another process holds the queue (it goes on by itself)."""
        await self.store.unpark(cid)
        # In the recovery set again first: whatever happens to this attempt (the CRM or Redis
        # away, another process holding the lock), recovery goes on with it.
        await self.store.pend(cid, self.clock() + self.store.lock_ttl_ms / 1000)
        batch = await self.store.acquire(cid)
        if batch is None:
            return True  # nothing waits
        if batch is False:
            return False
        assert isinstance(batch, Batch)
        while skip > 0 and batch is not None:
            n = min(skip, len(batch.events))
            skip -= n
            req = SaveRequest(state=None, processed=n)
            req.add_log(system_entry(f"{user or 'a person'} discarded {n} event(s) that could not be handled",
                                     self.clock(), event="discarded"))
            if (await self.store.save(cid, batch.token, req)).status != 1:
                return True  # nothing more waits (or the lock was lost: its new holder goes on)
            batch = await self.store.load(cid, batch.token)
        with contextlib.suppress(IdentityPending):  # queued until the CRM answers (recovery)
            await self.process(batch)
        return True

    async def _process_batch(self, batch: Batch, prefetched: P | None = None) -> int:
        """Handle one batch and save it: the store's save status (-1 lost, 0 released, 1 more)."""
        raise NotImplementedError

    def _forget(self, cid: str) -> None:
        """Drop what the process caches of ``cid`` (a batch of it failed)."""

    async def process(self, batch: Batch | None, prefetched: P | None = None) -> bool:
        """Run batches until the inbox is empty; ``prefetched``: what the push read along (for
        the next batches, ``_next`` says).
        False when the work was set aside (the conversation is parked, or a batch failed and
        recovery tries again later, see ``_failed``)."""
        if batch is None:
            return True
        with self.activity.track():
            return await self._process(batch, prefetched)

    async def _process(self, batch: Batch | None, prefetched: P | None) -> bool:
        held = self._held
        while batch is not None:
            if batch.meta.get("parked"):
                parked, dropped = await self.store.set_aside(batch.cid, batch.token)
                if dropped:
                    log.warning("conversation.parked_inbox_full", extra={"cid": batch.cid, "dropped": dropped})
                elif parked:
                    log.info("conversation.parked_event_queued", extra={"cid": batch.cid})
                return False
            # Slow work (a CRM at 7 requests/s, a webhook) must not outlive the lock: a batch
            # still running gets it renewed at most a third of the TTL apart (``_renew_due``).
            key = (batch.cid, batch.token)
            held[key] = time.monotonic()
            loop = asyncio.get_running_loop()
            if self._renewal is None or self._renewal_loop is not loop:
                self._renewal, self._renewal_loop = loop.call_later(self._renew_every / 2, self._renew_due), loop
            try:
                status = await self._process_batch(batch, prefetched)
            except Exception as exc:
                if self._is_outage(exc):
                    raise
                await self._failed(batch, exc)
                return False
            finally:
                del held[key]
            if status != 1:
                return True
            batch, prefetched = await self._next(batch)
        return True

    def _is_outage(self, exc: Exception) -> bool:
        """Whether a failed batch met an outage (``_outage``): not counted, left to recovery."""
        return _outage(exc)

    async def _next(self, batch: Batch) -> tuple[Batch | None, P | None]:
        """The queue's next batch under the same lock, with what was read along (none here)."""
        return await self.store.load(batch.cid, batch.token), None

    async def _failed(self, batch: Batch, exc: Exception) -> None:
        """Count a failed batch: recovery retries it with a backoff, and the conversation is parked
        after ``park_after`` failures in a row instead of being retried forever (``record_failure``)."""
        cid = batch.cid
        error = f"{type(exc).__name__}: {exc}"
        log.error("conversation.processing_failed", exc_info=exc, extra={"cid": cid})
        self._forget(cid)
        try:
            failures, parked = await self.store.record_failure(cid, batch.token, error,
                                                               park_after=self.park_after)
        except Exception:
            log.warning("conversation.failure_not_recorded", extra={"cid": cid}, exc_info=True)
            return
        if parked:
            log.error("conversation.parked", extra={"cid": cid, "failures": failures, "error": error[:200]})

    @property
    def _renew_every(self) -> float:
        return max(0.05, self.store.lock_ttl_ms / 3000)

    def _renew_due(self) -> None:
        """One timer for every batch in progress, ticking every sixth of the lock's TTL: a lock
        taken or renewed a sixth of the TTL ago or more is renewed (a failed renewal is tried
        again at the next tick), so renewals are at most a third of the TTL apart."""
        self._renewal = None
        if not self._held:
            return  # idle: the next batch starts the timer again
        now, every = time.monotonic(), self._renew_every
        for key, since in list(self._held.items()):
            if now - since >= every / 2 and key not in self._renewing_keys:
                self._renewing_keys.add(key)
                task = asyncio.create_task(self._renew(*key))
                self._renewing.add(task)
                task.add_done_callback(self._renewing.discard)
        self._renewal = asyncio.get_running_loop().call_later(every / 2, self._renew_due)

    async def _renew(self, cid: str, token: str) -> None:
        key = (cid, token)
        try:
            started = time.monotonic()
            if await self.store.extend(cid, token):
                if key in self._held:  # counted from the renewal; a failed one is retried next tick
                    self._held[key] = started
            elif key in self._held:  # (a batch that just saved has released it: no error)
                log.error("store.lock_lost_while_processing", extra={"cid": cid})
        except Exception:
            log.warning("store.lock_renewal_failed", extra={"cid": cid}, exc_info=True)
        finally:
            self._renewing_keys.discard(key)

