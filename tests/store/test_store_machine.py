"""Exactly once, in order, nothing lost: a state machine of racing processors on a real Redis.

Hypothesis interleaves deliveries (through either of two processes), redeliveries of a
message already delivered, saving a batch and loading the next (separate steps, either of them
slow), renewing a lock, a processor abandoning its batch (a crash), time passing (the lock, the
inbox's head entry, expires by the stores' clock; always inside the 7-day dedupe window) and the
recovery worker's round trips (``pending_due``, ``acquire``, ``forget_pending``, one step each
or a whole ``Worker.recover`` round, or racing a push).

The model holds the inbox and the lock (holder, expiry). After every step: Redis's lock is the
model's (holder and expiry), every batch handed out is the inbox's head and goes to one
processor at a time (taken only from no holder or one whose time is up), a save, load or
renewal succeeds exactly while its token holds the lock (its time up or not: until another
process takes it over, bot/store/inboxlock.py), the state is a
prefix of the delivered events in order with each once, the transcript says the same, and a
conversation with waiting events is in the recovery set, due a lock TTL after the last push
that wrote its entry (a process's push within half a lock TTL of its own last entry writes none).
Every example ends by crashing whatever is held and requiring recovery to handle everything
(see ``_drain``). Processing is ``ConversationService``'s protocol without the interpreter:
the state is the list of events handled, so a duplicate or a lost event shows in it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from redis.asyncio import Redis

from bot.store import keys as k
from bot.store.conversations import Batch, ConversationStore, SaveRequest
from tests import inboxlocks

T = TypeVar("T")
LOCK_TTL = 30.0
DAY = 86400.0
T0 = 1_700_000_000.0
#: Time may pass, but a redelivery stays within the 7-day dedupe window.
MAX_ELAPSED = 6 * DAY
CID = "test:acct:machine"
KEY = k.ConversationKey(CID)
PROCESSORS = ("p1", "p2")
#: Seconds a processor may take before its next round trip: within the lock's TTL.
SLOW = st.sampled_from([0, 5, 25])


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
        self.inbox: list[int] = []  # the model of the inbox: delivered, not yet saved as handled
        self.lock: tuple[str, float] | None = None  # the model of the lock: token, expiry time
        #: The model of the recovery entry's score (None: no entry), and when each process last
        #: wrote it (a push of that process within half a lock TTL leaves it).
        self.pending: float | None = None
        self.wrote: dict[str, float] = {}
        self.held: list[tuple[str, Batch]] = []  # batches taken and not yet saved or abandoned
        self.saved: list[tuple[str, Batch]] = []  # saved, lock kept: the next batch to load
        self.scanned: list[tuple[str, float]] = []  # recovery read these, has not acquired yet
        self.idle: list[tuple[str, float]] = []  # recovery found these idle, will forget them
        self.entries = 0  # the model of the transcript's count: entries saved or appended outside a turn
        self.run(self.redis.flushdb())

    def run(self, coro: Awaitable[T]) -> T:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        try:
            self.run(self._drain())
        finally:
            for store in self.stores.values():
                self.run(store.close())
            self.run(self.redis.aclose())
            self.loop.close()

    # --- the model's view of the lock -----------------------------------------------------

    def _live(self, batch: Batch) -> bool:
        return self.lock is not None and self.lock[0] == batch.token

    def _free(self) -> bool:
        return self.lock is None or self.lock[1] <= self.clock.now

    def _took(self, batch: Batch) -> None:
        """A batch was handed out: the lock was free (or its time up), the batch is the inbox's head."""
        assert self._free(), "a second processor got a conversation whose lock is held"
        assert batch.events, "a processor was handed a batch without events"
        assert [int(e) for e in batch.events] == self.inbox[:len(batch.events)]
        self.lock = (batch.token, self.clock.now + LOCK_TTL)

    def _renewed(self, batch: Batch) -> None:
        self.lock = (batch.token, self.clock.now + LOCK_TTL)

    # --- deliveries -----------------------------------------------------------------------

    @rule(via=st.sampled_from(PROCESSORS))
    def deliver(self, via: str) -> None:
        self.run(self._deliver(via))

    async def _deliver(self, via: str) -> None:
        n = len(self.delivered)
        result = await self.stores[via].push(CID, str(n).encode(), dedupe_id=f"m{n}")
        assert not result.duplicate
        self.delivered.append(n)
        self.inbox.append(n)
        self._pushed(via)
        if result.batch is not None:
            self._took(result.batch)
            self.held.append((via, result.batch))
        else:
            assert not self._free(), "a push left a free conversation without a processor"

    @precondition(lambda self: self.delivered)
    @rule(via=st.sampled_from(PROCESSORS), pick=st.integers(0, 1000))
    def redeliver(self, via: str, pick: int) -> None:
        n = self.delivered[pick % len(self.delivered)]
        result = self.run(self.stores[via].push(CID, str(n).encode(), dedupe_id=f"m{n}"))
        assert result.duplicate and result.batch is None, f"event {n} accepted twice"
        self._pushed(via)  # a duplicate moves the recovery time too

    def _pushed(self, via: str) -> None:
        """The model of a push's recovery entry: written unless ``via`` wrote it < half a TTL ago."""
        wrote = self.wrote.get(via)
        if wrote is None or not 0 <= self.clock.now - wrote < LOCK_TTL / 2:
            self.pending, self.wrote[via] = self.clock.now + LOCK_TTL, self.clock.now

    async def _forget(self, cid: str, score: float) -> None:
        await self.stores["worker"].forget_pending(cid, score)
        if self.pending is not None and self.pending <= score:
            self.pending = None

    # --- processing -----------------------------------------------------------------------

    async def _save(self, name: str, batch: Batch) -> bool:
        """Handle one batch as ConversationService does and save it; True if the processor
        keeps the lock for the next batch (which it ``_load``s)."""
        live = self._live(batch)
        events = [int(e) for e in batch.events]
        req = SaveRequest(state=_encode(_decode(batch.state) + events), processed=len(events),
                          log=list(batch.events))
        saved = await self.stores[name].save(CID, batch.token, req)
        if not live:
            assert saved.status == -1, "a processor that lost its lock could save"
            return False
        assert saved.status != -1, "a processor lost a lock it renewed within the TTL"
        del self.inbox[:len(events)]
        assert saved.status == (1 if self.inbox else 0), (saved.status, self.inbox)
        self.entries += len(events)
        assert (saved.first, saved.last) == (self.entries - len(events) + 1, self.entries), (saved, self.entries)
        if saved.status == 0:
            self.lock = None
            return False
        self._renewed(batch)
        return True

    async def _load(self, name: str, batch: Batch) -> Batch | None:
        live = self._live(batch)
        nxt = await self.stores[name].load(CID, batch.token)
        if not live:
            assert nxt is None, "a processor that lost its lock could load"
            return None
        assert nxt is not None, "a processor lost a lock it renewed within the TTL"
        assert [int(e) for e in nxt.events] == self.inbox[:len(nxt.events)] and nxt.events
        self._renewed(nxt)
        return nxt

    @precondition(lambda self: self.held)
    @rule(pick=st.integers(0, 1000), slow=SLOW)
    def process_one_batch(self, pick: int, slow: int) -> None:
        """The processor runs the batch (taking ``slow`` seconds) and saves it."""
        name, batch = self.held.pop(pick % len(self.held))
        self.run(self._time_passes(slow))
        if self.run(self._save(name, batch)):
            self.saved.append((name, batch))

    @precondition(lambda self: self.saved)
    @rule(pick=st.integers(0, 1000), slow=SLOW)
    def load_next_batch(self, pick: int, slow: int) -> None:
        """The load that follows a save which kept the lock (a separate step: time may pass)."""
        name, batch = self.saved.pop(pick % len(self.saved))
        self.run(self._time_passes(slow))
        nxt = self.run(self._load(name, batch))
        if nxt is not None:
            self.held.append((name, nxt))

    @precondition(lambda self: self.held)
    @rule(pick=st.integers(0, 1000))
    def renew(self, pick: int) -> None:
        name, batch = self.held[pick % len(self.held)]
        extended = self.run(self.stores[name].extend(CID, batch.token))
        assert extended == self._live(batch)
        if extended:
            self._renewed(batch)

    @precondition(lambda self: self.held or self.saved)
    @rule(pick=st.integers(0, 1000))
    def crash(self, pick: int) -> None:
        """The processor dies, its batch unsaved or the next one not loaded; its lock stays
        until it expires."""
        both = self.held + self.saved
        gone = both[pick % len(both)]
        (self.held if gone in self.held else self.saved).remove(gone)

    # --- time -------------------------------------------------------------------------------

    async def _time_passes(self, seconds: float) -> None:
        """Move the clock: the lock's expiry is a time of it. A holder whose time is up keeps
        the lock until another process takes the conversation over."""
        self.clock.now += seconds

    @precondition(lambda self: self.clock.now - T0 < MAX_ELAPSED - DAY)
    @rule(seconds=st.sampled_from([5, 10, 15, 25, 35, 3600, 6 * 3600, 24 * 3600]))
    def time_passes(self, seconds: int) -> None:
        """Seconds to a day pass (so locks expire), always inside the 7-day dedupe window."""
        self.run(self._time_passes(seconds))

    @rule(via=st.sampled_from([*PROCESSORS, "worker"]))
    def append_outside_a_turn(self, via: str) -> None:
        """A delivery receipt: numbered after every entry so far, while a batch may be held
        (whose save must then number its entries after it: the lock is marked)."""
        self.entries += 1
        assert self.run(self.stores[via].append_log(CID, [f"r{self.entries}".encode()])) == self.entries

    @invariant()
    def the_lock_is_the_models(self) -> None:
        self.run(self._check_lock())

    async def _check_lock(self) -> None:
        """Redis's lock is the model's: same holder, the expiry of its last renewal."""
        held = await inboxlocks.holder(self.redis, CID)
        assert held == (None if self.lock is None else (self.lock[0], int(self.lock[1] * 1000))), (held, self.lock)

    # --- recovery, one round trip per step as Worker.recover makes them --------------------

    @rule()
    def recover_scan(self) -> None:
        self.scanned = self.run(self.stores["worker"].pending_due(self.shard, self.clock.now))
        if self.scanned:
            assert self.pending is not None and self.clock.now >= self.pending, "recovery looked too early"

    @precondition(lambda self: self.scanned)
    @rule()
    def recover_acquire(self) -> None:
        cid, score = self.scanned.pop(0)
        self.run(self._acquire(cid, score))

    async def _acquire(self, cid: str, score: float) -> None:
        taken = await self.stores["worker"].acquire(cid)
        if not self._free():
            assert taken is False
        elif not self.inbox:
            assert taken is None, "recovery took an idle conversation"
            self.idle.append((cid, score))
        else:
            assert isinstance(taken, Batch), "recovery could not take a free conversation"
            self._took(taken)
            self.held.append(("worker", taken))

    @rule(seconds=st.sampled_from([5, 35]))
    def worker_tick(self, seconds: int) -> None:
        """Time passes, then the worker's recovery loop runs a round."""
        self.run(self._time_passes(seconds))
        self.run(self._recover_round())

    @rule(via=st.sampled_from(PROCESSORS))
    def recovery_races_a_push(self, via: str) -> None:
        """Recovery finds the conversation idle, and a message arrives before it forgets it."""
        self.run(self._race(via))

    async def _race(self, via: str) -> None:
        worker = self.stores["worker"]
        for cid, score in await worker.pending_due(self.shard, self.clock.now):
            await self._acquire(cid, score)
            if self.idle:
                await self._deliver(via)
                await self._forget(*self.idle.pop())

    @rule()
    def recover_round(self) -> None:
        """``Worker.recover``'s round trips back to back (the batches taken are held)."""
        self.run(self._recover_round())

    async def _recover_round(self) -> None:
        worker = self.stores["worker"]
        due = await worker.pending_due(self.shard, self.clock.now)
        if due:
            assert self.pending is not None and self.clock.now >= self.pending, "recovery looked too early"
        for cid, score in due:
            await self._acquire(cid, score)
            while self.idle:
                await self._forget(*self.idle.pop(0))

    @precondition(lambda self: self.idle)
    @rule()
    def recover_forget(self) -> None:
        cid, score = self.idle.pop(0)
        self.run(self._forget(cid, score))

    # --- the promise --------------------------------------------------------------------------

    async def _handled(self) -> tuple[list[int], list[int]]:
        state = _decode(await self.stores["worker"].state(CID))
        rows = await self.stores["worker"].read_log(CID, 0, 10_000)
        assert [n for n, _ in rows] == list(range(1, self.entries + 1)), (rows, self.entries)  # no gap, no repeat
        log = [int(d) for _, d in rows if not d.startswith(b"r")]  # the receipts apart
        return state, log

    @invariant()
    def waiting_events_can_be_recovered(self) -> None:
        """Nothing lost: while events wait, recovery will look at the conversation, a lock
        TTL after the last push that wrote the entry (the model's)."""
        score = self.run(self.redis.zscore(k.pending_key(self.shard), CID))
        assert score == self.pending, (score, self.pending)
        if self.inbox:
            assert score is not None, "events wait with no recovery entry"

    @invariant()
    def handled_once_in_order(self) -> None:
        state, log = self.run(self._handled())
        assert state == self.delivered[:len(state)], (state, self.delivered)
        assert log == state, (log, state)

    async def _drain(self) -> None:
        """The end of every example: what waits is recovered; old messages are redelivered
        (still duplicates); recovery finds the idle conversation while a message arrives whose
        processor dies (recovered again); a slow processor works through a backlog; and the
        idle conversation is finally forgotten by recovery."""
        await self._recover_all()
        if not self.delivered:
            return
        # Six days after the start (every message is younger than seven days): a new message
        # rewrites the dedupe records (and may refresh the TTLs), and every message delivered is
        # still a duplicate, in the metadata or the older ids' set (bot/store/dedupe.py).
        await self._time_passes(max(LOCK_TTL + 5, T0 + 6 * DAY - self.clock.now))
        await self._deliver("p2")
        for n in self.delivered:
            again = await self.stores["p1"].push(CID, str(n).encode(), dedupe_id=f"m{n}")
            assert again.duplicate, f"event {n} accepted twice after {self.clock.now - T0} s"
            self._pushed("p1")  # duplicates move the recovery time too
        await self._recover_all()
        await self._time_passes(LOCK_TTL + 5)
        await self._race("p1")
        await self._recover_all()
        # A backlog: a slow processor saves, keeps the lock, and loads the rest a while later.
        for via in ("p1", "p2", "p2", "p1"):
            await self._deliver(via)
        (name, batch), = self.held
        self.held.clear()
        await self._time_passes(10)
        assert await self._save(name, batch)
        await self._check_lock()
        await self._time_passes(10)
        nxt = await self._load(name, batch)
        await self._check_lock()
        while nxt is not None and await self._save(name, nxt):
            nxt = await self._load(name, nxt)
        assert (await self._handled())[0] == self.delivered and not self.inbox
        await self._time_passes(LOCK_TTL + 5)
        await self._recover_round()  # idle: acquire takes nothing and the entry is forgotten
        assert await self.redis.zscore(k.pending_key(self.shard), CID) is None

    async def _recover_all(self) -> None:
        """Every processor dies with what it holds; then locks expire and recovery, as
        ``Worker.recover`` does it, must find and handle every event still waiting."""
        self.held.clear()
        self.saved.clear()
        worker = self.stores["worker"]
        for _ in range(len(self.delivered) + 3):
            if not self.inbox:
                break
            await self._time_passes(LOCK_TTL + 5)
            for cid, score in await worker.pending_due(self.shard, self.clock.now):
                taken = await worker.acquire(cid)
                if taken is None:
                    await self._forget(cid, score)
                elif isinstance(taken, Batch):
                    self._took(taken)
                    batch: Batch | None = taken
                    while batch is not None and await self._save("worker", batch):
                        batch = await self._load("worker", batch)
        state, log = await self._handled()
        assert state == self.delivered, f"handled {state}, delivered {self.delivered}"
        assert log == state
        assert await self.redis.exists(KEY.inbox) == 0  # and the lock with it


def test_racing_processors_and_recovery_handle_every_event_once_in_order(redis_url: str) -> None:
    StoreMachine.url = redis_url
    run_state_machine_as_test(StoreMachine, settings=settings(
        max_examples=150, stateful_step_count=20, deadline=None,
        suppress_health_check=[HealthCheck.too_slow]))
