"""Bytes an idle conversation holds in Redis (issue 14, aim 3), counted with ``MEMORY USAGE``
(exact: ``SAMPLES 0``) after a live chat conversation of three customer messages and three bot
replies through the running app. ``bench/memory.py`` measures the same at scale, with the CRM's
and the indexes' share; this pins the conversation's own keys so that a layout change that
grows them fails here."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from bot.store.buckets import bucket
from crm_bridge import records
from crm_bridge.redis_crm import IDENTITIES
from tests import transcripts
from tests.live_app import running_app

#: Each message gets one reply that waits again (a no-answer timer pending, as in the bench).
ECHO: dict[str, Any] = {
    "reply": {"type": "message", "text": "Thanks, you said: {{ message.text }}",
              "buttons": [{"title": "Opening hours", "next": "reply"}],
              "other_answer": "reply", "no_answer": {"after": "10m", "next": "reply"}},
}
#: The conversation's own keys (metadata with the state, the transcript and its count and the
#: dedupe ids): 826 B since the state keeps its common values as tokens and the customer's last
#: message, its CRM ids and its timers in short forms, a button's payload the flow gave it is no
#: bytes, and the chunks are 63 B (bot/store/statecodec.py; 914 B before); 910 B since a short
#: transcript lives in the metadata (no list key: its node and its
#: key, bot/store/transcriptfields.py); 1,145 B since the dedupe ids are records in the metadata,
#: the state leaves out its defaults and its timer ids' copy of the conversation id and keeps the
#: last message's hex id as bytes, and the CRM ids have short names (meta 423 B, issue 14 aim 3's
#: fifth wave); 1,401 B since the metadata keeps no copy of the state's fields nor the preview, the
#: state no copy of the id, and the fields written on every save short names (meta 505 B); 1,685 B
#: since the dedupe set keeps 8-byte digests, the metadata no empty field and the entries their hex
#: ids as bytes and their common role and kind as a key (issue 14 aim 3); 1,906 B since the state
#: keeps its timers' due times (one timer entry per conversation, issue 14) and the metadata the
#: hand-back's fields (issue 15); 1,850 B with the state first in the metadata hash; 1,962 B with
#: the state a key of its own; 2,574 B with the list of plain entries; 6,203 B when the transcript
#: was a stream and a counter.
CONVERSATION_BOUND = 850  # (the metadata rounds up with the allocator)


async def conversation_bytes(redis: Redis, cid: str) -> dict[str, int]:
    """``MEMORY USAGE`` of each key of one conversation, by the key's last part."""
    out = {}
    async for key in redis.scan_iter(match=f"sb:c:{{{cid}}}:*"):
        out[key.decode().rsplit(":", 1)[1]] = int(await redis.memory_usage(key, samples=0) or 0)
    return out


async def test_an_idle_live_chat_conversation_holds_under_the_bound(redis: Redis, redis_url: str) -> None:
    async with running_app(redis_url) as app:
        await app.put_flow(ECHO, "reply")
        session = "memory-test-session"
        for text in ("hello there, I have a question", "do you deliver to Ankara?", "ok thanks"):
            cid, texts = await app.say(session, text)
            assert texts == [f"Thanks, you said: {text}"]
        sizes = await conversation_bytes(redis, cid)
        assert set(sizes) == {"meta"}, sizes  # the transcript in the metadata: no list
        # no stream, no separate counter, the state in the metadata hash (bot/store/statefields.py)
        assert "log" not in sizes and "n" not in sizes and "state" not in sizes, sizes
        assert "d" not in sizes and "seen" not in sizes, sizes  # the dedupe ids in the metadata (dedupe.py)
        assert len(await transcripts.blobs(redis, cid)) == 6
        assert await redis.object("encoding", f"sb:c:{{{cid}}}:meta") in (b"ziplist", b"listpack")  # compact
        assert (await app.services.store.state(cid) or b"")[:1] == b"\xc1"  # compact
        assert sum(sizes.values()) <= CONVERSATION_BOUND, sizes


#: The embedded CRM's records of that conversation's contact and lead are fields of shared bucket
#: hashes (``crm_bridge/records.py``), each at most this many bytes, so their buckets keep Redis'
#: compact encoding (``hash-max-ziplist-value`` 64): about 70 B a record with its field name and
#: the bucket's share, where a key each cost 206-222 B (and 352 B as plain msgpack maps, when
#: each contact also had two sets of its own).
CRM_RECORD_MAX = 64


async def test_the_embedded_crm_keeps_a_conversations_contact_and_lead_in_compact_shared_buckets(
        redis: Redis, redis_url: str) -> None:
    async with running_app(redis_url) as app:
        await app.put_flow(ECHO, "reply")
        cid, _ = await app.say("memory-test-crm", "hello there")
        stored = await redis.hmget(f"sb:c:{{{cid}}}:meta", "c", "ld")  # (statefields.SHORT)
        contact_id, lead_id = (v.decode() for v in stored)
        own = [key.decode() async for key in redis.scan_iter(match="sb:crm:*")
               if key.decode().rsplit(":", 1)[-1] in (contact_id, lead_id) and not key.startswith(b"sb:crm:rec:")]
        assert own == []  # no key of their own
        for kind, rid in (("contact", contact_id), ("lead", lead_id)):
            assert 0 < await redis.hstrlen(*records.at(kind, rid)) <= CRM_RECORD_MAX
            assert await redis.object("encoding", records.at(kind, rid)[0]) in (b"ziplist", b"listpack")
        assert await redis.hget(bucket(IDENTITIES, contact_id), contact_id) == b"livechat:demo:memory-test-crm"
