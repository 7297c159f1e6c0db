"""The lock's ``*`` mark (conversations.py, "The inbox's length"): the paths that queue behind a
held lock, and a lock that stays short however many do."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from bot.store import keys as k
from bot.store.conversations import ConversationStore, SaveRequest

CID = "test:acct:review"
KEY = k.ConversationKey(CID)


@pytest.fixture
async def stores(redis: Redis) -> AsyncIterator[tuple[ConversationStore, ConversationStore]]:
    made = (ConversationStore(redis, batch=2), ConversationStore(redis, batch=2))
    yield made
    for store in made:
        await store.close()


def _req(events: list[bytes]) -> SaveRequest:
    return SaveRequest(state=b"s", processed=len(events), log=list(events))


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
