"""The metadata hash without the state's copies, with short names and '=' ties (statefields.py,
statemeta.py, preview.py), through the readers: the list, the filters, a takeover, a state too
long for the hash and back, a tail of delivery statuses. Real services, a real Redis; time is
the services' clock, moved by hand (no sleeps)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from redis.asyncio import Redis

from bot.engine import events as ev
from bot.runtime.worker import Worker
from bot.server.services import Services
from bot.server.views import summary
from bot.store import codec, preview, statefields
from bot.store import keys as k
from bot.store.indexes import ConversationIndex, Filters
from tests.runtime import test_timer_wakes as tw
from tests.runtime.test_timer_wakes import REMINDER, T0, Clock, _say

svc, clock = tw.svc, tw.clock  # the same fixtures: real services, a clock moved by hand


async def _meta(redis: Redis, cid: str) -> tuple[dict[bytes, bytes], dict[str, str]]:
    raw = await redis.hgetall(k.ConversationKey(cid).meta)
    return raw, statefields.split(raw, cid)[0]


async def test_last_at_survives_a_timer_reply_and_a_persons_message(
        redis: Redis, svc: Services, clock: Clock) -> None:
    cid = "livechat:demo:tie"
    await _say(svc, cid, "hi", "again")
    await svc.leads.idle()
    raw, meta = await _meta(redis, cid)
    assert raw[b"l"] == b"=" and meta["last_at"] == meta["activity"] == f"{T0:.3f}"
    clock.now = T0 + 60
    await _say(svc, cid, "what?", "again")  # the no-answer timer: T0 + 660
    raw, meta = await _meta(redis, cid)
    assert raw[b"l"] == b"=" and meta["last_at"] == f"{T0 + 60:.3f}" == meta["activity"]
    clock.now = T0 + 700
    assert await Worker(svc).fire_timers() == 1  # the reminder: activity moves, last_at stays
    raw, meta = await _meta(redis, cid)
    texts = [codec.unpack(e).get("text") for _, e in await svc.store.read_log(cid, 0, 100)]
    assert REMINDER in texts
    assert meta["activity"] == f"{T0 + 700:.3f}" and meta["last_at"] == f"{T0 + 60:.3f}", (raw, meta)
    clock.now = T0 + 800
    await svc.conversations.deliver(cid, ev.Takeover("ann"), dedupe_id="t1")
    await svc.conversations.deliver(cid, ev.HumanMessage("hello from ann", "ann"), dedupe_id="h1")
    raw, meta = await _meta(redis, cid)
    assert meta["activity"] == f"{T0 + 800:.3f}" and meta["last_at"] == f"{T0 + 60:.3f}", (raw, meta)
    assert meta["owner"] == "human" and meta["owner_user"] == "ann" and meta["status"] == "human"
    assert b"owner" not in raw and b"status" not in raw  # derived from the state, not stored
    clock.now = T0 + 900
    await _say(svc, cid, "still there?", "again")
    raw, meta = await _meta(redis, cid)
    assert raw[b"l"] == b"=" and meta["last_at"] == meta["activity"] == f"{T0 + 900:.3f}"
    row = summary(cid, (await ConversationIndex(redis).metas([cid]))[0])
    assert row["owner"] == "human" and row["owner_user"] == "ann" and row["last_message"] == "still there?"
    assert row["waiting"] and row["waiting_since"] == T0 + 900
    page = await ConversationIndex(redis).page(Filters(status="human"), limit=10)
    assert [c for c, _, _ in page.rows] == [cid]


async def test_takeover_of_a_state_too_long_for_the_hash_and_back(redis: Redis, svc: Services, clock: Clock) -> None:
    """A state in its own key (> INLINE_MAX): the copies are stored beside it; back in the hash:
    dropped, read from the state."""
    cid = "livechat:demo:big"
    await _say(svc, cid, "hi", "again")
    key = k.ConversationKey(cid)
    # make the state long: a variable of 3 KB (as a flow's set_variable would)
    raw_state = await svc.store.state(cid)
    assert raw_state is not None
    state = codec.decode_state(raw_state)
    assert state.run is not None
    state.run.vars["big"] = "x" * 3000
    blob = codec.encode_state(state)
    assert len(blob) > statefields.INLINE_MAX
    # written as a save of this version writes a long state: own key, the copies beside it
    await redis.set(key.state, blob)
    await redis.hset(key.meta, mapping={statefields.COUNT: statefields.IN_KEY, "owner": "bot", "status": "bot",
                                         "chat_status": "answered", "bot": "again", "version": "1",
                                         "step": "ask", "run_status": "waiting", "last_text": "hi"})
    clock.now = T0 + 10
    await svc.conversations.deliver(cid, ev.Takeover("bob"), dedupe_id="t-big")
    raw, meta = await _meta(redis, cid)
    assert raw[statefields.COUNT.encode()] == statefields.IN_KEY.encode()
    assert meta["owner"] == "human" and meta["owner_user"] == "bob" and meta["status"] == "human", meta
    page = await ConversationIndex(redis).page(Filters(status="human"), limit=10)
    assert [c for c, _, _ in page.rows] == [cid]
    # back in the hash (the variable cleared): the copies go, the state says
    state = codec.decode_state(await redis.get(key.state) or b"")
    assert state.run is not None
    state.run.vars.pop("big")
    await redis.set(key.state, codec.encode_state(state))
    clock.now = T0 + 20
    await svc.conversations.deliver(cid, ev.Release(None, "bob", False), dedupe_id="r-big")
    raw, meta = await _meta(redis, cid)
    assert raw[statefields.COUNT.encode()] != statefields.IN_KEY.encode()
    assert not {b"owner", b"owner_user", b"status", b"chat_status", b"bot", b"last_text"} & set(raw), raw
    assert meta["owner"] == "bot" and meta.get("owner_user", "") == "" and meta["status"] == "bot", meta
    page = await ConversationIndex(redis).page(Filters(status="human"), limit=10)
    assert page.rows == []


async def test_preview_when_the_tail_is_all_delivery_statuses(redis: Redis, svc: Services, clock: Clock) -> None:
    cid = "livechat:demo:statuses"
    await _say(svc, cid, "hi", "again")
    entry = {"role": "system", "event": "delivery", "status": "read", "ref": "x", "text": "message read", "at": T0}
    await svc.store.append_log(cid, [codec.pack_entry(entry)] * 12)
    row = summary(cid, (await ConversationIndex(redis).metas([cid]))[0])
    assert row["preview"] == {"role": "bot", "text": "Anything else?"}


async def test_a_tail_of_statuses_reads_a_bounded_window_before_it(
        redis: Redis, svc: Services, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    """Three bot messages in a row on WhatsApp (sent, delivered, read each) leave no visible entry in
    the newest 8: a listing (and each live-feed update) reads the ``DEEPER`` entries before them,
    never the whole transcript (up to transcript_max = 1000 entries); further back: no preview."""
    cid = "livechat:demo:long"
    for i in range(300):  # a long conversation
        clock.now = T0 + i
        await _say(svc, cid, f"m{i}", "again")
    entry = {"role": "system", "event": "delivery", "status": "read", "ref": "x", "text": "message read", "at": T0}
    await svc.store.append_log(cid, [codec.pack_entry(entry)] * 9)
    seen: list[int] = []
    real = preview.found

    def counting(entries: Sequence[bytes]) -> tuple[str, str] | None:
        seen.append(len(entries))
        return real(entries)
    monkeypatch.setattr(preview, "found", counting)
    row = summary(cid, (await ConversationIndex(redis).metas([cid]))[0])
    assert row["preview"] == {"role": "bot", "text": "Anything else?"}
    assert seen == [preview.TAIL, preview.DEEPER], seen  # the tail, then the window before it
    await svc.store.append_log(cid, [codec.pack_entry(entry)] * (preview.TAIL + preview.DEEPER))
    row = summary(cid, (await ConversationIndex(redis).metas([cid]))[0])
    assert row["preview"] is None and seen[2:] == [preview.TAIL, preview.DEEPER], row


async def test_a_long_message_moves_the_state_to_its_key_and_back(redis: Redis, svc: Services, clock: Clock) -> None:
    cid = "livechat:demo:longmsg"
    await _say(svc, cid, "hi", "again")
    clock.now = T0 + 1
    await _say(svc, cid, "y" * 3000, "again")  # the state holds the message: over INLINE_MAX
    raw, _ = await _meta(redis, cid)
    assert raw[statefields.COUNT.encode()] == statefields.IN_KEY.encode()
    assert raw[b"status"] == b"bot" and raw[b"bot"] == b"again" and raw[b"last_text"] == b"y" * 200, raw
    row = summary(cid, (await ConversationIndex(redis).metas([cid]))[0])
    assert row["status"] == "bot" and row["bot"] == "again" and row["last_message"] == "y" * 200
    clock.now = T0 + 2
    await svc.conversations.deliver(cid, ev.Takeover("cy"), dedupe_id="t-cy")
    row = summary(cid, (await ConversationIndex(redis).metas([cid]))[0])
    assert row["status"] == "human" and row["owner_user"] == "cy"
    clock.now = T0 + 3
    await _say(svc, cid, "short", "again")
    raw = await redis.hgetall(k.ConversationKey(cid).meta)
    assert raw[statefields.COUNT.encode()] != statefields.IN_KEY.encode()
    assert not {b"owner", b"owner_user", b"status", b"bot", b"last_text", b"chat_status"} & set(raw), raw
    row = summary(cid, (await ConversationIndex(redis).metas([cid]))[0])
    assert row["status"] == "human" and row["owner_user"] == "cy" and row["last_message"] == "short"


async def test_a_push_meets_a_refresh_time_that_is_no_number(redis: Redis, svc: Services, clock: Clock) -> None:
    """``r`` (when the TTLs were refreshed, in s) unreadable: the push refreshes them, no Lua error."""
    cid = "livechat:demo:badr"
    await _say(svc, cid, "hi", "again")
    await redis.hset(k.ConversationKey(cid).meta, "r", "not-a-number")
    clock.now = T0 + 1
    await _say(svc, cid, "again?", "again")
    assert (await redis.hget(k.ConversationKey(cid).meta, "r") or b"").isdigit()  # refreshed, written anew
    texts = [codec.unpack(e).get("text") for _, e in await svc.store.read_log(cid, 0, 100)]
    assert "again?" in texts  # the push went on
