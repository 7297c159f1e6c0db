"""The transcript (bot/store/transcript.py) on a real Redis: numbering and paging through
saves and out-of-turn appends, trimming, and conversations written in the old layout (a stream
``:log`` and a counter ``:n``), which the first touch moves into the list with their numbers."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from bot.store import keys as k
from bot.store.conversations import ConversationStore, SaveRequest
from tests import inboxlocks

CID = "test:acct:transcript"
KEY = k.ConversationKey(CID)


@pytest.fixture
async def store(redis: Redis) -> AsyncIterator[ConversationStore]:
    made = ConversationStore(redis, transcript_max=5)
    yield made
    await made.close()


async def save_entries(store: ConversationStore, *entries: bytes) -> tuple[int, int]:
    """One processing turn that appends ``entries``: (first, last) numbers the save gave them."""
    pushed = await store.push(CID, b"event")
    assert pushed.batch is not None
    req = SaveRequest(state=b"state", processed=1)
    req.log.extend(entries)
    result = await store.save(CID, pushed.batch.token, req)
    assert result.status == 0
    return result.first, result.last


async def old_layout(redis: Redis, entries: list[bytes], *, first: int = 1) -> None:
    """A conversation as the scripts before issue 14 wrote it: XADD ``<n>-0 d <entry>`` and INCR."""
    for n, entry in enumerate(entries, start=first):
        await redis.xadd(KEY.log, {"d": entry}, id=f"{n}-0")
    await redis.set(KEY.counter, first + len(entries) - 1)
    await redis.hset(KEY.meta, mapping={"channel": "test", "account": "acct"})


async def test_saves_and_appends_number_entries_in_one_sequence_and_pages_read_them(store: ConversationStore) -> None:
    assert await save_entries(store, b"a", b"b") == (1, 2)
    assert await store.append_log(CID, [b"c"]) == 3
    assert await save_entries(store, b"d") == (4, 4)
    assert await store.read_log(CID) == [(1, b"a"), (2, b"b"), (3, b"c"), (4, b"d")]
    assert await store.read_log(CID, 1, 2) == [(2, b"b"), (3, b"c")]
    assert await store.read_log(CID, 4) == []
    assert await store.tail_log(CID, 2) == [(3, b"c"), (4, b"d")]
    assert await store.tail_log(CID, 50) == await store.read_log(CID)
    assert (await store.meta(CID))["n"] == "4"
    assert await store.redis.type(KEY.transcript) == b"none"  # short: in the metadata hash (transcriptfields.py)
    assert not await store.redis.exists(KEY.log, KEY.counter)


async def test_a_trimmed_transcript_keeps_its_numbers(store: ConversationStore) -> None:
    for i in range(8):
        await store.append_log(CID, [f"e{i + 1}".encode()])
    assert await store.read_log(CID) == [(n, f"e{n}".encode()) for n in range(4, 9)]  # the newest 5
    assert await store.read_log(CID, 6, 1) == [(7, b"e7")]
    assert await store.tail_log(CID, 1) == [(8, b"e8")]
    assert await save_entries(store, b"e9", b"e10") == (9, 10)
    assert [n for n, _ in await store.read_log(CID)] == [6, 7, 8, 9, 10]


async def test_a_transcript_that_expired_keeps_counting(store: ConversationStore) -> None:
    await store.redis.hset(KEY.meta, "n", "0")  # a list (tests/store/test_transcript_inline.py: the hash's)
    await store.append_log(CID, [b"a", b"b"])
    await store.redis.delete(KEY.transcript)
    assert await store.read_log(CID) == []
    assert await store.append_log(CID, [b"c"]) == 3
    assert await store.read_log(CID) == [(3, b"c")]


async def test_an_old_layout_transcript_is_read_with_its_numbers_and_moved(redis: Redis,
                                                                           store: ConversationStore) -> None:
    await old_layout(redis, [b"o1", b"o2", b"o3"])
    assert await store.tail_log(CID, 2) == [(2, b"o2"), (3, b"o3")]
    assert not await redis.exists(KEY.log, KEY.counter)  # moved on first touch
    assert await store.read_log(CID) == [(1, b"o1"), (2, b"o2"), (3, b"o3")]
    assert await store.append_log(CID, [b"new"]) == 4
    assert await redis.ttl(KEY.meta) > 0


async def test_an_old_layout_transcript_is_moved_by_the_first_save(redis: Redis, store: ConversationStore) -> None:
    """A trimmed old stream (its head dropped by MAXLEN) keeps its numbers: refs stay valid."""
    await old_layout(redis, [b"o3", b"o4"], first=3)
    assert await save_entries(store, b"s1", b"s2") == (5, 6)
    assert await store.read_log(CID) == [(3, b"o3"), (4, b"o4"), (5, b"s1"), (6, b"s2")]
    assert not await redis.exists(KEY.log, KEY.counter)


async def test_an_old_layout_transcript_is_moved_by_an_append(redis: Redis, store: ConversationStore) -> None:
    await old_layout(redis, [b"o1"])
    assert await store.append_log(CID, [b"receipt"]) == 2
    assert await store.read_log(CID) == [(1, b"o1"), (2, b"receipt")]


async def test_a_conversation_without_a_transcript_reads_empty_and_writes_nothing(redis: Redis,
                                                                                   store: ConversationStore) -> None:
    assert await store.read_log(CID) == []
    assert await store.tail_log(CID) == []
    assert await redis.keys("*") == []


async def test_an_append_outside_the_turn_while_a_batch_runs_is_counted_by_its_save(
        store: ConversationStore, redis: Redis) -> None:
    """The save numbers from the count its lock taker read (no ``HINCRBY``) unless an append
    outside the turn came in between: that append marks the lock, and the save counts anew."""
    assert await save_entries(store, b"a") == (1, 1)
    pushed = await store.push(CID, b"event")  # reads n = 1
    assert pushed.batch is not None and pushed.batch.meta["n"] == "1"
    assert await store.append_log(CID, [b"receipt"]) == 2  # meanwhile: a delivery receipt
    assert await store.append_log(CID, [b"receipt2"]) == 3  # marked once however many come
    assert (await inboxlocks.holder(redis, CID) or ("",))[0] == pushed.batch.token  # still held ...
    assert await inboxlocks.marks(redis, CID) == b"+"  # ... and marked
    assert await store.extend(CID, pushed.batch.token)
    assert await inboxlocks.marks(redis, CID) == b"+"  # a renewal keeps the mark
    req = SaveRequest(state=b"state", processed=1, log=[b"b"])
    result = await store.save(CID, pushed.batch.token, req)
    assert (result.status, result.first, result.last) == (0, 4, 4)  # not 2: those are the receipts'
    assert await store.read_log(CID) == [(1, b"a"), (2, b"receipt"), (3, b"receipt2"), (4, b"b")]
    assert (await store.meta(CID))["n"] == "4"
    assert await save_entries(store, b"c") == (5, 5)  # unmarked: from the count the push read
    assert (await store.meta(CID))["n"] == "5"


async def test_an_append_outside_a_turn_creates_no_lock(store: ConversationStore, redis: Redis) -> None:
    await store.append_log(CID, [b"a"])
    assert not await redis.exists(KEY.inbox)
    await redis.rpush(KEY.inbox, b"plain")  # a lead queue's event by a plain RPUSH: no holder to mark
    await store.append_log(CID, [b"b"])
    assert await redis.lrange(KEY.inbox, 0, -1) == [b"plain"]
