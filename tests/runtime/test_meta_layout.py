"""A conversation's bytes in Redis (issue 14 aim 3): its metadata stores no empty value and
its customer entries keep a hex message id as 16 bytes; a conversation an older version wrote
(empty fields, ``ix_src`` of three empty values, an 18 character ``activity``, entries with the
id as text) is read, listed and continued as before. Real services, the embedded CRM, a real Redis.
"""

from __future__ import annotations

from redis.asyncio import Redis

from bot.engine import events as ev
from bot.server.services import Services
from bot.server.views import summary
from bot.store import codec, statefields
from bot.store import keys as k
from bot.store.indexes import ConversationIndex, Filters
from tests import transcripts
from tests.runtime import test_message_costs as costs

SESSION = "4f1c2a"
CID = f"livechat:demo:{SESSION}"
svc = costs.svc  # the same services fixture: real services, the greeter bot
IDS = ("7ad3db4a99ee433b8904c4816a07618e", "1492b13946ca4f35b2bd5409a4a2d418", "40cef9ad86764807bc134eba120cadf2")


async def _send(svc: Services, mid: str, text: str) -> None:
    result = await svc.conversations.deliver(
        CID, ev.InboundMessage(text=text, message_id=mid, greeting="greeter"), dedupe_id=f"lc:{mid}",
        meta={"channel": "livechat", "account": "demo", "external_id": SESSION},
        entry_extra={"client_msg_id": mid})
    assert not result.duplicate
    await svc.leads.idle()


async def _entries(svc: Services) -> list[dict[str, object]]:
    return [codec.unpack(raw) for _, raw in await svc.store.read_log(CID, 0, 100)]


async def test_the_metadata_stores_no_empty_value_and_ids_are_kept_as_bytes(svc: Services, redis: Redis) -> None:
    await _send(svc, IDS[0], "hello")
    await _send(svc, IDS[1], "more")
    raw = {name.decode(): value for name, value in (await redis.hgetall(k.ConversationKey(CID).meta)).items()}
    assert not [name for name, value in raw.items() if value == b""], raw
    assert "x" not in raw and "company_id" not in raw and "owner_user" not in raw  # nothing to keep
    assert len(raw["a"]) == 14 and raw["l"] == b"="  # activity: seconds and ms; last_at: the same (tie)
    blobs = await transcripts.blobs(redis, CID)
    assert [IDS[0] in b.decode("latin-1") for b in blobs] == [False] * 4  # as 16 bytes, not as text
    assert bytes.fromhex(IDS[0]) in blobs[0] and bytes.fromhex(IDS[1]) in blobs[2]
    users = [e for e in await _entries(svc) if e["role"] == "user"]
    assert [(e["message_id"], e["client_msg_id"]) for e in users] == [(IDS[0], IDS[0]), (IDS[1], IDS[1])]


async def test_a_conversation_in_the_older_layout_reads_lists_and_continues(svc: Services, redis: Redis) -> None:
    await _send(svc, IDS[0], "hello")
    key = k.ConversationKey(CID)
    # As an older version left it: empty fields, an ix_src of three empty values, an activity as
    # repr() wrote it, and the entries with their ids as text (the compact form before).
    entries = await _entries(svc)
    older = [codec.COMPACT + b"e" + codec.pack({codec._INDEX.get(name, name): value for name, value in e.items()})
             for e in entries]
    assert IDS[0].encode() in older[0]
    await transcripts.as_list(redis, CID, older)
    await redis.hdel(key.meta, "a", "s")  # (their long names below, as an older version wrote them)
    await redis.hset(key.meta, mapping={"company_id": "", "owner_user": "", "ix_src": "\x1f\x1f",
                                        "activity": "1796582945.9313771", "step_at": ""})
    assert await _entries(svc) == entries  # read as written

    page = await ConversationIndex(redis).page(Filters(), limit=10)
    assert [cid for cid, _, _ in page.rows] == [CID]
    row = summary(CID, page.rows[0][2])
    assert row["last_activity"] == 1796582945.9313771 and row["owner_user"] is None
    assert row["preview"] == {"role": "bot", "text": "Thanks there: hello"}

    await _send(svc, IDS[1], "again")  # continued: the next entries in the new form, after the old
    after = await _entries(svc)
    assert after[:2] == entries and [e["text"] for e in after[2:]] == ["again", "Thanks there: again"]
    assert after[2]["client_msg_id"] == IDS[1]
    raw = await redis.hgetall(key.meta)
    meta, state = statefields.split(raw, CID)
    assert state is not None and meta["n"] == "4" and len(meta["activity"]) == 14
    assert raw[b"company_id"] == b"" and meta["ix_src"] == ""  # kept (empty), not added; ix_src read as x
    page = await ConversationIndex(redis).page(Filters(status="bot"), limit=10)
    assert [cid for cid, _, _ in page.rows] == [CID]
    assert summary(CID, page.rows[0][2])["preview"] == {"role": "bot", "text": "Thanks there: again"}


#: The fields an older version (before issue 14's fifth wave) stored beside a state in the hash:
#: copies of the state's, the list's preview, the long names, ``ttl_at`` in ms.
OLDER = {"owner": "bot", "chat_status": "answered", "bot": "greeter", "version": "1", "step": "ask",
         "run_status": "waiting", "status": "bot", "last_text": "hello", "preview_role": "bot",
         "preview": "Thanks there: hello", "ttl_at": "1796582945931", "activity": "1796582945.931",
         "last_at": "1796582945.931", "step_at": "1796582945.931"}


async def test_the_metadata_keeps_no_copy_of_the_state_and_reads_an_older_versions_copies(
        svc: Services, redis: Redis) -> None:
    await _send(svc, IDS[0], "hello")
    key = k.ConversationKey(CID)
    raw = await redis.hgetall(key.meta)
    names = {name.decode() for name in raw}
    assert not names & set(OLDER), names  # held by the state, read from the transcript, or short
    assert {"a", "l", "s", "r"} <= names
    chunks = b"".join(raw[f"~{i}".encode()] for i in range(int(raw[b"~"])))
    assert chunks[:2] == statefields.IMPLIED and CID.encode() not in chunks.split(b"r1")[0]  # no id copy
    meta, state = statefields.split(raw, CID)
    assert state is not None and codec.decode_state(state).id == CID
    new_row = summary(CID, (await ConversationIndex(redis).metas([CID]))[0])
    assert new_row["status"] == "bot" and new_row["bot"] == "greeter" and new_row["step"] == "ask"
    assert new_row["last_message"] == "hello" and new_row["preview"] == {"role": "bot", "text": "Thanks there: hello"}
    assert meta["ttl_at"] == raw[b"r"].decode() + "000"

    # As an older version left it: the whole state in the chunks, its copies and the long names.
    await redis.delete(key.meta)
    await redis.hset(key.meta, mapping={**OLDER, "channel": "livechat", "account": "demo", "external_id": SESSION,
                                        "n": "2", **dict(zip(*[iter(statefields.fields(state) or [])] * 2,
                                                             strict=True))})
    older = await redis.hgetall(key.meta)
    assert statefields.split(older, CID)[1] == state  # read as written
    old_row = summary(CID, (await ConversationIndex(redis).metas([CID]))[0])
    assert old_row["last_activity"] == 1796582945.931
    assert {n: old_row[n] for n in ("status", "bot", "step", "last_message", "preview")} == {
        n: new_row[n] for n in ("status", "bot", "step", "last_message", "preview")}

    await _send(svc, IDS[1], "again")  # continued: the copies and the preview dropped, short names
    raw = await redis.hgetall(key.meta)
    names = {name.decode() for name in raw}
    assert not names & (set(OLDER) - {"ttl_at", "activity", "last_at", "step_at"}), names
    assert {"a", "l", "s"} <= names  # the long ones left (never read again): until the key expires
    meta, state = statefields.split(raw, CID)
    assert state is not None and meta["activity"] == raw[b"a"].decode() != OLDER["activity"]
    row = summary(CID, (await ConversationIndex(redis).metas([CID]))[0])
    assert row["last_message"] == "again" and row["preview"] == {"role": "bot", "text": "Thanks there: again"}
    assert row["status"] == "bot" and row["last_activity"] == float(raw[b"a"])
