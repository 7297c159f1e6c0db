"""The state kept in the conversation's metadata hash (bot/store/statefields.py): chunks a
compact hash holds, a long state in its own key, and the old layout's key moved on first touch."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from unittest.mock import ANY

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from redis.asyncio import Redis

from bot.store import statefields
from bot.store.conversations import ConversationStore, SaveRequest
from bot.store.keys import ConversationKey, conversation_id, id_fields

CID = "livechat:demo:state"
KEY = ConversationKey(CID)


@pytest.fixture
async def store(redis: Redis) -> AsyncIterator[ConversationStore]:
    made = ConversationStore(redis, lock_ttl=5.0)
    yield made
    await made.close()


#: States as the codec writes them: never starting with the mark of a state kept without its id
#: (``0xc1`` is a byte msgpack never uses; a compact state starts ``0xc1 s``).
STATES = st.binary(max_size=statefields.INLINE_MAX).filter(lambda b: not b.startswith(statefields.IMPLIED))


@given(STATES)
def test_fields_split_round_trip(state: bytes) -> None:
    flat = statefields.fields(state)
    assert flat is not None
    assert all(len(v) <= statefields.CHUNK for v in flat)
    raw = {(n.encode() if isinstance(n, str) else n): (v.encode() if isinstance(v, str) else v)
           for n, v in zip(flat[::2], flat[1::2], strict=True)}
    meta, back = statefields.split({b"step": b"ask", **raw})
    assert meta == {"step": "ask"} and back == state


@given(STATES,
       st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=5), st.booleans())
def test_a_flat_reply_reads_as_its_map(state: bytes, meta: dict[str, str], implied: bool) -> None:
    """``split_flat``'s one pass over a script's reply reads what ``split`` reads of it as a map."""
    flat: list[bytes] = []
    for name, value in [*meta.items(), *((("~i", "1"),) if implied else ()),
                        *zip(*[iter(statefields.fields(state) or [])] * 2, strict=True)]:
        flat += [n.encode() if isinstance(n, str) else n for n in (name, value)]
    cid = "livechat:demo:s1"
    expected = statefields.split(dict(zip(flat[::2], flat[1::2], strict=True)), cid, held=False)
    assert statefields.split_flat(flat, cid) == expected
    assert list(statefields.split_flat(flat, cid)[0]) == list(expected[0])


@given(st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=5))
def test_a_reply_of_text_reads_as_its_map(meta: dict[str, str]) -> None:
    """A reply of ``str`` (a client that decodes) is read by ``split``, as before ``split_flat``'s
    plans: names and values that are not bytes never reach them."""
    assume(not any(name.startswith("~") for name in meta))  # (no state: ``split`` reads its chunks' count)
    cid = "livechat:demo:s1"
    for flat in ([v for item in meta.items() for v in item],
                 [v for name, value in meta.items() for v in (name.encode(), value)]):
        as_map = dict(zip(flat[::2], flat[1::2], strict=True))
        assert statefields.split_flat(flat, cid) == statefields.split(as_map, cid, held=False)


def test_a_long_state_is_not_split() -> None:
    assert statefields.fields(b"x" * (statefields.INLINE_MAX + 1)) is None


async def _save(store: ConversationStore, token: str, state: bytes) -> None:
    assert (await store.save(CID, token, SaveRequest(state=state, processed=1, meta={"step": "ask"}))).status == 0


@given(STATES)
def test_a_state_in_chunks_of_64_bytes_as_older_versions_cut_it_reads_alike(state: bytes) -> None:
    """``CHUNK`` was 64 (63 since: a byte less a chunk in a ziplist): a state cut so reads as it was."""
    old = [state[i:i + 64] for i in range(0, len(state), 64)]
    raw = {b"~": str(len(old)).encode(), **{f"~{k}".encode(): chunk for k, chunk in enumerate(old)}}
    assert statefields.split(raw)[1] == state
    new = statefields.fields(state)
    assert new is not None and all(len(v) <= 63 for v in new[1::2]) and statefields.CHUNK == 63


async def test_a_state_in_chunks_of_64_bytes_is_read_by_the_push_and_written_anew_in_63(
        store: ConversationStore, redis: Redis) -> None:
    """A state an older version cut into 32 chunks of 64 bytes (its longest in the hash): the push
    hands it to the turn whole; the save writes its successor in 63-byte chunks (33 for as long a
    state), read back whole again."""
    old = bytes(range(256)) * 8  # 2,048 B: INLINE_MAX
    await redis.hset(KEY.meta, mapping={"~": "032", **{f"~{k}": old[k * 64:(k + 1) * 64] for k in range(32)}})
    pushed = await store.push(CID, b"e1")
    assert pushed.batch is not None and pushed.batch.state == old and await store.state(CID) == old
    new = old[::-1]
    await _save(store, pushed.batch.token, new)
    chunks = {k: v for k, v in (await redis.hgetall(KEY.meta)).items() if k[:1] == b"~" and k != b"~"}
    assert len(chunks) == 33 and max(map(len, chunks.values())) == 63
    assert await redis.hget(KEY.meta, "~") == b"033" and await store.state(CID) == new
    again = await store.push(CID, b"e2")
    assert again.batch is not None and again.batch.state == new
    assert await redis.object("encoding", KEY.meta) in (b"ziplist", b"listpack")


async def test_a_saved_state_lives_in_a_compact_metadata_hash(store: ConversationStore, redis: Redis) -> None:
    state = bytes(range(256)) * 6  # 1,536 B: 24 chunks, binary
    pushed = await store.push(CID, b"e1", meta={"channel": "livechat"})
    assert pushed.batch is not None and pushed.batch.state is None
    await _save(store, pushed.batch.token, state)
    assert not await redis.exists(KEY.state)
    assert await redis.object("encoding", KEY.meta) in (b"ziplist", b"listpack")
    assert await store.state(CID) == state
    meta = await store.meta(CID)
    assert (meta["channel"], meta["step"]) == ("livechat", "ask") and not any(n.startswith("~") for n in meta)
    again = await store.push(CID, b"e2")
    assert again.batch is not None and again.batch.state == state
    assert "~" not in again.batch.meta and "~0" not in again.batch.meta
    await _save(store, again.batch.token, b"short")  # shorter: the chunks beyond are ignored
    assert await store.state(CID) == b"short"
    third = await store.push(CID, b"e3")
    assert third.batch is not None and third.batch.state == b"short"


async def test_a_long_state_has_its_own_key_and_comes_back_into_the_hash(
        store: ConversationStore, redis: Redis) -> None:
    long = b"L" * (statefields.INLINE_MAX + 1)
    pushed = await store.push(CID, b"e1")
    assert pushed.batch is not None
    await _save(store, pushed.batch.token, long)
    assert await redis.get(KEY.state) == long
    assert await redis.hget(KEY.meta, "~") == b"-"
    assert await store.state(CID) == long
    again = await store.push(CID, b"e2")
    assert again.batch is not None and again.batch.state == long
    await _save(store, again.batch.token, b"small again")
    assert await store.state(CID) == b"small again"
    third = await store.push(CID, b"e3")
    assert third.batch is not None and third.batch.state == b"small again"


@pytest.mark.parametrize("how", ["push", "acquire"])
async def test_the_old_layouts_state_key_is_moved_into_the_hash_by_the_lock_taker(
        store: ConversationStore, redis: Redis, how: str) -> None:
    """A conversation an older version wrote: the state in ``sb:c:{<cid>}:state``, no ``~``."""
    old = b"\xc1" + bytes(range(200))
    await redis.set(KEY.state, old, ex=3600)
    await redis.hset(KEY.meta, mapping={"channel": "livechat", "n": "3"})
    assert await store.state(CID) == old  # readers see it before the move
    if how == "push":
        pushed = await store.push(CID, b"e1")
        batch = pushed.batch
    else:
        await redis.rpush(KEY.inbox, b"e1")
        got = await store.acquire(CID)
        batch = got or None
    assert batch is not None and batch.state == old and batch.meta["n"] == "3"
    assert not await redis.exists(KEY.state)  # moved, once
    assert await redis.hget(KEY.meta, "~") == b"4"
    assert await store.state(CID) == old
    assert (await store.save(CID, batch.token, SaveRequest(state=None, processed=1))).status == 0
    again = await store.push(CID, b"e2")
    assert again.batch is not None and again.batch.state == old  # unchanged state: from the hash


async def test_a_long_state_of_the_old_layout_stays_in_its_key(store: ConversationStore, redis: Redis) -> None:
    long = b"L" * (statefields.INLINE_MAX + 1)
    await redis.set(KEY.state, long)
    pushed = await store.push(CID, b"e1")
    assert pushed.batch is not None and pushed.batch.state == long
    assert await redis.get(KEY.state) == long and not await redis.hexists(KEY.meta, "~")


@given(st.text(min_size=1), st.text(min_size=1), st.text(min_size=1))
def test_the_fields_an_id_holds_are_read_back_from_it(channel: str, account: str, external_id: str) -> None:
    cid = conversation_id(channel, account, external_id)
    assert id_fields(cid) == {"channel": channel, "account": account, "external_id": external_id}


def test_other_ids_hold_no_fields() -> None:
    assert id_fields("lead:12") == {} and id_fields("a:b:c:d") == {}
    assert id_fields("a:b%41:d") == {}  # not as conversation_id writes it ("A" stays "A")
    assert id_fields("a:b%3Ac:d") == {"channel": "a", "account": "b:c", "external_id": "d"}


async def test_the_push_stores_no_field_the_id_holds_and_readers_get_them(
        store: ConversationStore, redis: Redis) -> None:
    meta = {"channel": "livechat", "account": "demo", "external_id": "state", "name": "Ann"}
    pushed = await store.push(CID, b"e1", meta=meta)
    assert pushed.batch is not None and pushed.batch.meta | meta == pushed.batch.meta
    stored = await redis.hgetall(KEY.meta)
    assert b"name" in stored and not {b"channel", b"account", b"external_id"} & set(stored)
    assert (await store.meta(CID)).items() >= meta.items()
    other = await store.push(CID, b"e2", meta={"channel": "telegram"})  # not what the id holds: kept
    assert await redis.hget(KEY.meta, "channel") == b"telegram"
    assert other.batch is None and (await store.meta(CID))["channel"] == "telegram"


async def test_only_a_channel_that_sends_every_id_field_gets_them_from_the_id(
        store: ConversationStore, redis: Redis) -> None:
    """A conversation whose channel sends no external id has none (no identity, no CRM lead)."""
    await store.push(CID, b"e1", meta={"channel": "livechat", "account": "demo"})
    assert await store.meta(CID) == {"channel": "livechat", "account": "demo", "ttl_at": ANY}
    assert await redis.hget(KEY.meta, "channel") == b"livechat"


async def test_a_metadata_hash_that_stores_the_id_fields_reads_the_same(store: ConversationStore, redis: Redis) -> None:
    """An older version stored them: they stay (equal to what the id holds), nothing else changes."""
    await redis.hset(KEY.meta, mapping={"channel": "livechat", "account": "demo", "external_id": "state"})
    assert await store.meta(CID) == {"channel": "livechat", "account": "demo", "external_id": "state"}
    assert await store.meta("livechat:demo:nobody") == {}  # a conversation that does not exist has none


_TIMES = st.sampled_from(["", "1.000", "2.000", "3.000"])


@given(st.lists(st.fixed_dictionaries({}, optional={"activity": _TIMES, "last_at": _TIMES, "step_at": _TIMES}),
                max_size=6))
def test_times_tied_to_the_activity_read_back_as_written(saves: list[dict[str, str]]) -> None:
    """Saves of ``activity``, ``last_at``, ``step_at`` (``tie``: ``=`` for one equal to the
    activity) read back as the values written, whatever moved in between."""
    stored: dict[bytes, bytes] = {}
    expected: dict[str, str] = {}
    for new in saves:
        old = statefields.split(stored)[0]
        writes = {name: value for name, value in new.items() if old.get(name, "") != value}
        statefields.tie(old, new, writes)
        stored.update({statefields.SHORT[name].encode(): value.encode() for name, value in writes.items()})
        expected.update(new)
        assert {n: v for n, v in statefields.split(stored)[0].items() if v} == {n: v for n, v in expected.items() if v}


def test_a_time_equal_to_the_activity_is_stored_as_one_byte() -> None:
    writes = {"activity": "5.000", "last_at": "5.000", "step_at": "4.000"}
    statefields.tie({}, writes, writes)
    assert writes == {"activity": "5.000", "last_at": "=", "step_at": "4.000"}
    later = {"activity": "6.000"}  # a timer's turn: last_at stays 5.000, written out again
    statefields.tie(statefields.split({b"a": b"5.000", b"l": b"=", b"s": b"4.000"})[0], later, later)
    assert later == {"activity": "6.000", "last_at": "5.000"}


@given(STATES, st.dictionaries(st.sampled_from(["l", "a", "s", "r", "ttl_at", "ws", "x", "step", "bot", "é"]),
                               st.sampled_from(["", "=", "12.5", "ask", "ü"]), max_size=6),
       st.booleans(), st.randoms(use_true_random=False))
def test_a_flat_reply_in_any_field_order_reads_as_its_map_with_its_plan_reused(
        state: bytes, meta: dict[str, str], implied: bool, rnd: random.Random) -> None:
    """``split_flat`` reads a reply by a plan per sequence of field names (the chunks anywhere among
    the metadata, as a hash's order has them): what ``split`` reads of it as a map, and the same
    again for another reply of the same names (the plan reused, the values its own)."""
    pairs = [*meta.items(), *((("~i", "1"),) if implied else ()),
             *zip(*[iter(statefields.fields(state) or [])] * 2, strict=True)]
    rnd.shuffle(pairs)
    cid = "livechat:demo:s1"
    for suffix in ("", "9"):  # the second reply: the same names, other values
        flat = [x.encode() if isinstance(x, str) else x
                for name, value in pairs
                for x in (name, value if name[:1] in ("~", b"~") else f"{value}{suffix}")]
        expected = statefields.split(dict(zip(flat[::2], flat[1::2], strict=True)), cid, held=False)
        got = statefields.split_flat(flat, cid)
        assert got == expected and list(got[0]) == list(expected[0])
