"""What one live chat message costs in Redis: round trips (the ``trips`` fixture) and commands as
Redis counts them (``INFO commandstats`` deltas: a script's inner calls included), for a
follow-up, a duplicate and a new session's first message. Counts, never timings: they do not
depend on the machine's load. Real services, the embedded CRM, a real Redis.

The figures are today's: a change that makes a message cost more fails here.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from bot.config import load_config
from bot.engine import events as ev
from bot.runtime.service import lead_conversation_key
from bot.server.services import Services, open_services
from bot.store import codec, statefields
from crm_bridge import RedisCrm, records
from crm_bridge.redis_crm import ID_BLOCK, identity_field, identity_hash
from tests.engine.helpers import make_doc
from tests.runtime.roundtrips import RoundTrips

#: The webhook bench's bot: every message gets one reply that reads the CRM and sets a timer.
GREETER = make_doc({
    "ask": {"type": "message", "text": "Thanks {{ contact.first_name | default('there', true) }}: {{ message.text }}",
            "buttons": [{"title": "Done", "next": "done"}],
            "other_answer": "ask", "no_answer": {"after": "10m", "next": "done"}},
    "done": {"type": "stop"},
}, id="greeter")

#: Redis commands (as Redis counts them) a follow-up costs: the push script (the metadata with the
#: state and the dedupe records, the queue: its ``RPUSH`` into the empty inbox takes the lock,
#: bot/store/inboxlock.py; the id's record: 4) with the check of the CRM snapshot this process kept
#: (one HMGET of its records' versions, crm_bridge/versions.py: 1; no recovery entry: this process
#: wrote it less than half a lock TTL ago, bot/store/pending.py), the save script (a write a full
#: Redis refuses first, so that it refuses the save whole: a ``SETRANGE`` of nothing, the
#: transcript's ``RPUSH`` while it was a list; the batch and the lock in one ``LPOP``, metadata with
#: the state, the short transcript's chunks and its count, notification: 5), no timer command (the
#: ``no_answer`` timer moved later: the conversation's timer entry stays early,
#: bot/store/timers.py), the activity index (1: a ``ZADD`` into the partition of its channel and
#: bot, bot/store/partitions.py; the filter sets only when the conversation changes sets), the
#: funnel count (1: ``HINCRBY`` of the move ``ask`` -> ``ask``, inside the save script;
#: docs/analytics.md).
#: Before issue 14: 34; 24 before the filter sets stopped being re-scored; 21 before the state
#: moved into the metadata hash, the save took the transcript's count from the push and the CRM
#: snapshot was kept; 18 before one timer entry per conversation (a ``ZREM`` of the old timer and a
#: ``ZADD`` of the new one); 17 before a push left the recovery entry its process had just written;
#: 16 before a timer moved later left the entry early (its ``ZADD``); 15 before the save took the
#: inbox's length from the push (its ``LLEN``); 14 before the lock moved into the inbox's head
#: entry (the push's ``SET NX PX``, the save's ``GET``; its ``DEL`` became the ``LPOP``).
FOLLOW_UP_COMMANDS = 12
#: A duplicate: the push script finds the id in the metadata (EVALSHA, HGETALL: bot/store/dedupe.py),
#: the CRM version check sent along (the recovery entry: written by the original's push just
#: before). 4 while the ids were a sorted set of their own (ZADD NX, ZSCORE).
DUPLICATE_COMMANDS = 3


@pytest.fixture
async def svc(redis: Redis, redis_url: str, tmp_path: Path) -> AsyncIterator[Services]:
    cfg = load_config(env={}, overrides={"redis_url": redis_url, "flows_dir": str(tmp_path),
                                         "automations_dir": str(tmp_path / "automations"),
                                         "admin_token": "t", "lock_ttl": 30.0})
    async with open_services(cfg, start_hub=False) as services:
        await services.bots.put(GREETER)
        yield services


async def _commands(redis: Redis) -> dict[str, int]:
    stats = await redis.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items() if name != "cmdstat_info"}


async def _send(svc: Services, session: str, mid: str, text: str = "hello") -> bool:
    result = await svc.conversations.deliver(
        f"livechat:demo:{session}", ev.InboundMessage(text=text, message_id=mid, greeting="greeter"),
        dedupe_id=f"lc:{mid}", meta={"channel": "livechat", "account": "demo", "external_id": session})
    return result.duplicate


async def _measured(svc: Services, redis: Redis, trips: RoundTrips, session: str, mid: str,
                    ) -> tuple[bool, int, list[list[tuple[object, ...]]], list[object]]:
    """Send one message: (duplicate, Redis commands, the round trips this task waited for)."""
    await svc.leads.idle()  # the lead's own events (handled in the background) done before counting
    before = await _commands(redis)
    trips.clear()
    duplicate = await _send(svc, session, mid)
    fast, slow = trips.made_by(asyncio.current_task())
    await svc.leads.idle()
    after = await _commands(redis)
    return duplicate, sum(after.values()) - sum(before.values()), fast, slow


async def _bot_texts(svc: Services, cid: str) -> list[str]:
    return [e["text"] for _, raw in await svc.store.read_log(cid, 0, 10_000)
            if (e := codec.unpack(raw))["role"] == "bot"]


async def test_a_follow_up_costs_two_round_trips_and_at_most_13_redis_commands(
        svc: Services, redis: Redis, trips: RoundTrips) -> None:
    await _send(svc, "follow", "f1")
    await _send(svc, "follow", "f2")
    for n in range(3, 6):
        duplicate, commands, fast, slow = await _measured(svc, redis, trips, "follow", f"f{n}")
        assert not duplicate
        assert len(fast) == 2 and slow == [], (fast, slow)  # the push (with the CRM reads), the save
        push, save = fast
        assert push[0][0] == "EVALSHA" and save[0][0] == "EVALSHA"
        assert push[-1][0] == "HMGET" and trips.crm_reads() == []  # the kept snapshot's versions only
        assert commands == FOLLOW_UP_COMMANDS, commands
    assert (await _bot_texts(svc, "livechat:demo:follow"))[-1] == "Thanks there: hello"


async def test_a_follow_up_refreshes_no_ttl_and_rewrites_no_unchanged_metadata(
        svc: Services, redis: Redis) -> None:
    await _send(svc, "quiet", "q1")
    await _send(svc, "quiet", "q2")
    await svc.leads.idle()
    before = await _commands(redis)
    await _send(svc, "quiet", "q3")
    after = await _commands(redis)
    ran = {name: after[name] - before.get(name, 0) for name in after if after[name] != before.get(name, 0)}
    # TTLs are refreshed at most once a day; a lone event needs no LRANGE;
    # the lock is the inbox's head entry: taken by the push's RPUSH, checked and released by the
    # save's LPOP of the batch (no lock key, no LINDEX or LSET of the head); the push's
    # metadata (unchanged) is not written again;
    # the state is read and written with the metadata; the transcript's count is the push's.
    for name in ("expire", "pexpire", "zremrangebyscore", "lrange", "ltrim", "llen", "append",
                 "set", "get", "del", "lindex", "lset", "lpush"):
        assert name not in ran, ran
    assert ran.get("hincrby") == 1, ran  # analytics' funnel count only: the transcript's count is the push's
    # the push's dedupe record (bot/store/dedupe.py), the save's changed fields; batch + lock
    assert ran.get("hset") == 2 and ran.get("lpop") == 1, ran
    assert ran.get("hgetall") == 1, ran  # the push's, for the dedupe check and the turn
    # the event (the lock with it); the transcript is in the metadata hash (bot/store/transcriptfields.py),
    # written by the save's HSET: its first write, a full Redis's refusal, is a SETRANGE of nothing
    assert ran.get("rpush") == 1 and ran.get("setrange") == 1, ran
    # ZADDs: the activity index (no dedupe set: the id is in the metadata); not the conversation's
    # timer entry (the ``no_answer`` timer moved later: the entry stays early), no recovery entry (written by q2's
    # push just before), no filter set again; no ZREM of a timer
    assert ran.get("zadd") == 1 and "zrem" not in ran and "zscore" not in ran, ran


async def test_a_duplicate_costs_one_round_trip(svc: Services, redis: Redis, trips: RoundTrips) -> None:
    await _send(svc, "dup", "d1")
    await _send(svc, "dup", "d2")
    duplicate, commands, fast, slow = await _measured(svc, redis, trips, "dup", "d2")
    assert duplicate
    assert len(fast) == 1 and slow == [], (fast, slow)
    assert commands == DUPLICATE_COMMANDS, commands
    assert len(await _bot_texts(svc, "livechat:demo:dup")) == 2  # answered once


async def test_a_first_message_costs_three_round_trips_its_identity_created_in_one_script(
        svc: Services, redis: Redis, trips: RoundTrips) -> None:
    await _send(svc, "warm", "w1")  # every script loaded
    duplicate, _, fast, slow = await _measured(svc, redis, trips, "newcomer", "n1")
    assert not duplicate
    # The push with the identity read (and, when this process has none left, ids for new records);
    # the contact and lead claimed and written in one script, with the lead's conversation (so the
    # new lead's events find it) and its records' versions; the save. Nothing read back.
    assert len(fast) == 3 and slow == [], (fast, slow)
    push, create, save = fast
    claims = identity_hash("livechat:demo:newcomer")
    assert ("HGET", claims, identity_field("livechat:demo:newcomer")) in push
    assert len(create) == 1 and create[0][0] == "EVALSHA" and create[0][3:5] == (claims, "sb:crm:versions")
    args = create[0][5:]
    assert args[0] == identity_field("livechat:demo:newcomer")
    contact_id, lead_id = args[1].split(":")
    assert ("HSET", lead_conversation_key(lead_id), lead_id, "livechat:demo:newcomer") in _words(args[2:])
    assert not any(c[0] in ("GET", "INCRBY", "HSETNX") and str(c[1]).startswith("sb:crm:") for c in create)
    assert save[0][0] == "EVALSHA"
    meta = await svc.store.meta("livechat:demo:newcomer")
    assert (meta["contact_id"], meta["lead_id"]) == (contact_id, lead_id)
    assert await redis.hget(lead_conversation_key(lead_id), lead_id) == b"livechat:demo:newcomer"
    assert await redis.hget(*records.at("lead", lead_id)) is not None
    assert (await _bot_texts(svc, "livechat:demo:newcomer")) == ["Thanks there: hello"]
    # Its next message checks the snapshot kept from the records as written: no record read.
    trips.clear()
    await _send(svc, "newcomer", "n2")
    assert trips.crm_reads() == [] and len(trips.made_by(asyncio.current_task())[0]) == 2


async def test_a_first_message_takes_ids_for_new_records_with_its_push_when_it_has_none_left(
        svc: Services, redis: Redis, trips: RoundTrips) -> None:
    await _send(svc, "warm", "w1")
    crm = svc.crm
    assert isinstance(crm, RedisCrm)
    crm._spare.clear()
    _, _, fast, _ = await _measured(svc, redis, trips, "newcomer", "n1")
    assert ("INCRBY", "sb:crm:ids", ID_BLOCK) in fast[0] and len(fast) == 3, fast
    assert len(crm._spare) == ID_BLOCK - 2
    # A known conversation new to this process: the ids its push took are kept, not lost.
    svc.conversations._states.clear()
    svc.conversations._snapshot_refs.clear()
    crm._spare.clear()
    _, _, fast, _ = await _measured(svc, redis, trips, "newcomer", "n2")
    assert ("INCRBY", "sb:crm:ids", ID_BLOCK) in fast[0] and len(fast) == 3, fast  # its snapshot read apart
    assert len(crm._spare) == ID_BLOCK


def _words(args: tuple[object, ...]) -> list[tuple[object, ...]]:
    """The commands of the CREATE script's arguments (each a word count, then its words)."""
    out, i = [], 0
    while i < len(args):
        n = int(str(args[i]))
        out.append(tuple(args[i + 1:i + 1 + n]))
        i += n + 1
    return out


async def test_a_known_conversation_new_to_this_process_finds_its_lead_without_creating_one(
        svc: Services, redis: Redis, trips: RoundTrips) -> None:
    """Another process (or this one before a restart) started it: the identity read sent with the
    push finds its records; nothing is created, the lead stays the same."""
    await _send(svc, "elsewhere", "e1")
    cid = "livechat:demo:elsewhere"
    lead = (await svc.store.meta(cid))["lead_id"]
    svc.conversations._states.clear()
    svc.conversations._snapshot_refs.clear()
    names = ("lead_id", "contact_id", *(statefields.SHORT[n] for n in ("lead_id", "contact_id")))
    assert await redis.hdel(f"sb:c:{{{cid}}}:meta", *names) == 2  # as if its metadata had lost them
    assert "lead_id" not in await svc.store.meta(cid)
    ids = await redis.get("sb:crm:ids")
    _, _, fast, _ = await _measured(svc, redis, trips, "elsewhere", "e2")
    assert ("HGET", identity_hash("livechat:demo:elsewhere"), identity_field("livechat:demo:elsewhere")) in fast[0]
    assert await redis.get("sb:crm:ids") == ids  # no new records
    assert (await svc.store.meta(cid))["lead_id"] == lead
    assert await redis.hget(lead_conversation_key(lead), lead) == cid.encode()
    assert len(await _bot_texts(svc, cid)) == 2
