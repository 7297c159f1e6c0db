"""Exactly once, in order, nothing lost: a state machine of racing processors on a real Redis.

Hypothesis interleaves deliveries (through either of two processes), redeliveries of a
message already delivered, processing one batch, renewing a lock, a processor abandoning its
batch (a crash), lock expiry, time passing (within the dedupe window) and the recovery worker's
three round trips (``pending_due``, ``acquire``, ``forget_pending``, as ``Worker.recover`` makes
them, with other steps in between). After every step the state is a prefix of the delivered
events, in order, each once, and the transcript says the same; at the end, expiring locks and
running recovery must process every delivered event.

Processing is the protocol of ``ConversationService`` without the interpreter: the state is
the list of the events handled, so a duplicate or a lost event shows in it. Time is a clock
the store reads (its ``clock`` seam); lock expiry is deleting the lock key, so nothing sleeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, invariant, precondition, rule,
                                 run_state_machine_as_test)
from redis.asyncio import Redis

from bot.runtime import keys as k
from bot.runtime.store import Batch, ConversationStore, SaveRequest

T = TypeVar("T")
LOCK_TTL = 30.0
DAY = 86400.0
T0 = 1_700_000_000.0
#: Time may pass, but a redelivery stays within the 7-day dedupe window.
MAX_ELAPSED = 6 * DAY
CID = "test:acct:machine"
KEY = k.ConversationKey(CID)
PROCESSORS = ("p1", "p2")


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def _decode(state: bytes | None) -> list[int]:
    return [int(x) for x in state.split(b",")] if state else []


def _encode(done: list[int]) -> bytes:
    return b",".join(str(n).encode() for n in done)


class StoreMachine(RuleBasedStateMachine):
    url = ""  # set by the test from the ``redis_url`` fixture

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.redis = Redis.from_url(self.url)
        self.clock = Clock()
        # batch=2: a backlog takes more than one batch, so save-then-load is exercised
        self.stores = {name: ConversationStore(self.redis, lock_ttl=LOCK_TTL, batch=2,
                                               clock=self.clock)
                       for name in (*PROCESSORS, "worker")}
        self.shard = k.shard_of(CID, self.stores["worker"].shards)
        self.delivered: list[int] = []
        self.held: list[tuple[str, Batch]] = []  # batches taken and not yet saved or abandoned
        self.scanned: list[tuple[str, float]] = []  # recovery read these, has not acquired yet
        self.idle: list[tuple[str, float]] = []  # recovery found these idle, will forget them
        self.run(self.redis.flushdb())

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        try:
            self.run(self._drain())
        finally:
            for store in self.stores.values():
                self.run(store.close())
            self.run(self.redis.aclose())
            self.loop.close()

    # --- deliveries -----------------------------------------------------------------------

    @rule(via=st.sampled_from(PROCESSORS))
    def deliver(self, via: str) -> None:
        n = len(self.delivered)
        result = self.run(self.stores[via].push(CID, str(n).encode(), dedupe_id=f"m{n}"))
        assert not result.duplicate
        self.delivered.append(n)
        if result.batch is not None:
            self.held.append((via, result.batch))

    @precondition(lambda self: self.delivered)
    @rule(via=st.sampled_from(PROCESSORS), pick=st.integers(0, 1000))
    def redeliver(self, via: str, pick: int) -> None:
        n = self.delivered[pick % len(self.delivered)]
        result = self.run(self.stores[via].push(CID, str(n).encode(), dedupe_id=f"m{n}"))
        assert result.duplicate and result.batch is None, f"event {n} accepted twice"

    # --- processing -----------------------------------------------------------------------

    async def _process(self, name: str, batch: Batch) -> None:
        """Handle one batch as ConversationService does; keep the next one if the lock stays."""
        store = self.stores[name]
        events = [int(e) for e in batch.events]
        req = SaveRequest(state=_encode(_decode(batch.state) + events), processed=len(events),
                          log=list(batch.events))
        saved = await store.save(CID, batch.token, req)
        if saved.status == 1:
            nxt = await store.load(CID, batch.token)
            if nxt is not None:
                self.held.append((name, nxt))

    @precondition(lambda self: self.held)
    @rule(pick=st.integers(0, 1000))
    def process_one_batch(self, pick: int) -> None:
        name, batch = self.held.pop(pick % len(self.held))
        self.run(self._process(name, batch))

    @precondition(lambda self: self.held)
    @rule(pick=st.integers(0, 1000))
    def renew(self, pick: int) -> None:
        name, batch = self.held[pick % len(self.held)]
        owner = self.run(self.redis.get(KEY.lock))
        extended = self.run(self.stores[name].extend(CID, batch.token))
        assert extended == (owner == batch.token.encode())

    @precondition(lambda self: self.held)
    @rule(pick=st.integers(0, 1000))
    def crash(self, pick: int) -> None:
        """The processor dies: its batch is never saved, its lock stays until it expires."""
        self.held.pop(pick % len(self.held))

    # --- time -------------------------------------------------------------------------------

    @rule()
    def lock_expires(self) -> None:
        """The lock's TTL passes without a renewal (a slow or dead holder)."""
        self.clock.now += LOCK_TTL
        self.run(self.redis.delete(KEY.lock))

    @precondition(lambda self: self.clock.now - T0 < MAX_ELAPSED - DAY)
    @rule(hours=st.integers(1, 24))
    def time_passes(self, hours: int) -> None:
        """Hours pass (every lock has long expired), still inside the dedupe window."""
        self.clock.now += hours * 3600
        self.run(self.redis.delete(KEY.lock))

    # --- recovery, one round trip per step as Worker.recover makes them --------------------

    @rule()
    def recover_scan(self) -> None:
        self.scanned = self.run(self.stores["worker"].pending_due(self.shard, self.clock.now))

    @precondition(lambda self: self.scanned)
    @rule()
    def recover_acquire(self) -> None:
        cid, score = self.scanned.pop(0)
        taken = self.run(self.stores["worker"].acquire(cid))
        if taken is None:
            self.idle.append((cid, score))
        elif isinstance(taken, Batch):
            self.held.append(("worker", taken))

    @precondition(lambda self: self.idle)
    @rule()
    def recover_forget(self) -> None:
        cid, score = self.idle.pop(0)
        self.run(self.stores["worker"].forget_pending(cid, score))

    # --- the promise --------------------------------------------------------------------------

    async def _handled(self) -> tuple[list[int], list[int]]:
        state = _decode(await self.stores["worker"].state(CID))
        log = [int(d) for _, d in await self.stores["worker"].read_log(CID, 0, 10_000)]
        return state, log

    @invariant()
    def handled_once_in_order(self) -> None:
        state, log = self.run(self._handled())
        assert state == self.delivered[:len(state)], (state, self.delivered)
        assert log == state, (log, state)

    async def _drain(self) -> None:
        """Finish the in-flight work a real deployment would: the held batches are saved (or
        rejected), then locks expire and recovery takes what waits, until nothing does."""
        for _ in range(len(self.delivered) + 5):
            for name, batch in self.held[:]:
                self.held.remove((name, batch))
                await self._process(name, batch)
            if self.held:
                continue
            if not await self.redis.llen(KEY.inbox):
                break
            self.clock.now += LOCK_TTL
            await self.redis.delete(KEY.lock)
            worker = self.stores["worker"]
            for cid, score in await worker.pending_due(self.shard, self.clock.now):
                taken = await worker.acquire(cid)
                if taken is None:
                    await worker.forget_pending(cid, score)
                elif isinstance(taken, Batch):
                    self.held.append(("worker", taken))
        state, log = await self._handled()
        assert state == self.delivered, f"handled {state}, delivered {self.delivered}"
        assert log == state
        assert await self.redis.llen(KEY.inbox) == 0
        assert await self.redis.exists(KEY.lock) == 0


def test_racing_processors_and_recovery_handle_every_event_once_in_order(redis_url: str) -> None:
    StoreMachine.url = redis_url
    run_state_machine_as_test(StoreMachine, settings=settings(
        max_examples=60, stateful_step_count=30, deadline=None,
        suppress_health_check=[HealthCheck.too_slow]))
