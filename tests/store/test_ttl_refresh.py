"""A conversation's key TTLs are refreshed at most once a day (``TTL_REFRESH_EVERY``), not on every
message: by the push that takes the lock when ``ttl_at`` is a day old, then by that batch's save.
Keys created in between get their TTL when created. Time is the store's ``clock``; a real Redis.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from bot.store import dedupe
from bot.store import keys as k
from bot.store.conversations import SEEN_TTL, TTL_REFRESH_EVERY, ConversationStore, SaveRequest
from bot.store.transcriptfields import INLINE_MAX
from tests.store.test_store_guarantees import DAY, SLACK_MS, T0, Clock

CID = "test:acct:ttl"
KEY = k.ConversationKey(CID)
TTL = 90 * 86400


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def store(redis: Redis, clock: Clock) -> AsyncIterator[ConversationStore]:
    made = ConversationStore(redis, lock_ttl=30.0, ttl_days=90, clock=clock)
    yield made
    await made.close()


async def _turn(store: ConversationStore, event: bytes, dedupe_id: str, *, log: bool = True) -> bool:
    """Push, save what the batch holds; returns whether the batch refreshed the TTLs."""
    pushed = await store.push(CID, event, dedupe_id=dedupe_id, meta={"channel": "test"})
    assert pushed.batch is not None
    entry = event.ljust(INLINE_MAX + 1, b".")  # too long for the hash: the transcript is a list (transcriptfields.py)
    req = SaveRequest(state=b"s-" + event, processed=len(pushed.batch.events), log=[entry] if log else [],
                      refresh_ttl=pushed.batch.refresh_ttl)
    assert (await store.save(CID, pushed.batch.token, req)).status == 0
    return pushed.batch.refresh_ttl


async def test_the_first_push_refreshes_then_none_until_a_day_has_passed(
        redis: Redis, store: ConversationStore, clock: Clock) -> None:
    assert TTL_REFRESH_EVERY == DAY
    assert await _turn(store, b"e1", "m1")
    assert await redis.hget(KEY.meta, "r") == str(int(T0)).encode()  # ``ttl_at`` as stored: s
    for key in (KEY.meta, KEY.transcript):
        assert TTL * 1000 - SLACK_MS < await redis.pttl(key) <= TTL * 1000
    assert await redis.exists(KEY.seen) == 0  # the dedupe ids are in the metadata (bot/store/dedupe.py)

    await redis.expire(KEY.meta, 1000)  # marks: a refresh would set them back to 90 days
    await redis.expire(KEY.transcript, 1000)
    clock.now = T0 + DAY - 1
    assert not await _turn(store, b"e2", "m2")
    for key in (KEY.meta, KEY.transcript):
        assert 0 < await redis.ttl(key) <= 1000, key

    clock.now = T0 + DAY
    assert await _turn(store, b"e3", "m3")
    assert await redis.hget(KEY.meta, "r") == str(int(T0 + DAY)).encode()
    for key in (KEY.meta, KEY.transcript):
        assert await redis.ttl(key) > TTL - 60, key


async def test_a_transcript_created_between_refreshes_gets_its_ttl_at_once(
        redis: Redis, store: ConversationStore, clock: Clock) -> None:
    assert await _turn(store, b"e1", "m1", log=False)  # refreshed, but no transcript yet
    assert await redis.exists(KEY.transcript) == 0
    clock.now = T0 + 3600
    assert not await _turn(store, b"e2", "m2")
    assert TTL - 60 < await redis.ttl(KEY.transcript) <= TTL


async def test_an_ids_record_leaves_the_metadata_with_the_next_id_after_the_dedupe_window(
        redis: Redis, store: ConversationStore, clock: Clock) -> None:
    await _turn(store, b"e1", "m1")
    clock.now = T0 + 3 * DAY
    await _turn(store, b"e2", "m2")  # nothing old enough to drop yet
    assert len(dedupe.records(await redis.hgetall(KEY.meta))[0]) == 2
    clock.now = T0 + SEEN_TTL + 1
    await _turn(store, b"e3", "m3")  # drops m1, older than the window
    records, _ = dedupe.records(await redis.hgetall(KEY.meta))
    assert list(records) == [k.dedupe_member("m2"), k.dedupe_member("m3")]


async def test_a_refresh_is_due_after_a_tenth_of_a_ttl_shorter_than_ten_days(redis: Redis, clock: Clock) -> None:
    short = ConversationStore(redis, ttl_days=1, clock=clock)
    try:
        assert short.refresh_every == 8640
        pushed = await short.push(CID, b"e1", meta={"channel": "test"})
        assert pushed.batch is not None and pushed.batch.refresh_ttl
        await short.save(CID, pushed.batch.token, SaveRequest(state=b"s", processed=1))
        clock.now = T0 + 8640
        pushed = await short.push(CID, b"e2")
        assert pushed.batch is not None and pushed.batch.refresh_ttl
    finally:
        await short.close()
