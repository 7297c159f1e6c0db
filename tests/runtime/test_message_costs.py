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
from bot.server.services import Services, open_services
from bot.store import codec
from tests.engine.helpers import make_doc
from tests.runtime.roundtrips import RoundTrips

#: The webhook bench's bot: every message gets one reply that reads the CRM and sets a timer.
GREETER = make_doc({
    "ask": {"type": "message", "text": "Thanks {{ contact.first_name | default('there', true) }}: {{ message.text }}",
            "buttons": [{"title": "Done", "next": "done"}],
            "other_answer": "ask", "no_answer": {"after": "10m", "next": "done"}},
    "done": {"type": "stop"},
}, id="greeter")

#: Redis commands (as Redis counts them) a follow-up costs: the push script (dedupe, queue, lock,
#: metadata, state: 6) with the recovery entry and the CRM snapshot reads (3), the save script
#: (lock check, state, transcript, metadata, notification, inbox and lock release: 10), the
#: timer set and cancelled (2), the activity index (1; the filter sets only when the
#: conversation changes sets), the funnel count (1: ``HINCRBY`` of the move ``ask`` -> ``ask``,
#: inside the save script; docs/analytics.md). Before issue 14: 34; 24 before the filter sets
#: stopped being re-scored; 21 before analytics (issue 13).
FOLLOW_UP_COMMANDS = 22
#: A duplicate: the push script finds the id (EVALSHA, ZADD NX, ZSCORE), the recovery entry, the
#: CRM reads sent along.
DUPLICATE_COMMANDS = 6


@pytest.fixture
async def svc(redis: Redis, redis_url: str, tmp_path: Path) -> AsyncIterator[Services]:
    cfg = load_config(env={}, overrides={"redis_url": redis_url, "flows_dir": str(tmp_path),
                                         "automations_dir": str(tmp_path / "automations"),
                                         "admin_token": "t", "lock_ttl": 5.0})
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


async def test_a_follow_up_costs_two_round_trips_and_at_most_22_redis_commands(
        svc: Services, redis: Redis, trips: RoundTrips) -> None:
    await _send(svc, "follow", "f1")
    await _send(svc, "follow", "f2")
    for n in range(3, 6):
        duplicate, commands, fast, slow = await _measured(svc, redis, trips, "follow", f"f{n}")
        assert not duplicate
        assert len(fast) == 2 and slow == [], (fast, slow)  # the push (with the CRM reads), the save
        push, save = fast
        assert push[0][0] == "EVALSHA" and save[0][0] == "EVALSHA"
        assert commands <= FOLLOW_UP_COMMANDS, commands
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
    # TTLs are refreshed at most once a day; the seen set trimmed then; a lone event needs no LRANGE;
    # the inbox and the lock go in one DEL; the push's metadata (unchanged) is not written again.
    for name in ("expire", "pexpire", "zremrangebyscore", "lrange", "ltrim"):
        assert name not in ran, ran
    assert ran.get("hset") == 1 and ran.get("del") == 1, ran  # the save's changed fields; inbox + lock
    # ZADDs: the dedupe id, the recovery entry, the timer, the activity index; no filter set again
    assert ran.get("zadd") == 4 and "zrem" in ran, ran


async def test_a_duplicate_costs_one_round_trip(svc: Services, redis: Redis, trips: RoundTrips) -> None:
    await _send(svc, "dup", "d1")
    await _send(svc, "dup", "d2")
    duplicate, commands, fast, slow = await _measured(svc, redis, trips, "dup", "d2")
    assert duplicate
    assert len(fast) == 1 and slow == [], (fast, slow)
    assert commands <= DUPLICATE_COMMANDS, commands
    assert len(await _bot_texts(svc, "livechat:demo:dup")) == 2  # answered once


async def test_a_first_message_reads_its_identity_with_the_push_and_its_new_records_from_memory(
        svc: Services, redis: Redis, trips: RoundTrips) -> None:
    await _send(svc, "warm", "w1")  # every script loaded
    duplicate, _, fast, slow = await _measured(svc, redis, trips, "newcomer", "n1")
    assert not duplicate
    push, save = fast[0], fast[-1]
    assert ("HGET", "sb:crm:identity", "livechat:demo:newcomer") in push
    # The new contact and lead: ids taken, the identity claimed, the records written in one
    # MULTI/EXEC (with the lead's conversation, so the new lead's events find it) — then not read
    # back. All on the lean connection (redis-py's pipelines cost several times the CPU).
    assert len(fast) == 5 and slow == [], (fast, slow)
    ids, claim, records = fast[1:4]
    assert ids[0][0] == "INCRBY" and claim[0][0] == "HSETNX"
    assert records[0] == ("MULTI",) and records[-1] == ("EXEC",)
    assert ("HSET", "sb:lead_conversations", meta_lead := records[-2][2], "livechat:demo:newcomer") in records
    assert not any(c[0] == "GET" and str(c[1]).startswith("sb:crm:") for call in fast for c in call)
    assert save[0][0] == "EVALSHA"
    meta = await svc.store.meta("livechat:demo:newcomer")
    assert meta["lead_id"] == meta_lead
    assert await redis.hget("sb:lead_conversations", meta["lead_id"]) == b"livechat:demo:newcomer"
    assert (await _bot_texts(svc, "livechat:demo:newcomer")) == ["Thanks there: hello"]


async def test_a_known_conversation_new_to_this_process_finds_its_lead_without_creating_one(
        svc: Services, redis: Redis, trips: RoundTrips) -> None:
    """Another process (or this one before a restart) started it: the identity read sent with the
    push finds its records; nothing is created, the lead stays the same."""
    await _send(svc, "elsewhere", "e1")
    cid = "livechat:demo:elsewhere"
    lead = (await svc.store.meta(cid))["lead_id"]
    svc.conversations._states.clear()
    svc.conversations._snapshot_refs.clear()
    await redis.hdel(f"sb:c:{{{cid}}}:meta", "lead_id", "contact_id")  # as if its metadata had lost them
    ids = await redis.get("sb:crm:ids")
    _, _, fast, _ = await _measured(svc, redis, trips, "elsewhere", "e2")
    assert ("HGET", "sb:crm:identity", "livechat:demo:elsewhere") in fast[0]
    assert await redis.get("sb:crm:ids") == ids  # no new records
    assert (await svc.store.meta(cid))["lead_id"] == lead
    assert await redis.hget("sb:lead_conversations", lead) == cid.encode()
    assert len(await _bot_texts(svc, cid)) == 2
