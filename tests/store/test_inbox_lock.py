"""The save's knowledge of the inbox's length (``conversations.py``, "The inbox's length").

A save drops the inbox (and the lock) only when the inbox holds no more than the batch
processed. It takes the length from the lock taker (the push's ``RPUSH`` reply, acquire's
``LLEN``) unless a push queued behind the lock since (the lock's ``*`` mark), after a ``load``,
or for a queue that plain commands write (``enqueue_commands``: the lead queues). Each test
here fails if the save trusted a length it may not: an event queued meanwhile would be dropped
with the inbox. Lock expiry is driven by deleting the lock key, never by sleeping. Also: every
writer behind a held lock keeps its event, and the lock stays short however many push behind it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import cast

import pytest
from redis.asyncio import Redis

from bot.store import keys as k
from bot.store.conversations import Batch, ConversationStore, SaveRequest

CID = "test:acct:length"
KEY = k.ConversationKey(CID)
LEAD = "lead:7"


@pytest.fixture
async def stores(redis: Redis) -> AsyncIterator[tuple[ConversationStore, ConversationStore]]:
    made = (ConversationStore(redis, batch=2), ConversationStore(redis, batch=2))
    yield made
    for store in made:
        await store.close()


def _req(events: list[bytes]) -> SaveRequest:
    return SaveRequest(state=b"s", processed=len(events), log=list(events))


async def _inbox(redis: Redis, key: k.ConversationKey = KEY) -> list[bytes]:
    return cast(list[bytes], await redis.lrange(key.inbox, 0, -1))


async def _started(store: ConversationStore) -> None:
    """One message handled: the transcript's count exists (its first append measures the list)."""
    pushed = await store.push(CID, b"e0", dedupe_id="m0")
    assert pushed.batch is not None
    assert (await store.save(CID, pushed.batch.token, _req(pushed.batch.events))).status == 0


async def _llens(redis: Redis) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get("cmdstat_llen", {}).get("calls", 0))


async def test_a_save_that_took_a_lone_event_releases_without_reading_the_length(
        redis: Redis, stores: tuple[ConversationStore, ConversationStore]) -> None:
    a, _ = stores
    await _started(a)
    pushed = await a.push(CID, b"e1", dedupe_id="m1")
    assert pushed.batch is not None
    before = await _llens(redis)
    assert (await a.save(CID, pushed.batch.token, _req(pushed.batch.events))).status == 0
    assert await _llens(redis) == before
    assert await redis.exists(KEY.inbox, KEY.lock) == 0


async def test_a_push_queued_behind_the_holder_marks_the_lock_and_its_save_keeps_the_event(
        redis: Redis, stores: tuple[ConversationStore, ConversationStore]) -> None:
    a, b = stores
    first = await a.push(CID, b"e1", dedupe_id="m1")
    assert first.batch is not None
    assert (await b.push(CID, b"e2", dedupe_id="m2")).batch is None
    assert await redis.get(KEY.lock) == first.batch.token.encode() + b"*"
    saved = await a.save(CID, first.batch.token, _req(first.batch.events))
    assert saved.status == 1  # e2 waits: the lock is kept
    assert await _inbox(redis) == [b"e2"]
    nxt = await a.load(CID, first.batch.token)
    assert nxt is not None and nxt.events == [b"e2"]
    assert await redis.get(KEY.lock) == first.batch.token.encode()  # unmarked by the load
    # after a load the length is not known: a push queued now is kept as well
    assert (await b.push(CID, b"e3", dedupe_id="m3")).batch is None
    await redis.set(KEY.lock, first.batch.token)  # even unmarked (as a plain RPUSH leaves it) …
    assert (await a.save(CID, first.batch.token, _req(nxt.events))).status == 1  # … it measures
    assert await _inbox(redis) == [b"e3"]
    last = await a.load(CID, first.batch.token)
    assert last is not None and last.events == [b"e3"]
    assert (await a.save(CID, first.batch.token, _req(last.events))).status == 0
    assert await redis.exists(KEY.inbox, KEY.lock) == 0


async def test_a_save_after_acquire_takes_the_length_acquire_read(
        redis: Redis, stores: tuple[ConversationStore, ConversationStore]) -> None:
    """Three events left queued (a crashed processor's): acquire reads two of them (batch 2) and
    the length 3, so the save keeps the lock for the third."""
    _, worker = stores
    await _started(worker)
    await redis.rpush(KEY.inbox, b"e1", b"e2", b"e3")
    taken = await worker.acquire(CID)
    assert isinstance(taken, Batch) and taken.events == [b"e1", b"e2"]
    before = await _llens(redis)
    assert (await worker.save(CID, taken.token, _req(taken.events))).status == 1
    assert await _llens(redis) == before  # the length acquire read
    assert await _inbox(redis) == [b"e3"]
    rest = await worker.load(CID, taken.token)
    assert rest is not None and rest.events == [b"e3"]
    assert (await worker.save(CID, taken.token, _req(rest.events))).status == 0
    assert await redis.exists(KEY.inbox, KEY.lock) == 0


async def test_a_lead_queue_written_by_plain_commands_is_measured_by_its_save(
        redis: Redis, stores: tuple[ConversationStore, ConversationStore]) -> None:
    a, b = stores
    with pytest.raises(ValueError):  # a conversation's queue: its saves trust the lock's marks
        a.enqueue_commands(CID, b"e")
    lead = k.ConversationKey(LEAD)
    first = await a.push(LEAD, b"e1", dedupe_id="m1")
    assert first.batch is not None
    pipe = redis.pipeline(transaction=True)
    for command in b.enqueue_commands(LEAD, b"e2"):  # a CRM write's event: the lock is not marked
        pipe.execute_command(*command)
    await pipe.execute()
    assert await redis.get(lead.lock) == first.batch.token.encode()
    assert (await a.save(LEAD, first.batch.token, _req(first.batch.events))).status == 1
    assert await _inbox(redis, lead) == [b"e2"]


async def test_a_lock_holding_a_longer_token_or_marks_after_another_is_not_owned(
        redis: Redis, stores: tuple[ConversationStore, ConversationStore]) -> None:
    """Tokens are a process prefix and a hex counter: ``<p>-1`` is a prefix of ``<p>-1a``. Only
    ``+`` and ``*`` may follow a holder's token."""
    a, _ = stores
    pushed = await a.push(CID, b"e1", dedupe_id="m1")
    assert pushed.batch is not None
    token = pushed.batch.token
    for other in (token + "a", token + "a*", token + "*a", "x" + token):
        await redis.set(KEY.lock, other)
        assert (await a.save(CID, token, _req(pushed.batch.events))).status == -1
        assert await a.extend(CID, token) is False
        assert await a.load(CID, token) is None
        assert await redis.get(KEY.lock) == other.encode()
    await redis.set(KEY.lock, token + "+*+")  # its own marks: still its lock
    assert await a.extend(CID, token) is True
    assert (await a.save(CID, token, _req(pushed.batch.events))).status == 0
    assert await _inbox(redis) == []


async def test_the_lock_stays_short_however_many_pushes_queue_behind_it(
        redis: Redis, stores: tuple[ConversationStore, ConversationStore]) -> None:
    """One ``*`` says all the save needs; every push behind a held lock appends another."""
    a, b = stores
    first = await a.push(CID, b"e0", dedupe_id="m0")
    assert first.batch is not None
    token = first.batch.token
    for i in range(1, 2001):  # a burst while the batch runs (its lock renewed by extend)
        assert (await b.push(CID, b"e", dedupe_id=f"m{i}")).batch is None
        if i % 500 == 0:
            assert await a.extend(CID, token)
    length = await redis.strlen(KEY.lock)
    assert length <= len(token) + 2


async def test_every_writer_behind_a_held_lock_keeps_its_event(
        redis: Redis, stores: tuple[ConversationStore, ConversationStore]) -> None:
    """Pushes, wakes and out-of-turn transcript appends interleaved behind a held lock: the save
    keeps whatever is queued behind its batch."""
    a, b = stores
    first = await a.push(CID, b"e0", dedupe_id="m0")
    assert first.batch is not None and first.batch.events == [b"e0"]
    await b.append_log(CID, [b"receipt"])  # '+'
    assert (await b.push(CID, b"e1", dedupe_id="m1")).batch is None  # '*'
    await b.append_log(CID, [b"receipt"])  # '+' after the '*'
    assert (await a.save(CID, first.batch.token, _req(first.batch.events))).status == 1
    assert await redis.lrange(KEY.inbox, 0, -1) == [b"e1"]
    nxt = await a.load(CID, first.batch.token)
    assert nxt is not None and nxt.events == [b"e1"]
    assert (await a.save(CID, first.batch.token, _req(nxt.events))).status == 0
    assert await redis.exists(KEY.inbox, KEY.lock) == 0
