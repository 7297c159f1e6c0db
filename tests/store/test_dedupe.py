"""A conversation's dedupe ids (bot/store/dedupe.py), attacked on a real Redis: an id is a
duplicate for exactly 7 days, in the metadata hash or the sorted set its older ids move to, and
the older layouts' sets are moved on the first push with the same answers. Time is the store's
``clock`` seam, never a sleep (the store guarantees' section 3: tests/store/test_store_guarantees.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from bot.store import dedupe
from bot.store import keys as k
from bot.store.conversations import SEEN_TTL, TTL_REFRESH_EVERY, ConversationStore, SaveRequest
from tests.store.test_store_guarantees import CID, DAY, KEY, LOCK_TTL, MS, T0, Clock, _inbox


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def stores(redis: Redis, clock: Clock) -> AsyncIterator[tuple[ConversationStore, ...]]:
    """Three processes on one Redis, one clock."""
    made = tuple(ConversationStore(redis, lock_ttl=LOCK_TTL, batch=2, clock=clock) for _ in range(3))
    yield made
    for store in made:
        await store.close()


def _req(state: bytes, events: list[bytes]) -> SaveRequest:
    return SaveRequest(state=state, processed=len(events), log=list(events))


async def test_an_id_seen_is_a_record_in_the_metadata_hash_that_lives_as_long_as_it(
        redis: Redis, stores: tuple[ConversationStore, ...]) -> None:
    """No key of its own (issue 14 aim 3): the 8-byte digest and the ms it was seen, in ``~d``
    after the byte that says no older ids are in the sorted set; the hash's TTL is the
    conversation's (longer than the 7-day window)."""
    a, _, _ = stores
    assert SEEN_TTL == 7 * 86400 and TTL_REFRESH_EVERY == DAY
    await a.push(CID, b"e1", dedupe_id="m1")
    await a.push(CID, b"e2", dedupe_id="m2")
    stored = await redis.hget(KEY.meta, dedupe.FIELD)
    at = (int(T0 * MS)).to_bytes(6, "big")
    assert stored == b"0" + k.dedupe_member("m1") + at + k.dedupe_member("m2") + at
    assert await redis.exists(KEY.seen, KEY.old_seen) == 0
    assert await redis.ttl(KEY.meta) > SEEN_TTL + DAY
    assert await dedupe.seen_at(redis, CID, "m1") == T0 * MS
    assert await redis.object("encoding", KEY.meta) in (b"ziplist", b"listpack")


async def test_a_redelivery_six_days_later_is_still_handled_once(
        redis: Redis, stores: tuple[ConversationStore, ...], clock: Clock) -> None:
    a, b, _ = stores
    assert not (await a.push(CID, b"e1", dedupe_id="m1")).duplicate
    clock.now = T0 + 6 * DAY
    assert not (await b.push(CID, b"e2", dedupe_id="m2")).duplicate  # a new id trims the records
    again = await b.push(CID, b"e1", dedupe_id="m1")
    assert again.duplicate and again.batch is None
    clock.now = T0 + 7 * DAY - 1  # the last second of the window
    assert not (await b.push(CID, b"e3", dedupe_id="m3")).duplicate
    assert (await a.push(CID, b"e1", dedupe_id="m1")).duplicate
    assert await _inbox(redis) == [b"e1", b"e2", b"e3"]


async def test_a_redelivery_more_than_seven_days_later_is_accepted_again(
        redis: Redis, stores: tuple[ConversationStore, ...], clock: Clock) -> None:
    a, b, _ = stores
    assert not (await a.push(CID, b"e1", dedupe_id="m1")).duplicate
    clock.now = T0 + 7 * DAY + 1
    assert not (await b.push(CID, b"e2", dedupe_id="m2")).duplicate  # queued behind a
    assert not (await b.push(CID, b"e1", dedupe_id="m1")).duplicate  # too old to count
    assert await _inbox(redis) == [b"e1", b"e2", b"e1"]
    assert await dedupe.seen_at(redis, CID, "m1") == (T0 + 7 * DAY + 1) * 1000
    records, over = dedupe.records(await redis.hgetall(KEY.meta))
    assert sorted(records.values()) == [(T0 + 7 * DAY + 1) * 1000] * 2 and not over  # the old m1 dropped


async def test_ids_are_kept_as_8_byte_digests(redis: Redis, stores: tuple[ConversationStore, ...]) -> None:
    a, _, _ = stores
    live_chat_id = "lc:7ad3db4a99ee433b8904c4816a07618e"
    await a.push(CID, b"e1", dedupe_id=live_chat_id)
    records, _ = dedupe.records(await redis.hgetall(KEY.meta))
    assert list(records) == [k.dedupe_member(live_chat_id)] and len(k.dedupe_member(live_chat_id)) == 8
    assert (await a.push(CID, b"e1", dedupe_id=live_chat_id)).duplicate
    assert not (await a.push(CID, b"e2", dedupe_id="lc:7ad3db4a99ee433b8904c4816a07618f")).duplicate


async def test_ids_beyond_the_hash_move_oldest_first_to_a_sorted_set_and_still_dedupe(
        redis: Redis, stores: tuple[ConversationStore, ...], clock: Clock) -> None:
    """More than ``INLINE`` ids in the window: the oldest ``PER_FIELD`` at a time go to ``d``
    (scored by their ms, TTL the window and a day); every field stays at most 64 bytes; the
    refresh of the TTLs trims the set and, once it is gone, no push reads it."""
    a, b, _ = stores
    n = dedupe.INLINE + 2 * dedupe.PER_FIELD  # two moves
    for i in range(n):
        clock.now = T0 + i
        assert not (await (a, b)[i % 2].push(CID, f"e{i}".encode(), dedupe_id=f"m{i}")).duplicate
    raw = await redis.hgetall(KEY.meta)
    records, over = dedupe.records(raw)
    assert over and len(records) == dedupe.INLINE
    assert all(len(v) <= 64 for v in raw.values())
    assert await redis.object("encoding", KEY.meta) in (b"ziplist", b"listpack")
    assert await redis.zscore(KEY.seen, k.dedupe_member("m0")) == T0 * MS  # moved with its ms
    assert await redis.zcard(KEY.seen) == 2 * dedupe.PER_FIELD
    assert 0 < await redis.ttl(KEY.seen) <= 8 * DAY
    for i in range(n):  # each one a duplicate, in the hash or the set
        assert (await b.push(CID, b"again", dedupe_id=f"m{i}")).duplicate, i
    assert not (await b.push(CID, b"new", dedupe_id="m-new")).duplicate
    await _drain(a)
    clock.now = T0 + 8 * DAY  # the set's ids out of the window: the refresh trims it away
    assert not (await a.push(CID, b"late", dedupe_id="m-late")).duplicate
    assert await redis.exists(KEY.seen) == 0
    records, over = dedupe.records(await redis.hgetall(KEY.meta))
    assert not over and list(records) == [k.dedupe_member("m-late")]
    assert not (await b.push(CID, b"e0", dedupe_id="m0")).duplicate  # 8 days: new again


async def _drain(store: ConversationStore) -> None:
    """Run the conversation's queue empty (one process: the lock free after)."""
    batch = await store.acquire(CID)
    while batch:
        saved = await store.save(CID, batch.token, _req(b"s", batch.events))
        batch = await store.load(CID, batch.token) if saved.status == 1 else None


async def _old_layout_seen(redis: Redis, ids: dict[str, float]) -> None:
    """The dedupe set as versions before issue 14's digests wrote it: the ids themselves, in ``:seen``."""
    await redis.zadd(KEY.old_seen, {i: at * 1000 for i, at in ids.items()})
    await redis.expire(KEY.old_seen, 8 * 86400)


async def _third_wave_seen(redis: Redis, ids: dict[str, float]) -> None:
    """The dedupe set as issue 14's third wave wrote it: digests in ``:d``, and its mark."""
    await redis.zadd(KEY.seen, {k.dedupe_member(i): at * 1000 for i, at in ids.items()})
    await redis.zadd(KEY.seen, {k.SEEN_MARK: float("inf")})
    await redis.expire(KEY.seen, 8 * 86400)


async def test_an_old_layout_dedupe_set_is_moved_into_digests_and_still_dedupes(
        redis: Redis, stores: tuple[ConversationStore, ...], clock: Clock) -> None:
    a, b, _ = stores
    many = {f"lc:{n:032x}": T0 - 60 for n in range(450)}  # more than the hash keeps: all to ``d``
    await _old_layout_seen(redis, {"m1": T0 - 5 * DAY, "timer:x": T0 - 8 * DAY, **many})
    assert not (await a.push(CID, b"e2", dedupe_id="m2")).duplicate  # the first push moves the set
    assert await redis.exists(KEY.old_seen) == 0
    assert await redis.zscore(KEY.seen, k.dedupe_member("m1")) == (T0 - 5 * DAY) * 1000  # its score kept
    # m1 and the pages' ids; timer:x, older than the window, and the mark dropped; m2 in the hash
    assert await redis.zcard(KEY.seen) == 1 + len(many)
    assert await redis.zscore(KEY.seen, k.dedupe_member("timer:x")) is None
    assert 0 < await redis.ttl(KEY.seen) <= 8 * 86400
    records, over = dedupe.records(await redis.hgetall(KEY.meta))
    assert over and list(records) == [k.dedupe_member("m2")]
    assert (await b.push(CID, b"e1", dedupe_id="m1")).duplicate  # seen 5 days ago, in the old set
    assert (await b.push(CID, b"e9", dedupe_id="lc:" + "0" * 29 + "1c1")).duplicate  # the last page's
    assert not (await b.push(CID, b"ex", dedupe_id="timer:x")).duplicate  # 8 days: out of the window
    assert (await b.push(CID, b"e2", dedupe_id="m2")).duplicate
    assert await _inbox(redis) == [b"e2", b"ex"]


async def test_a_third_wave_dedupe_set_is_moved_into_the_hash_and_deleted(
        redis: Redis, stores: tuple[ConversationStore, ...]) -> None:
    """``d`` of issue 14's third wave, and an older ``seen`` beside it: their ids in the window
    become records (oldest first, their ms kept), both keys go."""
    a, b, _ = stores
    await _third_wave_seen(redis, {"m1": T0 - 2 * DAY, "m0": T0 - 8 * DAY, "m3": T0 - 60})
    await _old_layout_seen(redis, {"m2": T0 - DAY})
    assert not (await a.push(CID, b"e4", dedupe_id="m4")).duplicate
    assert await redis.exists(KEY.seen, KEY.old_seen) == 0
    records, over = dedupe.records(await redis.hgetall(KEY.meta))
    assert not over and list(records.items()) == [
        (k.dedupe_member("m1"), (T0 - 2 * DAY) * MS), (k.dedupe_member("m2"), (T0 - DAY) * MS),
        (k.dedupe_member("m3"), (T0 - 60) * MS), (k.dedupe_member("m4"), T0 * MS)]
    for mid in ("m1", "m2", "m3", "m4"):
        assert (await b.push(CID, b"again", dedupe_id=mid)).duplicate, mid
    assert not (await b.push(CID, b"e0", dedupe_id="m0")).duplicate  # 8 days: out of the window
    assert await _inbox(redis) == [b"e4", b"e0"]


async def test_a_redelivery_that_is_the_first_push_after_the_upgrade_is_a_duplicate(
        redis: Redis, stores: tuple[ConversationStore, ...]) -> None:
    a, _, _ = stores
    await _old_layout_seen(redis, {"m1": T0 - 60, "m0": T0 - 8 * DAY})
    assert (await a.push(CID, b"e1", dedupe_id="m1")).duplicate
    assert await redis.exists(KEY.old_seen) == 0  # moved all the same, the hash with a TTL
    assert await dedupe.seen_at(redis, CID, "m1") == (T0 - 60) * 1000  # as first seen
    assert await redis.ttl(KEY.meta) > 0
    assert not (await a.push(CID, b"e0", dedupe_id="m0")).duplicate  # too old: new again
    assert (await a.push(CID, b"e1", dedupe_id="m1")).duplicate
    assert await _inbox(redis) == [b"e0"]


async def test_an_id_outlives_a_conversation_ttl_shorter_than_the_window(redis: Redis, clock: Clock) -> None:
    """``conversation_ttl_days`` below the window (docs/deployment.md suggests lowering it when
    memory runs high): the conversation's keys expire, its id's record must not (a redelivery 4
    days later is still a duplicate, as when the ids had a set of their own, 7 days and a day)."""
    store = ConversationStore(redis, lock_ttl=LOCK_TTL, ttl_days=3, clock=clock)
    try:
        assert not (await store.push(CID, b"e1", dedupe_id="m1")).duplicate
        await _drain(store)
        clock.now = T0 + 4 * DAY
        async for key in redis.scan_iter(match=f"*{{{CID}}}*"):  # what Redis has expired by then
            if 0 < await redis.ttl(key) < 4 * DAY:
                await redis.delete(key)
        assert (await store.push(CID, b"e1", dedupe_id="m1")).duplicate
        assert not (await store.push(CID, b"e2", dedupe_id="m2")).duplicate
    finally:
        await store.close()
