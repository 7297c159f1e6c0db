"""A short transcript in the metadata hash (bot/store/transcriptfields.py) on a real Redis: no
list key while it fits, the move to the list at the bound with its numbers, trimming, appends
outside a turn while a batch runs, conversations whose transcript is already a list (an older
version's, or a long one), lead queues, and a model of the list's behaviour that random saves,
appends and reads must match (for a conversation in either layout)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from bot.store import keys as k
from bot.store.conversations import ConversationStore, SaveRequest
from bot.store.transcriptfields import CHUNK, INLINE_MAX, prefixed
from tests import inboxlocks, transcripts

CID = "test:acct:inline"
KEY = k.ConversationKey(CID)
CAP = 5


@pytest.fixture
async def store(redis: Redis) -> AsyncIterator[ConversationStore]:
    made = ConversationStore(redis, transcript_max=CAP)
    yield made
    await made.close()


async def save_entries(store: ConversationStore, *entries: bytes, cid: str = CID,
                       refresh: bool = True) -> tuple[int, int]:
    pushed = await store.push(cid, b"event")
    assert pushed.batch is not None
    req = SaveRequest(state=b"state", processed=1, log=list(entries), refresh_ttl=refresh)
    result = await store.save(cid, pushed.batch.token, req)
    assert result.status == 0
    return result.first, result.last


async def chunk_fields(redis: Redis, cid: str = CID) -> dict[bytes, bytes]:
    raw = await redis.hgetall(k.ConversationKey(cid).meta)
    return {name: value for name, value in raw.items() if name.startswith(b"~t")}


async def in_hash(redis: Redis, cid: str = CID) -> bool:
    """The transcript is in the hash, as compact as the hash: no list key, every value a chunk."""
    key = k.ConversationKey(cid)
    fields = await chunk_fields(redis, cid)
    if not fields:
        return False
    assert not await redis.exists(key.transcript)
    assert all(len(value) <= CHUNK for value in fields.values()), fields
    assert await redis.object("encoding", key.meta) in (b"ziplist", b"listpack")
    return True


def entry(i: int, size: int = 40) -> bytes:
    return f"e{i}:".encode().ljust(size, b".")


async def test_a_short_transcript_lives_in_the_metadata_hash(redis: Redis, store: ConversationStore) -> None:
    assert await save_entries(store, entry(1), entry(2)) == (1, 2)
    assert await store.append_log(CID, [entry(3)]) == 3
    assert await save_entries(store, entry(4)) == (4, 4)
    assert await in_hash(redis)
    assert await store.read_log(CID) == [(n, entry(n)) for n in range(1, 5)]
    assert await store.read_log(CID, 1, 2) == [(2, entry(2)), (3, entry(3))]
    assert await store.read_log(CID, 4) == []
    assert await store.tail_log(CID, 2) == [(3, entry(3)), (4, entry(4))]
    assert (await store.meta(CID))["n"] == "4"
    assert not any(name.startswith("~") for name in await store.meta(CID))  # readers never see the chunks
    assert await redis.ttl(KEY.meta) > 0  # the hash's TTL is the transcript's


async def test_a_save_writes_the_transcript_with_the_metadata_no_rpush(redis: Redis, store: ConversationStore) -> None:
    await save_entries(store, entry(1))
    before = {n: int(v["calls"]) for n, v in (await redis.info("commandstats")).items()}
    await save_entries(store, entry(2), entry(3))
    after = {n: int(v["calls"]) for n, v in (await redis.info("commandstats")).items()}
    ran = {n: c - before.get(n, 0) for n, c in after.items() if c != before.get(n, 0)}
    assert ran["cmdstat_rpush"] == 1, ran  # the event (the lock with it): no transcript RPUSH
    for name in ("cmdstat_hincrby", "cmdstat_hget", "cmdstat_llen", "cmdstat_hdel"):
        assert name not in ran, ran
    assert ran["cmdstat_hgetall"] == 1, ran  # the push's only: the save reads nothing
    assert await store.read_log(CID) == [(1, entry(1)), (2, entry(2)), (3, entry(3))]


@pytest.mark.parametrize("by_save", [True, False])
async def test_a_transcript_too_long_for_the_hash_moves_to_the_list_with_its_numbers(
        redis: Redis, by_save: bool) -> None:
    store = ConversationStore(redis, transcript_max=1000)
    try:
        size = 100
        count = INLINE_MAX // len(prefixed(entry(0, size)))  # as many as fit
        for i in range(1, count + 1):
            await store.append_log(CID, [entry(i, size)])
        assert await in_hash(redis)
        assert await store.read_log(CID, 0, 1000) == [(n, entry(n, size)) for n in range(1, count + 1)]
        nxt = count + 1
        if by_save:
            assert await save_entries(store, entry(nxt, size)) == (nxt, nxt)
        else:
            assert await store.append_log(CID, [entry(nxt, size)]) == nxt
        assert await chunk_fields(redis) == {}
        assert await redis.llen(KEY.transcript) == nxt
        assert await redis.ttl(KEY.transcript) > 0
        assert await store.read_log(CID, 0, 1000) == [(n, entry(n, size)) for n in range(1, nxt + 1)]
        assert await save_entries(store, b"small") == (nxt + 1, nxt + 1)  # a list stays a list
        assert await store.append_log(CID, [b"tiny"]) == nxt + 2
        assert await chunk_fields(redis) == {}
        assert await store.tail_log(CID, 2) == [(nxt + 1, b"small"), (nxt + 2, b"tiny")]
    finally:
        await store.close()


async def test_the_list_a_save_spills_to_expires_with_the_metadata(redis: Redis, store: ConversationStore) -> None:
    """A save that refreshes no TTL (the metadata's was set up to a day before) and moves the
    transcript to the list gives the list the metadata's TTL, not a fresh one: a list that outlived
    its metadata would be taken by the next conversation of that id (a list whose count was lost)."""
    assert await save_entries(store, entry(1)) == (1, 1)
    await redis.expire(KEY.meta, 1000)  # (time passed since the last refresh)
    assert await save_entries(store, b"x" * INLINE_MAX, refresh=False) == (2, 2)
    assert await chunk_fields(redis) == {}
    assert 0 < await redis.ttl(KEY.transcript) <= await redis.ttl(KEY.meta) <= 1000


@pytest.mark.parametrize("kind", ["hash", "list", "marked", "spill"])
async def test_a_full_redis_refuses_a_follow_ups_save_whole(private_redis: Redis, kind: str) -> None:
    """The save's first write (a SETRANGE of nothing for a transcript in the hash, whether the
    script appends what the push read or, marked, reads it again, or moves it to the list; a
    list's RPUSH) is one a full Redis refuses: nothing of the save is applied."""
    store = ConversationStore(private_redis)
    try:
        assert await save_entries(store, b"a") == (1, 1)
        if kind == "list":
            await transcripts.as_list(private_redis, CID, [b"a"])
        pushed = await store.push(CID, b"e1")
        assert pushed.batch is not None
        if kind == "marked":
            assert await store.append_log(CID, [b"x"]) == 2
        before = await transcripts.blobs(private_redis, CID)
        log = [b"y" * (INLINE_MAX + 1)] if kind == "spill" else [b"b"]
        req = SaveRequest(state=b"s2", processed=1, log=log, out=[b"r"], outbox_account="acct")
        await private_redis.config_set("maxmemory-policy", "noeviction")
        await private_redis.config_set("maxmemory", "1")
        try:
            with pytest.raises(ResponseError, match="OOM"):
                await store.save(CID, pushed.batch.token, req)
        finally:
            await private_redis.config_set("maxmemory", "0")
        assert await transcripts.blobs(private_redis, CID) == before
        assert await inboxlocks.events(private_redis, CID) == [b"e1"]
        assert await private_redis.llen(KEY.out) == 0  # type: ignore[misc]
        assert (await store.save(CID, pushed.batch.token, req)).status == 0  # saved once Redis has room
        assert [blob for _, blob in await store.read_log(CID)] == [*before, *log]
    finally:
        await store.close()


@pytest.mark.parametrize("kind", ["first", "in_hash", "spill"])
async def test_a_full_redis_refuses_an_append_outside_the_turn_whole(private_redis: Redis, kind: str) -> None:
    """An append outside a turn (a delivery receipt) into a full Redis is refused, as it was
    when its first write was the count's HINCRBY: a conversation's first entry, an entry into the
    hash, and one that moves the transcript to the list write nothing."""
    store = ConversationStore(private_redis)
    try:
        if kind != "first":
            assert await store.append_log(CID, [b"a"]) == 1
        before = await transcripts.blobs(private_redis, CID)
        meta = await private_redis.hgetall(KEY.meta)
        new = b"y" * (INLINE_MAX + 1) if kind == "spill" else b"b"
        await private_redis.config_set("maxmemory-policy", "noeviction")
        await private_redis.config_set("maxmemory", "1")
        try:
            with pytest.raises(ResponseError, match="OOM"):
                await store.append_log(CID, [new])
        finally:
            await private_redis.config_set("maxmemory", "0")
        assert await transcripts.blobs(private_redis, CID) == before
        assert await private_redis.hgetall(KEY.meta) == meta
        assert await store.append_log(CID, [new]) == len(before) + 1  # appended once Redis has room
    finally:
        await store.close()


async def test_chunks_of_64_bytes_as_older_versions_cut_them_are_read_and_appended_to(
        redis: Redis, store: ConversationStore) -> None:
    """Chunks of 64 bytes (``CHUNK`` before it was 63) read alike: a save appends after them (only
    the last, partial one written again), an append outside the turn cuts them anew."""
    old = [entry(i, 50) for i in range(1, 4)]
    data = b"".join(map(prefixed, old))  # 153 B: 64 + 64 + 25
    await redis.hset(KEY.meta, mapping={"n": "3", "~t": "3,3", "~t0": data[:64], "~t1": data[64:128],
                                        "~t2": data[128:]})
    assert await save_entries(store, entry(4)) == (4, 4)
    fields = await chunk_fields(redis)
    assert fields[b"~t0"] == data[:64] and fields[b"~t1"] == data[64:128] and fields[b"~t"] == b"4,4"
    assert await store.read_log(CID) == [*enumerate(old, 1), (4, entry(4))]
    assert await store.append_log(CID, [entry(5)]) == 5
    assert await in_hash(redis) and max(map(len, (await chunk_fields(redis)).values())) == CHUNK == 63
    assert await store.read_log(CID) == [*enumerate(old, 1), (4, entry(4)), (5, entry(5))]


async def test_an_entry_too_long_for_the_hash_starts_a_list(redis: Redis, store: ConversationStore) -> None:
    big = b"x" * (INLINE_MAX + 1)
    assert await save_entries(store, big) == (1, 1)
    assert await chunk_fields(redis) == {}
    assert await store.read_log(CID) == [(1, big)]


async def test_trimming_in_the_hash_keeps_numbers_and_drops_stale_chunks(redis: Redis,
                                                                         store: ConversationStore) -> None:
    for i in range(1, 6):
        await save_entries(store, entry(i, 150))  # 5 x 152 B: 13 chunks (of 63 B)
    assert len(await chunk_fields(redis)) == 14
    assert await save_entries(store, b"a", b"b") == (6, 7)  # two long ones out, two short in
    assert await in_hash(redis)
    assert len(await chunk_fields(redis)) == 9  # 3 x 152 + 2 x 2 B: 8 chunks and the count
    assert await store.read_log(CID) == [(3, entry(3, 150)), (4, entry(4, 150)), (5, entry(5, 150)),
                                         (6, b"a"), (7, b"b")]
    for i in range(8, 12):
        assert await store.append_log(CID, [entry(i, 10)]) == i
    assert await store.read_log(CID) == [(7, b"b"), *((n, entry(n, 10)) for n in range(8, 12))]
    assert len(await chunk_fields(redis)) == 2  # 52 B: one chunk


async def test_an_append_outside_the_turn_while_a_batch_runs_is_kept_by_its_save(
        redis: Redis, store: ConversationStore) -> None:
    """The save was sent the chunks as the lock taker read them; the append marked the lock, so
    the script appends to what is there (the sent chunks would drop the receipt)."""
    assert await save_entries(store, entry(1)) == (1, 1)
    pushed = await store.push(CID, b"event")
    assert pushed.batch is not None
    assert await store.append_log(CID, [b"receipt"]) == 2
    assert await inboxlocks.marks(redis, CID) == b"+"
    result = await store.save(CID, pushed.batch.token, SaveRequest(state=b"s", processed=1, log=[entry(3)]))
    assert (result.status, result.first, result.last) == (0, 3, 3)
    assert await store.read_log(CID) == [(1, entry(1)), (2, b"receipt"), (3, entry(3))]
    assert await in_hash(redis)
    assert await save_entries(store, entry(4)) == (4, 4)  # unmarked again: the fields sent
    assert await store.read_log(CID) == [(1, entry(1)), (2, b"receipt"), (3, entry(3)), (4, entry(4))]


async def test_an_append_outside_the_turn_that_moves_it_to_the_list_is_followed_by_the_save(
        redis: Redis, store: ConversationStore) -> None:
    assert await save_entries(store, entry(1)) == (1, 1)
    pushed = await store.push(CID, b"event")  # read it in the hash
    assert pushed.batch is not None
    big = b"r" * INLINE_MAX
    assert await store.append_log(CID, [big]) == 2  # moved to the list meanwhile
    result = await store.save(CID, pushed.batch.token, SaveRequest(state=b"s", processed=1, log=[entry(3)]))
    assert (result.status, result.first, result.last) == (0, 3, 3)
    assert await chunk_fields(redis) == {}
    assert await store.read_log(CID) == [(1, entry(1)), (2, big), (3, entry(3))]


async def test_a_save_that_lost_its_lock_writes_no_transcript(redis: Redis, store: ConversationStore) -> None:
    await save_entries(store, entry(1))
    pushed = await store.push(CID, b"event")
    assert pushed.batch is not None
    await redis.lset(KEY.inbox, 0, b"\xc10 other\nevent")  # taken over by another holder
    result = await store.save(CID, pushed.batch.token, SaveRequest(state=b"s", processed=1, log=[entry(2)]))
    assert result.status == -1
    assert await store.read_log(CID) == [(1, entry(1))]


async def list_layout(redis: Redis, entries: list[bytes], *, last: int) -> None:
    """A conversation as the version before this one wrote it: a list and ``n``."""
    await redis.rpush(KEY.transcript, *entries)
    await redis.hset(KEY.meta, mapping={"channel": "test", "n": str(last)})


async def test_a_transcript_already_in_a_list_is_read_and_appended_there(redis: Redis,
                                                                        store: ConversationStore) -> None:
    await list_layout(redis, [b"o3", b"o4"], last=4)
    assert await store.read_log(CID) == [(3, b"o3"), (4, b"o4")]
    assert await save_entries(store, b"s5") == (5, 5)
    assert await store.append_log(CID, [b"a6"]) == 6
    assert await save_entries(store, b"s7", b"s8") == (7, 8)
    assert await chunk_fields(redis) == {}
    assert await store.read_log(CID) == [(4, b"o4"), (5, b"s5"), (6, b"a6"), (7, b"s7"), (8, b"s8")]
    await redis.delete(KEY.transcript)  # expired: it keeps counting, in a list
    assert await store.append_log(CID, [b"a9"]) == 9
    assert await store.read_log(CID) == [(9, b"a9")] and await chunk_fields(redis) == {}


async def test_a_list_whose_count_was_lost_stays_a_list(redis: Redis, store: ConversationStore) -> None:
    await redis.rpush(KEY.transcript, b"x", b"y")
    assert await save_entries(store, b"z", refresh=False) == (3, 3)
    assert await redis.ttl(KEY.transcript) > 0
    assert await store.read_log(CID) == [(1, b"x"), (2, b"y"), (3, b"z")]
    assert await chunk_fields(redis) == {}


async def test_an_old_layout_stream_is_moved_to_a_list_by_the_first_save(redis: Redis,
                                                                        store: ConversationStore) -> None:
    for n, blob in ((3, b"o3"), (4, b"o4")):
        await redis.xadd(KEY.log, {"d": blob}, id=f"{n}-0")
    await redis.set(KEY.counter, 4)
    assert await save_entries(store, b"s5", refresh=False) == (5, 5)  # (a batch that refreshes no TTL)
    assert not await redis.exists(KEY.log, KEY.counter)
    assert await redis.llen(KEY.transcript) == 3 and await chunk_fields(redis) == {}
    assert await redis.ttl(KEY.transcript) > 0  # the list the stream became expires with the conversation
    assert await store.read_log(CID) == [(3, b"o3"), (4, b"o4"), (5, b"s5")]


async def test_a_lead_queue_keeps_its_transcript_in_the_hash(redis: Redis, store: ConversationStore) -> None:
    cid = "lead:42"
    assert await save_entries(store, entry(1), cid=cid) == (1, 1)
    assert await store.append_log(cid, [entry(2)]) == 2
    assert await in_hash(redis, cid)
    assert await store.tail_log(cid, 10) == [(1, entry(1)), (2, entry(2))]


async def test_the_preview_is_read_from_the_hash(redis: Redis, store: ConversationStore) -> None:
    from bot.store import codec
    await save_entries(store, codec.pack_entry({"role": "bot", "text": "hi there", "at": 1.0}),
                       codec.pack_entry({"role": "system", "event": "delivered", "at": 2.0}))
    assert await in_hash(redis)
    meta = await store.meta(CID, with_preview=True)
    assert (meta["preview_role"], meta["preview"]) == ("bot", "hi there")


# ---------------------------------------------------------------------- the list's behaviour, modelled
SIZES = st.sampled_from([0, 1, 30, 63, 64, 127, 128, 200, 400, INLINE_MAX - 2, INLINE_MAX + 5])
ENTRIES = st.lists(SIZES, min_size=1, max_size=4)
OPS = st.lists(st.one_of(st.tuples(st.just("save"), ENTRIES, st.lists(SIZES, max_size=2)),
                         st.tuples(st.just("append"), ENTRIES, st.just([]))), min_size=1, max_size=12)
_ids = itertools.count()


async def _run(url: str, ops: list[tuple[str, list[int], list[int]]], cap: int) -> None:
    redis = Redis.from_url(url)
    store = ConversationStore(redis, transcript_max=cap)
    made = itertools.count(1)
    cids = [f"test:acct:model{next(_ids)}", f"test:acct:model{next(_ids)}"]
    await redis.hset(k.ConversationKey(cids[1]).meta, "n", "0")  # already a list (an older version's)
    model: list[tuple[int, bytes]] = []
    try:
        for op, sizes, between in ops:
            blobs = [str(next(made)).encode().ljust(size, b"-") for size in sizes]
            others = [str(next(made)).encode().ljust(size, b"~") for size in between]
            for cid in cids:
                if op == "append":
                    await store.append_log(cid, blobs)
                    continue
                pushed = await store.push(cid, b"event")
                assert pushed.batch is not None
                if others:
                    await store.append_log(cid, others)
                result = await store.save(cid, pushed.batch.token, SaveRequest(state=b"s", processed=1, log=blobs))
                assert result.status == 0
                assert result.last == len(model) + len(others) + len(blobs)
            for blob in [*others, *blobs]:
                model.append((len(model) + 1, blob))
            kept = model[-cap:]
            for cid in cids:
                assert await store.read_log(cid, 0, 1000) == kept
                assert await store.tail_log(cid, 2) == kept[-2:]
                for after in {0, len(model) - 3, len(model) - 1, len(model)}:
                    assert await store.read_log(cid, after, 2) == [e for e in kept if e[0] > after][:2]
            packed = sum(len(prefixed(blob)) for _, blob in kept)
            assert not (await chunk_fields(redis, cids[1]))  # a list stays a list
            if await chunk_fields(redis, cids[0]):
                assert await in_hash(redis, cids[0]) and packed <= INLINE_MAX
    finally:
        await store.close()
        await redis.aclose()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS, cap=st.sampled_from([1, 3, 8, 1000]))
def test_random_saves_and_appends_read_as_the_list_would(redis_url: str, ops: list[tuple[str, list[int], list[int]]],
                                                         cap: int) -> None:
    asyncio.run(_run(redis_url, ops, cap))
