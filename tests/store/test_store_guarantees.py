"""The conversation store's promises, attacked one by one on a real Redis.

"Exactly once, in order, nothing lost" rests on a few exact values in ``store.py``'s scripts:
who may write (the lock token), how long a lock lives and when it is renewed or released,
how long a platform message id is remembered, and when recovery may look at a conversation.
Each test here pins one of them, so that changing it fails a test (each was checked against
the mutated script). Time is driven through the store's ``clock`` seam, lock expiry with it
(the lock is the inbox's head entry, its expiry a time of that clock: bot/store/inboxlock.py),
never by sleeping.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from bot.store import keys as k
from bot.store.conversations import Batch, ConversationStore, SaveRequest
from tests import inboxlocks
from tests.clocks import T0, Clock

LOCK_TTL = 30.0
LOCK_MS = int(LOCK_TTL * 1000)
DAY = 86400.0
CID = "test:acct:guarantees"
KEY = k.ConversationKey(CID)
#: How far a PTTL read right after a write may fall below the TTL set (a loaded machine).
SLACK_MS = 5000
MS = 1000


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def stores(redis: Redis, clock: Clock) -> AsyncIterator[tuple[ConversationStore, ...]]:
    """Three processes on one Redis: two processors and a recovery worker, one clock."""
    made = tuple(ConversationStore(redis, lock_ttl=LOCK_TTL, batch=2, clock=clock)
                 for _ in range(3))
    yield made
    for store in made:
        await store.close()


async def _lock(redis: Redis) -> str | None:
    held = await inboxlock_holder(redis)
    return held[0] if held else None


async def inboxlock_holder(redis: Redis) -> tuple[str, int] | None:
    return await inboxlocks.holder(redis, CID)


async def _inbox(redis: Redis) -> list[bytes]:
    return await inboxlocks.events(redis, CID)


def _req(state: bytes, events: list[bytes], *, out: list[bytes] | None = None,
         meta: dict[str, str] | None = None, outbox_account: str | None = None) -> SaveRequest:
    return SaveRequest(state=state, processed=len(events), log=list(events), out=out or [],
                       meta=meta or {}, outbox_account=outbox_account)


async def _held(redis: Redis, batch: Batch, clock: Clock) -> None:
    """The batch's holder owns the lock (maybe marked: ``+``) for a whole lock TTL from now."""
    assert await inboxlock_holder(redis) == (batch.token, int(clock.now * MS) + LOCK_MS)


# --- 1. a processor that lost its lock cannot write -------------------------------------------


async def test_a_processor_whose_lock_expired_mid_batch_cannot_write(
        redis: Redis, stores: tuple[ConversationStore, ...], clock: Clock) -> None:
    a, b, _ = stores
    first = await a.push(CID, b"e1", dedupe_id="m1")
    assert first.batch is not None
    # a is slow: its lock's time is up; b's push takes the conversation over.
    clock.now += LOCK_TTL + 1
    second = await b.push(CID, b"e2", dedupe_id="m2")
    assert second.batch is not None and second.batch.events == [b"e1", b"e2"]

    late = await a.save(CID, first.batch.token, _req(b"state-by-a", first.batch.events,
                                                       out=[b"hi"], meta={"by": "a"}))
    assert (late.status, late.first, late.last) == (-1, 0, 0)
    assert await a.state(CID) is None
    assert await a.read_log(CID) == []
    assert await _inbox(redis) == [b"e1", b"e2"]  # nothing removed by the loser
    assert await redis.llen(KEY.out) == 0
    assert "by" not in await a.meta(CID)
    await _held(redis, second.batch, clock)  # the new holder's lock is untouched
    assert await a.load(CID, first.batch.token) is None
    assert await a.extend(CID, first.batch.token) is False

    done = await b.save(CID, second.batch.token, _req(b"state-by-b", second.batch.events))
    assert done.status == 0
    assert await b.state(CID) == b"state-by-b"
    assert [d for _, d in await b.read_log(CID)] == [b"e1", b"e2"]


async def test_a_processor_whose_lock_expired_cannot_overwrite_the_newer_state(
        redis: Redis, stores: tuple[ConversationStore, ...], clock: Clock) -> None:
    """The new holder finished and released the lock: the old one still may not write."""
    a, _, worker = stores
    first = await a.push(CID, b"e1", dedupe_id="m1")
    assert first.batch is not None
    clock.now += LOCK_TTL + 1
    taken = await worker.acquire(CID)
    assert isinstance(taken, Batch) and taken.events == [b"e1"]
    assert (await worker.save(CID, taken.token, _req(b"newer", taken.events))).status == 0
    assert await _lock(redis) is None

    late = await a.save(CID, first.batch.token, _req(b"older", first.batch.events))
    assert late.status == -1
    assert await a.state(CID) == b"newer"
    assert [d for _, d in await a.read_log(CID)] == [b"e1"]


async def test_a_holder_whose_time_is_up_still_saves_while_nobody_took_over(
        redis: Redis, stores: tuple[ConversationStore, ...], clock: Clock) -> None:
    """Its lock is the inbox's head until another process takes it over: nobody else ran the
    batch, so the slow holder's save is safe and saves redoing it (bot/store/inboxlock.py)."""
    a, _, _ = stores
    first = await a.push(CID, b"e1", dedupe_id="m1")
    assert first.batch is not None
    clock.now += 10 * LOCK_TTL
    assert await a.extend(CID, first.batch.token) is True
    await _held(redis, first.batch, clock)
    done = await a.save(CID, first.batch.token, _req(b"slow", first.batch.events))
    assert done.status == 0 and await a.state(CID) == b"slow"
    assert await redis.exists(KEY.inbox) == 0


# --- 5. exact values of the lock ----------------------------------------------------------------


async def test_push_takes_the_lock_for_the_lock_ttl(
        redis: Redis, stores: tuple[ConversationStore, ...], clock: Clock) -> None:
    a, b, _ = stores
    pushed = await a.push(CID, b"e1")
    assert pushed.batch is not None
    await _held(redis, pushed.batch, clock)
    clock.now += LOCK_TTL - 0.001  # held until the last millisecond of its TTL
    queued = await b.push(CID, b"e2")  # queued behind the holder, who keeps the lock
    assert queued.batch is None and not queued.duplicate
    assert await inboxlock_holder(redis) == (pushed.batch.token, int(T0 * MS) + LOCK_MS)
    clock.now = T0 + LOCK_TTL  # then free: the next push takes it over
    taken = await b.push(CID, b"e3")
    assert taken.batch is not None and taken.batch.events == [b"e1", b"e2"]  # a batch of 2
    await _held(redis, taken.batch, clock)


async def test_load_renews_the_lock(redis: Redis, stores: tuple[ConversationStore, ...], clock: Clock) -> None:
    a, _, _ = stores
    pushed = await a.push(CID, b"e1")
    assert pushed.batch is not None
    clock.now += LOCK_TTL - 1
    loaded = await a.load(CID, pushed.batch.token)
    assert loaded is not None and loaded.events == [b"e1"]
    await _held(redis, pushed.batch, clock)


async def test_extend_renews_only_with_the_holders_token(
        redis: Redis, stores: tuple[ConversationStore, ...], clock: Clock) -> None:
    a, b, _ = stores
    pushed = await a.push(CID, b"e1")
    assert pushed.batch is not None
    clock.now += LOCK_TTL - 1
    assert await b.extend(CID, "someone-else") is False
    assert await b.extend(CID, pushed.batch.token[:-1]) is False  # a token's prefix is not the token
    assert await inboxlock_holder(redis) == (pushed.batch.token, int(T0 * MS) + LOCK_MS)  # not extended
    assert await a.extend(CID, pushed.batch.token) is True
    await _held(redis, pushed.batch, clock)
    assert await _inbox(redis) == [b"e1"]


async def test_extend_of_a_lock_that_is_gone_fails_and_takes_nothing(
        redis: Redis, stores: tuple[ConversationStore, ...], clock: Clock) -> None:
    a, _, worker = stores
    pushed = await a.push(CID, b"e1")
    assert pushed.batch is not None
    assert (await a.save(CID, pushed.batch.token, _req(b"s", pushed.batch.events))).status == 0
    assert await a.extend(CID, pushed.batch.token) is False  # released: the inbox is gone
    assert await redis.exists(KEY.inbox) == 0
    again = await a.push(CID, b"e2")
    assert again.batch is not None
    clock.now += LOCK_TTL
    taken = await worker.acquire(CID)  # its time was up: taken over
    assert isinstance(taken, Batch)
    assert await a.extend(CID, again.batch.token) is False
    await _held(redis, taken, clock)


async def test_acquire_on_an_empty_inbox_returns_none_and_takes_no_lock(
        redis: Redis, stores: tuple[ConversationStore, ...]) -> None:
    a, _, worker = stores
    assert await worker.acquire(CID) is None  # never seen
    assert await redis.exists(KEY.inbox) == 0
    pushed = await a.push(CID, b"e1", meta={"channel": "test"})
    assert pushed.batch is not None
    assert (await a.save(CID, pushed.batch.token, _req(b"s", pushed.batch.events))).status == 0
    assert await worker.acquire(CID) is None  # idle: state and meta exist, the inbox is empty
    assert await redis.exists(KEY.inbox) == 0


async def test_acquire_takes_a_free_lock_for_the_lock_ttl_and_not_a_held_one(
        redis: Redis, stores: tuple[ConversationStore, ...], clock: Clock) -> None:
    a, _, worker = stores
    pushed = await a.push(CID, b"e1")
    assert pushed.batch is not None
    clock.now += LOCK_TTL - 0.001
    assert await worker.acquire(CID) is False
    assert await inboxlock_holder(redis) == (pushed.batch.token, int(T0 * MS) + LOCK_MS)
    clock.now = T0 + LOCK_TTL
    taken = await worker.acquire(CID)
    assert isinstance(taken, Batch) and taken.events == [b"e1"]
    await _held(redis, taken, clock)
    assert (await a.save(CID, pushed.batch.token, _req(b"late", pushed.batch.events))).status == -1
    assert await _inbox(redis) == [b"e1"]  # the loser's pops were put back


async def test_a_queue_written_by_plain_commands_is_free_at_its_head_and_waits_behind_a_holder(
        redis: Redis, stores: tuple[ConversationStore, ...], clock: Clock) -> None:
    """The lead queues' events come by plain ``RPUSH`` (no header): at the head they leave the
    queue free for recovery; behind a holder they are popped after its batch and kept."""
    a, _, worker = stores
    lead = "lead:42"
    plain = [command for command in a.enqueue_commands(lead, b"c1") if command[0] == "RPUSH"]
    await redis.execute_command(*plain[0])
    assert await inboxlocks.holder(redis, lead) is None
    taken = await worker.acquire(lead)
    assert isinstance(taken, Batch) and taken.events == [b"c1"]
    await redis.execute_command("RPUSH", k.ConversationKey(lead).inbox, b"c2")  # behind the holder
    saved = await worker.save(lead, taken.token, _req(b"s", taken.events))
    assert saved.status == 1  # c2 waits: the lock kept, on c2 now
    assert await inboxlocks.holder(redis, lead) == (taken.token, int(clock.now * MS) + LOCK_MS)
    nxt = await worker.load(lead, taken.token)
    assert nxt is not None and nxt.events == [b"c2"]
    assert (await worker.save(lead, nxt.token, _req(b"s2", nxt.events))).status == 0
    assert await redis.exists(k.ConversationKey(lead).inbox) == 0


async def test_save_keeps_and_renews_the_lock_while_events_wait_and_releases_it_after(
        redis: Redis, stores: tuple[ConversationStore, ...], clock: Clock) -> None:
    a, b, _ = stores
    pushed = await a.push(CID, b"e1")
    assert pushed.batch is not None and pushed.batch.events == [b"e1"]
    assert (await b.push(CID, b"e2")).batch is None  # arrives while a works
    clock.now += LOCK_TTL - 1

    saved = await a.save(CID, pushed.batch.token, _req(b"s1", pushed.batch.events))
    assert saved.status == 1
    await _held(redis, pushed.batch, clock)  # kept, and renewed for a whole TTL
    assert await _inbox(redis) == [b"e2"]
    assert (await b.push(CID, b"e3")).batch is None  # still a's: nobody else takes over

    nxt = await a.load(CID, pushed.batch.token)
    assert nxt is not None and nxt.events == [b"e2", b"e3"] and nxt.state == b"s1"
    saved = await a.save(CID, nxt.token, _req(b"s3", nxt.events))
    assert saved.status == 0
    assert await redis.exists(KEY.inbox) == 0
    assert [d for _, d in await a.read_log(CID)] == [b"e1", b"e2", b"e3"]


# --- 3. the dedupe window: tests/store/test_dedupe.py ------------------------------------------


# --- 4. recovery after the lock TTL, not before ----------------------------------------------


async def test_a_dead_processors_conversation_is_recovered_after_the_lock_ttl_not_before(
        redis: Redis, stores: tuple[ConversationStore, ...], clock: Clock) -> None:
    a, _, worker = stores
    shard = k.shard_of(CID, worker.shards)
    pushed = await a.push(CID, b"e1", dedupe_id="m1")
    assert pushed.batch is not None  # ... and a dies holding the lock
    due_at = T0 + LOCK_TTL
    assert await redis.zscore(k.pending_key(shard), CID) == due_at
    assert await worker.pending_due(shard, T0) == []
    assert await worker.pending_due(shard, due_at - 0.001) == []

    clock.now = due_at  # the lock's TTL has passed
    assert await worker.pending_due(shard, clock.now) == [(CID, due_at)]
    taken = await worker.acquire(CID)
    assert isinstance(taken, Batch) and taken.events == [b"e1"]
    assert (await worker.save(CID, taken.token, _req(b"s", taken.events))).status == 0
    assert await worker.acquire(CID) is None
    await worker.forget_pending(CID, due_at)
    assert await worker.pending_due(shard, clock.now + DAY) == []


async def test_every_push_moves_the_recovery_time_to_now_plus_the_lock_ttl(
        redis: Redis, stores: tuple[ConversationStore, ...], clock: Clock) -> None:
    a, b, _ = stores
    shard = k.shard_of(CID, a.shards)
    await a.push(CID, b"e1")
    clock.now = T0 + 10
    await b.push(CID, b"e2")  # queued behind a
    assert await redis.zscore(k.pending_key(shard), CID) == T0 + 10 + LOCK_TTL


async def test_forget_pending_removes_only_an_entry_not_newer_than_the_one_read(
        redis: Redis, stores: tuple[ConversationStore, ...], clock: Clock) -> None:
    """Recovery read (cid, score), found the inbox empty, and forgets; a push in between moved
    the score later and must keep the entry, or a crash of that push's processor is never
    recovered."""
    a, b, worker = stores
    shard = k.shard_of(CID, worker.shards)
    await a.push(CID, b"e1")
    read = T0 + LOCK_TTL
    clock.now = T0 + 5
    await b.push(CID, b"e2")
    newer = T0 + 5 + LOCK_TTL
    await worker.forget_pending(CID, read)
    assert await redis.zscore(k.pending_key(shard), CID) == newer
    await worker.forget_pending(CID, newer)
    assert await redis.zscore(k.pending_key(shard), CID) is None
    clock.now = newer
    await a.push(CID, b"e3")
    await worker.forget_pending(CID, newer + LOCK_TTL + 1)  # an older entry than the one read: gone
    assert await redis.zscore(k.pending_key(shard), CID) is None


async def test_a_push_within_half_a_lock_ttl_of_its_processs_last_entry_leaves_it(
        redis: Redis, stores: tuple[ConversationStore, ...], clock: Clock) -> None:
    """The entry a process wrote less than half a lock TTL ago is due before the next push's
    lock expires: that push sends no ``ZADD``. Another process's push, or half a TTL, moves it."""
    a, b, _ = stores
    pending = k.pending_key(k.shard_of(CID, a.shards))
    await a.push(CID, b"e1")
    clock.now = T0 + LOCK_TTL / 2 - 0.001
    await a.push(CID, b"e2")
    assert await redis.zscore(pending, CID) == T0 + LOCK_TTL  # left as it was
    clock.now = T0 + LOCK_TTL / 2
    await a.push(CID, b"e3")
    assert await redis.zscore(pending, CID) == T0 + LOCK_TTL / 2 + LOCK_TTL
    clock.now = T0 + LOCK_TTL / 2 + 1
    await b.push(CID, b"e4")
    assert await redis.zscore(pending, CID) == T0 + LOCK_TTL / 2 + 1 + LOCK_TTL
    clock.now = T0 - 1  # a clock set back: the entry is written again
    await a.push(CID, b"e5")
    assert await redis.zscore(pending, CID) == T0 - 1 + LOCK_TTL


async def _recover(worker: ConversationStore, clock: Clock) -> list[bytes]:
    """``Worker.recover``'s round: the events taken over (saved as handled)."""
    handled: list[bytes] = []
    for member, score in await worker.pending_due(k.shard_of(CID, worker.shards), clock.now):
        taken = await worker.acquire(k.member_cid(member))
        if taken is None:
            await worker.forget_pending(member, score)
        elif taken is False:
            await worker.postpone_pending(member, clock.now)
        else:
            handled += taken.events
            assert (await worker.save(CID, taken.token, _req(b"s", taken.events))).status == 0
    return handled


async def test_a_process_dying_after_a_push_that_left_the_entry_is_recovered(
        redis: Redis, stores: tuple[ConversationStore, ...], clock: Clock) -> None:
    """Two pushes in quick succession from one process (the second sends no ``ZADD``); it dies
    holding the second's lock. The first's entry comes due while the lock is held (looked at
    again when the lock expires), then recovery takes the event over: nothing lost, nothing twice."""
    a, _, worker = stores
    first = await a.push(CID, b"e1", dedupe_id="m1")
    assert first.batch is not None
    assert (await a.save(CID, first.batch.token, _req(b"s", first.batch.events))).status == 0
    clock.now = T0 + 5
    second = await a.push(CID, b"e2", dedupe_id="m2")
    assert second.batch is not None and second.batch.events == [b"e2"]  # ... and a dies holding it
    clock.now = T0 + LOCK_TTL  # the first push's entry: due, the lock still held
    assert await _recover(worker, clock) == []
    assert await redis.zscore(k.pending_key(k.shard_of(CID, a.shards)), CID) == T0 + 5 + LOCK_TTL
    clock.now = T0 + 5 + LOCK_TTL  # the lock's TTL has passed
    assert await _recover(worker, clock) == [b"e2"]
    assert await _recover(worker, clock) == []  # idle: forgotten
    assert await worker.pending_due(k.shard_of(CID, worker.shards), clock.now + DAY) == []
    assert (await a.push(CID, b"e2", dedupe_id="m2")).duplicate


async def test_recovery_looks_again_when_the_holders_lock_expires_not_a_lock_ttl_later(
        redis: Redis, stores: tuple[ConversationStore, ...], clock: Clock) -> None:
    """A due entry finds the lock held with 10 s left: looked at again 10 s later, when it has
    expired. So a process dying after a push that left an older entry (pending.py) is recovered
    once its lock expires, as after any other push, not a lock TTL after the entry came due."""
    a, _, worker = stores
    pending = k.pending_key(k.shard_of(CID, a.shards))
    first = await a.push(CID, b"e1", dedupe_id="m1")
    assert first.batch is not None
    assert (await a.save(CID, first.batch.token, _req(b"s", first.batch.events))).status == 0
    clock.now = T0 + 10
    second = await a.push(CID, b"e2", dedupe_id="m2")  # leaves the entry (T0 + the lock TTL) ...
    assert second.batch is not None  # ... and a dies holding the lock, taken at T0 + 10
    assert await redis.zscore(pending, CID) == T0 + LOCK_TTL
    clock.now = T0 + LOCK_TTL
    assert await _recover(worker, clock) == []
    due = await redis.zscore(pending, CID)
    assert due is not None and T0 + LOCK_TTL + 9 < due <= T0 + LOCK_TTL + 10  # not T0 + 2 lock TTLs
    clock.now = due
    assert await _recover(worker, clock) == [b"e2"]


async def test_a_push_that_left_the_entry_and_came_back_late_writes_it_after_all(
        redis: Redis, stores: tuple[ConversationStore, ...], clock: Clock) -> None:
    """A push decides to leave the entry (its process wrote it 5 s before), then reaches Redis
    only after the entry came due and recovery forgot it (a stalled loop, a reconnect). Seeing
    its answer come back that late, it writes the entry itself: its process dying holding the
    lock still has its event recovered."""
    a, _, worker = stores
    pending = k.pending_key(k.shard_of(CID, a.shards))
    first = await a.push(CID, b"e1", dedupe_id="m1")  # the entry: T0 + the lock TTL
    assert first.batch is not None
    assert (await a.save(CID, first.batch.token, _req(b"s", first.batch.events))).status == 0
    reached, go = asyncio.Event(), asyncio.Event()
    send = a.fast.send

    async def stalled(commands: Any) -> Any:
        reached.set()
        await go.wait()
        return await send(commands)

    a.fast.send = stalled  # type: ignore[method-assign]
    clock.now = T0 + 5  # a's push leaves the entry: a wrote it 5 s ago
    late = asyncio.create_task(a.push(CID, b"e2", dedupe_id="m2"))
    await reached.wait()
    clock.now = T0 + LOCK_TTL + 1  # still not in Redis when the entry is due: idle, forgotten
    assert await _recover(worker, clock) == []
    assert await redis.zscore(pending, CID) is None
    go.set()
    pushed = await late
    a.fast.send = send  # type: ignore[method-assign]
    assert pushed.batch is not None  # ... and a dies holding the lock
    assert await redis.zscore(pending, CID) == T0 + 2 * LOCK_TTL + 1
    clock.now = T0 + 2 * LOCK_TTL + 1  # its TTL has passed
    assert await _recover(worker, clock) == [b"e2"]


async def test_a_failures_backoff_never_lets_recovery_forget_an_entry_a_push_relies_on(
        redis: Redis, stores: tuple[ConversationStore, ...], clock: Clock) -> None:
    """A failure wants the conversation retried sooner than the pushes' entry: its own member.
    Recovery finds it idle and forgets it while a push that relied on the pushes' entry (written
    by its process just before) arrives; that processor dies: the pushes' entry finds it."""
    a, b, worker = stores
    pending = k.pending_key(k.shard_of(CID, worker.shards))
    first = await a.push(CID, b"e1", dedupe_id="m1")  # the entry: T0 + the lock TTL
    assert first.batch is not None
    assert (await a.save(CID, first.batch.token, _req(b"s", first.batch.events))).status == 0
    clock.now = T0 + 1  # a timer's event, say, reaches b, whose batch fails
    pushed = await b.push(CID, b"t1", dedupe_id="t1")
    assert pushed.batch is not None
    assert await b.record_failure(CID, pushed.batch.token, "boom", park_after=5) == (1, False)
    assert await redis.zscore(pending, CID) == T0 + 1 + LOCK_TTL  # b's push wrote it; kept
    assert await redis.zscore(pending, k.retry_member(CID)) == T0 + 1 + LOCK_TTL / 30
    clock.now = T0 + 2
    assert await _recover(worker, clock) == [b"t1"]  # retried after the backoff
    clock.now = T0 + 3
    due = await worker.pending_due(k.shard_of(CID, worker.shards), clock.now)
    assert due == [(k.retry_member(CID), T0 + 1 + LOCK_TTL / 30)]
    assert await worker.acquire(CID) is None  # idle ... and before recovery forgets the entry:
    again = await a.push(CID, b"e2", dedupe_id="m2")  # no ZADD: a wrote the entry 3 s ago
    assert again.batch is not None  # ... and a dies holding the lock
    await worker.forget_pending(*due[0])
    assert await redis.zscore(pending, CID) == T0 + 1 + LOCK_TTL
    clock.now = T0 + 3 + LOCK_TTL
    assert await _recover(worker, clock) == [b"e2"]


# --- 5. the outbox queue keeps the oldest waiting time -----------------------------------------


async def test_the_outbox_queue_keeps_the_first_score(
        redis: Redis, stores: tuple[ConversationStore, ...], clock: Clock) -> None:
    """The outbox serves conversations oldest first; a later save must not push one back."""
    a, _, _ = stores
    queue = k.outbox_queue_key("acct")
    pushed = await a.push(CID, b"e1")
    assert pushed.batch is not None
    saved = await a.save(CID, pushed.batch.token,
                         _req(b"s1", pushed.batch.events, out=[b"o1"], outbox_account="acct"))
    assert saved.status == 0
    assert await redis.zscore(queue, CID) == T0
    clock.now = T0 + 60
    pushed = await a.push(CID, b"e2")
    assert pushed.batch is not None
    await a.save(CID, pushed.batch.token,
                 _req(b"s2", pushed.batch.events, out=[b"o2"], outbox_account="acct"))
    assert await redis.zscore(queue, CID) == T0
    assert await redis.lrange(KEY.out, 0, -1) == [b"o1", b"o2"]


# --- 6. a save's timers: set ones armed, cancelled ones gone ----------------------------------


async def test_a_save_arms_its_new_timers_and_removes_its_cancelled_ones(
        redis: Redis, stores: tuple[ConversationStore, ...], clock: Clock) -> None:
    """A cancelled timer (a pause answered, a flow moved on) must leave the timer wheel with the
    save that cancels it: left there it would fire a turn the state no longer expects."""
    a, _, _ = stores
    wheel = k.timer_keys(CID, a.shards)[0]
    pushed = await a.push(CID, b"e1")
    assert pushed.batch is not None
    req = _req(b"s1", pushed.batch.events)
    req.timers_set = [(f"{CID}:t1", T0 + 60), (f"{CID}:t2", T0 + 90)]
    assert (await a.save(CID, pushed.batch.token, req)).status == 0
    assert await redis.zrange(wheel, 0, -1, withscores=True) == [(f"{CID}:t1".encode(), T0 + 60),
                                                                (f"{CID}:t2".encode(), T0 + 90)]
    pushed = await a.push(CID, b"e2")
    assert pushed.batch is not None
    req = _req(b"s2", pushed.batch.events)
    req.timers_cancel = [f"{CID}:t1"]
    assert (await a.save(CID, pushed.batch.token, req)).status == 0
    assert await redis.zrange(wheel, 0, -1, withscores=True) == [(f"{CID}:t2".encode(), T0 + 90)]
