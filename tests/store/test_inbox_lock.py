"""The conversation's lock as its inbox's head entry (``bot/store/inboxlock.py``).

A push whose ``RPUSH`` finds the inbox empty holds the lock; the save pops its batch and the
entry after it in one ``LPOP``, so it never measures the inbox and never drops an event queued
behind it. Each test here fails if a writer's event could be lost, if a processor that is not
the head's holder could pop or renew, or if a header leaked into the events a processor runs.
Time is the stores' clock, never a sleep.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from bot.store import keys as k
from bot.store.conversations import Batch, ConversationStore, SaveRequest
from tests import inboxlocks
from tests.clocks import T0, Clock

CID = "test:acct:headlock"
KEY = k.ConversationKey(CID)
LEAD = "lead:7"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def stores(redis: Redis, clock: Clock) -> AsyncIterator[tuple[ConversationStore, ConversationStore]]:
    made = (ConversationStore(redis, batch=2, clock=clock), ConversationStore(redis, batch=2, clock=clock))
    yield made
    for store in made:
        await store.close()


def _req(events: list[bytes]) -> SaveRequest:
    return SaveRequest(state=b"s", processed=len(events), log=list(events))


async def _started(store: ConversationStore) -> None:
    """One message handled: the transcript's count exists (its first append measures the list)."""
    pushed = await store.push(CID, b"e0", dedupe_id="m0")
    assert pushed.batch is not None
    assert (await store.save(CID, pushed.batch.token, _req(pushed.batch.events))).status == 0


async def _only_the_head_has_a_header(redis: Redis, cid: str = CID) -> None:
    """Whatever becomes the head carries no stale lock: a push not at the head drops its header."""
    rest = await redis.lrange(k.ConversationKey(cid).inbox, 1, -1)
    assert not [e for e in rest if e.startswith(b"\xc1")], rest


async def _calls(redis: Redis) -> dict[str, int]:
    stats = await redis.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


async def test_a_lone_event_is_taken_by_its_rpush_and_released_by_the_saves_lpop(
        redis: Redis, stores: tuple[ConversationStore, ConversationStore]) -> None:
    a, _ = stores
    await _started(a)
    before = await _calls(redis)
    pushed = await a.push(CID, b"e1", dedupe_id="m1")
    assert pushed.batch is not None and pushed.batch.events == [b"e1"]
    assert (await a.save(CID, pushed.batch.token, _req(pushed.batch.events))).status == 0
    after = await _calls(redis)
    ran = {name: n - before.get(name, 0) for name, n in after.items() if n != before.get(name, 0)}
    # the event (and the lock); the release; the transcript in the metadata's HSET (bot/store/savescript.py),
    # a SETRANGE of nothing the save's first write
    assert ran["rpush"] == 1 and ran["lpop"] == 1 and ran["setrange"] == 1, ran
    for name in ("set", "get", "del", "llen", "lindex", "lset", "lpush", "lrange", "ltrim"):
        assert name not in ran, ran
    assert await redis.exists(KEY.inbox) == 0


async def test_events_queued_behind_the_holder_are_kept_and_the_lock_moves_onto_them(
        redis: Redis, stores: tuple[ConversationStore, ConversationStore], clock: Clock) -> None:
    a, b = stores
    first = await a.push(CID, b"e1", dedupe_id="m1")
    assert first.batch is not None
    token = first.batch.token
    assert (await b.push(CID, b"e2", dedupe_id="m2")).batch is None
    clock.now += 10
    saved = await a.save(CID, token, _req(first.batch.events))
    assert saved.status == 1  # e2 waits: the lock is kept, on e2's entry now, renewed
    assert await inboxlocks.events(redis, CID) == [b"e2"]
    assert await inboxlocks.holder(redis, CID) == (token, int(clock.now * 1000) + a.lock_ttl_ms)
    assert (await b.push(CID, b"e3", dedupe_id="m3")).batch is None  # still a's
    await _only_the_head_has_a_header(redis)
    nxt = await a.load(CID, token)
    assert nxt is not None and nxt.events == [b"e2", b"e3"]
    assert (await b.push(CID, b"e4", dedupe_id="m4")).batch is None  # after the load
    assert (await a.save(CID, token, _req(nxt.events))).status == 1
    last = await a.load(CID, token)
    assert last is not None and last.events == [b"e4"]
    assert (await a.save(CID, token, _req(last.events))).status == 0
    assert await redis.exists(KEY.inbox) == 0
    assert [d for _, d in await a.read_log(CID)] == [b"e1", b"e2", b"e3", b"e4"]


async def test_a_save_after_acquire_keeps_what_its_batch_did_not_take(
        redis: Redis, stores: tuple[ConversationStore, ConversationStore]) -> None:
    """Three events left queued without a holder: acquire takes two (batch 2), the save keeps
    the third and the lock on it."""
    _, worker = stores
    await _started(worker)
    await redis.rpush(KEY.inbox, b"e1", b"e2", b"e3")
    taken = await worker.acquire(CID)
    assert isinstance(taken, Batch) and taken.events == [b"e1", b"e2"]
    assert (await worker.save(CID, taken.token, _req(taken.events))).status == 1
    assert await inboxlocks.events(redis, CID) == [b"e3"]
    rest = await worker.load(CID, taken.token)
    assert rest is not None and rest.events == [b"e3"]
    assert (await worker.save(CID, taken.token, _req(rest.events))).status == 0
    assert await redis.exists(KEY.inbox) == 0


async def test_a_lead_queue_written_by_plain_commands_behind_its_holder_keeps_the_event(
        redis: Redis, stores: tuple[ConversationStore, ConversationStore]) -> None:
    a, b = stores
    first = await a.push(LEAD, b"e1", dedupe_id="m1")
    assert first.batch is not None
    pipe = redis.pipeline(transaction=True)
    for command in b.enqueue_commands(LEAD, b"e2"):  # a CRM write's event, in its MULTI/EXEC
        pipe.execute_command(*command)
    await pipe.execute()
    assert (await a.save(LEAD, first.batch.token, _req(first.batch.events))).status == 1
    assert await inboxlocks.events(redis, LEAD) == [b"e2"]
    nxt = await a.load(LEAD, first.batch.token)
    assert nxt is not None and nxt.events == [b"e2"]


async def test_only_the_heads_exact_token_holds_the_lock(
        redis: Redis, stores: tuple[ConversationStore, ConversationStore]) -> None:
    """Tokens are a process prefix and a hex counter: ``<p>-1`` is a prefix of ``<p>-1a``. Only
    ``+`` may follow a holder's token. A refused save puts back what it popped, in order."""
    a, b = stores
    pushed = await a.push(CID, b"e1", dedupe_id="m1")
    assert pushed.batch is not None
    assert (await b.push(CID, b"e2", dedupe_id="m2")).batch is None
    token = pushed.batch.token
    expiry = (await inboxlocks.holder(redis, CID) or ("", 0))[1]
    for other in (token + "a", token + "a+", "x" + token, token[:-1]):
        head = b"\xc1%d %s\ne1" % (expiry, other.encode())
        await redis.lset(KEY.inbox, 0, head)  # type: ignore[misc]
        before = await redis.lrange(KEY.inbox, 0, -1)
        assert (await a.save(CID, token, _req(pushed.batch.events))).status == -1
        assert await a.extend(CID, token) is False
        assert await a.load(CID, token) is None
        assert await redis.lrange(KEY.inbox, 0, -1) == before  # nothing popped for good
        assert await redis.lindex(KEY.inbox, 0) == head  # type: ignore[misc]
    assert await a.read_log(CID) == []  # a refused save took its transcript entries back
    await redis.lset(KEY.inbox, 0, b"\xc1%d %s+\ne1" % (expiry, token.encode()))  # type: ignore[misc]
    assert await a.extend(CID, token) is True  # its own mark: still its lock
    assert (await a.save(CID, token, _req(pushed.batch.events))).status == 1
    assert await inboxlocks.events(redis, CID) == [b"e2"]


async def test_headers_never_reach_the_processor_whatever_the_event_holds(
        redis: Redis, stores: tuple[ConversationStore, ConversationStore], clock: Clock) -> None:
    """Events with spaces, newlines and the header's own byte inside are handed out as pushed,
    by a push, a takeover, a load and recovery's acquire."""
    a, b = stores
    odd = [b"a b\nc", b"\n\n \xc1x", b"x\xc15 t\ny", b""]
    first = await a.push(CID, odd[0])
    assert first.batch is not None and first.batch.events == odd[:1]
    for event in odd[1:]:
        assert (await b.push(CID, event)).batch is None
    clock.now += a.lock_ttl_ms / 1000  # a's time is up: the next push takes over
    taken = await b.push(CID, b"last")
    assert taken.batch is not None and taken.batch.events == odd[:2]
    await _only_the_head_has_a_header(redis)
    assert (await b.save(CID, taken.batch.token, _req(taken.batch.events))).status == 1
    nxt = await b.load(CID, taken.batch.token)
    assert nxt is not None and nxt.events == odd[2:4]
    clock.now += a.lock_ttl_ms / 1000
    again = await a.acquire(CID)
    assert isinstance(again, Batch) and again.events == odd[2:4]
    assert (await a.save(CID, again.token, _req(again.events))).status == 1
    rest = await a.load(CID, again.token)
    assert rest is not None and rest.events == [b"last"]


async def test_every_writer_behind_a_held_lock_keeps_its_event(
        redis: Redis, stores: tuple[ConversationStore, ConversationStore]) -> None:
    """Pushes and out-of-turn transcript appends interleaved behind a held lock: the save
    keeps whatever is queued behind its batch."""
    a, b = stores
    first = await a.push(CID, b"e0", dedupe_id="m0")
    assert first.batch is not None and first.batch.events == [b"e0"]
    await b.append_log(CID, [b"receipt"])  # '+'
    assert (await b.push(CID, b"e1", dedupe_id="m1")).batch is None
    await b.append_log(CID, [b"receipt"])
    assert (await a.save(CID, first.batch.token, _req(first.batch.events))).status == 1
    assert await inboxlocks.events(redis, CID) == [b"e1"]
    nxt = await a.load(CID, first.batch.token)
    assert nxt is not None and nxt.events == [b"e1"]
    assert (await a.save(CID, first.batch.token, _req(nxt.events))).status == 0
    assert await redis.exists(KEY.inbox) == 0
    assert [d for _, d in await a.read_log(CID)] == [b"receipt", b"receipt", b"e0", b"e1"]  # in the order saved


async def test_a_failure_and_a_set_aside_give_the_lock_back_with_the_events_queued(
        redis: Redis, stores: tuple[ConversationStore, ConversationStore]) -> None:
    a, b = stores
    pushed = await a.push(CID, b"e1", dedupe_id="m1")
    assert pushed.batch is not None
    assert await b.record_failure(CID, "not-the-holder", "boom", park_after=5) == (0, False)
    assert await inboxlocks.holder(redis, CID) is not None  # still a's
    assert await a.record_failure(CID, pushed.batch.token, "boom", park_after=5) == (1, False)
    assert await inboxlocks.holder(redis, CID) is None  # free, the event kept
    assert await inboxlocks.events(redis, CID) == [b"e1"]
    taken = await b.acquire(CID)
    assert isinstance(taken, Batch) and taken.events == [b"e1"]
    assert await b.set_aside(CID, taken.token) == (False, 0)  # not parked: given back
    assert await inboxlocks.holder(redis, CID) is None
    assert await redis.lrange(KEY.inbox, 0, -1) == [b"e1"]


async def test_an_older_versions_queue_is_taken_over_and_its_lock_key_ignored(
        redis: Redis, stores: tuple[ConversationStore, ConversationStore]) -> None:
    """Upgrading (older processes stopped first): events an older version queued have no header,
    and its lock key is not read, so the first push runs them before its own, in order."""
    a, _ = stores
    await redis.rpush(KEY.inbox, b"old1", b"old2")
    await redis.set(f"sb:c:{{{CID}}}:lock", "an-older-process", px=30_000)
    pushed = await a.push(CID, b"new", dedupe_id="n1")
    assert pushed.batch is not None and pushed.batch.events == [b"old1", b"old2"]
    assert (await a.save(CID, pushed.batch.token, _req(pushed.batch.events))).status == 1
    rest = await a.load(CID, pushed.batch.token)
    assert rest is not None and rest.events == [b"new"]
    assert (await a.save(CID, pushed.batch.token, _req(rest.events))).status == 0
    assert [d for _, d in await a.read_log(CID)] == [b"old1", b"old2", b"new"]


async def test_a_save_that_fails_after_its_pop_keeps_the_event_after_its_batch(
        redis: Redis, stores: tuple[ConversationStore, ConversationStore]) -> None:
    """Redis does not roll back a script that fails midway: a save whose script errors after its
    ``LPOP`` (here a counter's key of another type) keeps what it wrote. The entry after its
    batch, which no processor has run, must already be back at the head under the holder's lock:
    then the failure is counted (``record_failure`` finds the lock), the lock given back, and the
    event runs later instead of being lost."""
    a, b = stores
    first = await a.push(CID, b"e1", dedupe_id="m1")
    assert first.batch is not None
    token = first.batch.token
    assert (await b.push(CID, b"e2", dedupe_id="m2")).batch is None
    await redis.set("sb:test:not-a-hash", "x")
    req = _req(first.batch.events)
    req.counters.append(("sb:test:not-a-hash", "f", 1))
    with pytest.raises(ResponseError):
        await a.save(CID, token, req)
    assert await inboxlocks.events(redis, CID) == [b"e2"]
    assert (await inboxlocks.holder(redis, CID) or ("", 0))[0] == token
    assert await a.record_failure(CID, token, "WRONGTYPE", park_after=5) == (1, False)
    taken = await b.acquire(CID)
    assert isinstance(taken, Batch) and taken.events == [b"e2"]


@pytest.mark.parametrize("odd", [b"\xc1", b"\xc1garbage", b"\xc1no newline", b"\xc1x y\nz", b"\xc1 t\nz"])
async def test_an_entry_that_only_starts_like_a_header_is_an_event_not_a_stuck_queue(
        redis: Redis, stores: tuple[ConversationStore, ConversationStore], clock: Clock, odd: bytes) -> None:
    """An entry starting with ``0xc1`` without a whole header (no space, no newline, no digits of
    an expiry) is never written by this version, but one that got there (written by hand, by a
    future encoding) must not make every push, acquire and recovery round of its conversation
    fail for ever: it is an event without a header, handed out whole, so the batch that cannot
    decode it fails, is counted, and the conversation parks (a person's retry can skip it)."""
    a, b = stores
    await redis.rpush(KEY.inbox, odd)
    assert await inboxlocks.holder(redis, CID) is None
    await a.postpone_pending(CID, clock.now)
    pushed = await a.push(CID, b"e", dedupe_id="m")
    assert pushed.batch is not None and pushed.batch.events == [odd, b"e"]
    assert await a.record_failure(CID, pushed.batch.token, "cannot decode", park_after=5) == (1, False)
    assert await redis.lrange(KEY.inbox, 0, -1) == [odd, b"e"]
    taken = await b.acquire(CID)
    assert isinstance(taken, Batch) and taken.events == [odd, b"e"]
    assert (await b.save(CID, taken.token, _req(taken.events))).status == 0
    assert await redis.exists(KEY.inbox) == 0


async def test_a_save_that_redis_refuses_for_memory_is_refused_whole(private_redis: Redis, clock: Clock) -> None:
    """A full Redis (``maxmemory``, ``noeviction``) refuses a script for memory only at its first
    write that may grow memory, and only while it has written nothing. A save whose first write
    is its ``LPOP`` (which Redis never refuses) is not refused: it commits the batch and queues
    the reply, while the commands beside it in its round trip are refused (the outbox queue's
    entry that gets the reply sent, the timer's ``ZADD``) and the caller, told OOM, takes the
    batch for not saved: the reply is never sent, the timer never fires. The save must be
    refused whole, as before the lock moved into the inbox: then it is redone once Redis has room."""
    store = ConversationStore(private_redis, clock=clock)
    try:
        pushed = await store.push(CID, b"e1", dedupe_id="m1")
        assert pushed.batch is not None
        token = pushed.batch.token
        req = SaveRequest(state=b"s", processed=1, log=[b"e1"], out=[b"reply"], outbox_account="acct",
                          timers_set=[("t1", T0 + 60)])
        await private_redis.config_set("maxmemory-policy", "noeviction")
        await private_redis.config_set("maxmemory", "1")  # every write that may grow memory is refused
        try:
            with pytest.raises(ResponseError, match="OOM"):
                await store.save(CID, token, req)
        finally:
            await private_redis.config_set("maxmemory", "0")
        assert await inboxlocks.events(private_redis, CID) == [b"e1"]  # nothing committed
        assert await private_redis.llen(KEY.out) == 0  # type: ignore[misc]
        assert (await store.save(CID, token, req)).status == 0  # saved once Redis has room
        assert await private_redis.zscore(k.timer_keys(CID, store.shards)[0], "t1") == T0 + 60
        assert await private_redis.zscore(k.outbox_queue_key("acct"), CID) is not None
    finally:
        await store.close()
