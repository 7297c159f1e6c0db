"""The conversation loop against a real Redis: ordering, exactly-once, dedupe, recovery."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from redis.asyncio import Redis

from bot.config import load_config
from bot.engine import events as ev
from bot.server.services import Services, open_services
from bot.store import codec
from bot.store.conversations import SaveRequest
from tests import inboxlocks
from tests.server.conftest import NO_AUTOMATIONS
from tests.waiting import wait_for

pytestmark = pytest.mark.both_loops  # the server may run on uvloop: everything here runs on both

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _config(redis_url: str, **extra: object):  # type: ignore[no-untyped-def]
    return load_config(env={}, overrides={"redis_url": redis_url, "flows_dir": str(FIXTURES),
                                          "automations_dir": str(NO_AUTOMATIONS),
                                          "admin_token": "t", "lock_ttl": 2.0, **extra})


async def _state(svc: Services, cid: str):  # type: ignore[no-untyped-def]
    raw = await svc.store.state(cid)
    assert raw is not None
    return codec.decode_state(raw)


async def _transcript(svc: Services, cid: str) -> list[dict]:  # type: ignore[type-arg]
    return [codec.unpack(b) for _, b in await svc.store.read_log(cid, 0, 10_000)]


def _msg(text: str, mid: str) -> ev.InboundMessage:
    return ev.InboundMessage(text=text, message_id=mid, greeting="recorder")


async def test_fifty_concurrent_messages_from_three_processes_in_order_exactly_once(redis: Redis,
                                                                                     redis_url: str) -> None:
    cfg = _config(redis_url)
    async with open_services(cfg, start_hub=False) as a, open_services(cfg, start_hub=False, load_flows=False) as b, \
            open_services(cfg, start_hub=False, load_flows=False) as c:
        services = [a, b, c]
        cid = "test:acct:ordering"
        meta = {"channel": "test", "account": "acct"}

        async def sender(k: int) -> None:
            # Each sender sends its own messages one after another, through a rotating process.
            for i in range(10):
                svc = services[(k + i) % 3]
                await svc.conversations.deliver(cid, _msg(f"s{k}-{i}", f"s{k}-{i}"), dedupe_id=f"s{k}-{i}", meta=meta)

        await asyncio.gather(*(sender(k) for k in range(5)))
        state = await _state(a, cid)
        seen = state.run.vars["seen"]
        assert sorted(seen) == sorted(f"s{k}-{i}" for k in range(5) for i in range(10))  # all 50, once each
        for k in range(5):  # each sender's messages in the order it sent them
            mine = [s for s in seen if s.startswith(f"s{k}-")]
            assert mine == [f"s{k}-{i}" for i in range(10)]
        transcript = await _transcript(a, cid)
        users = [e["text"] for e in transcript if e["role"] == "user"]
        assert users == seen  # the transcript shows the order the interpreter saw
        bots = [e["text"] for e in transcript if e["role"] == "bot"]
        assert bots == [f"got {n}" for n in range(1, 51)]  # one reply per message, counting up
        assert await redis.exists(f"sb:c:{{{cid}}}:inbox") == 0  # empty, the lock released with it


async def test_the_same_platform_message_twice_is_handled_once(redis: Redis, redis_url: str) -> None:
    async with open_services(_config(redis_url), start_hub=False) as svc:
        cid = "test:acct:dupe"
        first = await svc.conversations.deliver(cid, _msg("hello", "wamid.1"), dedupe_id="wamid.1")
        again = await svc.conversations.deliver(cid, _msg("hello", "wamid.1"), dedupe_id="wamid.1")
        assert (first.duplicate, again.duplicate) == (False, True)
        transcript = await _transcript(svc, cid)
        assert [e["role"] for e in transcript] == ["user", "bot"]


async def test_a_crashed_processor_loses_nothing(redis: Redis, redis_url: str) -> None:
    """A process took the lock and died: after the lock expires, a worker processes the inbox."""
    cfg = _config(redis_url, lock_ttl=0.5)
    async with open_services(cfg, start_hub=False) as svc:
        cid = "test:acct:crash"
        # Simulate the dead process: push takes the lock, then nobody processes or saves.
        pushed = await svc.store.push(cid, codec.encode_event(_msg("one", "m1")), dedupe_id="m1")
        assert pushed.batch is not None
        # Meanwhile another message arrives and is queued behind the (dead) holder.
        queued = await svc.conversations.deliver(cid, _msg("two", "m2"), dedupe_id="m2")
        assert queued.processed_here is False
        assert await svc.store.state(cid) is None
        from bot.runtime.worker import Worker

        worker = Worker(svc)
        taken = await wait_for(worker.recover, 5.0, what="recovery after the lock expires")
        assert taken == 1
        state = await _state(svc, cid)
        assert state.run.vars["seen"] == ["one", "two"]


async def test_state_is_msgpack_and_keys_share_one_hash_tag(redis: Redis, redis_url: str) -> None:
    async with open_services(_config(redis_url), start_hub=False) as svc:
        cid = "test:acct:keys"
        await svc.conversations.deliver(cid, _msg("hi", "k1"), dedupe_id="k1", meta={"channel": "test"})
        keys = sorted(k.decode() for k in await redis.keys("sb:c:*"))
        assert keys and all(k.startswith(f"sb:c:{{{cid}}}:") for k in keys)
        for key in keys:
            assert await redis.ttl(key) > 0, f"{key} has no TTL"
        raw = await svc.store.state(cid)
        assert raw is not None and codec.unpack(raw)["id"] == cid
        assert json.dumps(codec.unpack(raw))  # plain data only


async def test_a_crm_that_cannot_identify_yet_delays_the_first_message_and_loses_nothing(
        redis: Redis, redis_url: str) -> None:
    from bot.errors import CrmUnavailable
    from bot.runtime.worker import Worker

    async with open_services(_config(redis_url, lock_ttl=0.3), start_hub=False) as svc:
        real = svc.conversations.crm
        calls = {"n": 0}

        class Flaky:
            name = "flaky"

            async def identify(self, identity):  # type: ignore[no-untyped-def]
                calls["n"] += 1
                if calls["n"] == 1:
                    raise CrmUnavailable("down")
                return await real.identify(identity)

            async def identify_from(self, identity, replies, *, link=None):  # type: ignore[no-untyped-def]
                return await self.identify(identity), None  # the lookup sent with the push fares alike

            def __getattr__(self, item):  # type: ignore[no-untyped-def]
                return getattr(real, item)

        svc.conversations.crm = Flaky()  # type: ignore[assignment]
        cid = "test:acct:identify"
        meta = {"channel": "test", "account": "acct", "external_id": "who-1"}
        result = await svc.conversations.deliver(cid, _msg("first", "i1"), dedupe_id="i1", meta=meta)
        assert result.processed_here is False and await svc.store.state(cid) is None
        assert await redis.llen(f"sb:c:{{{cid}}}:inbox") == 1  # still queued, not lost
        worker = Worker(svc)
        await wait_for(worker.recover, 5.0, what="recovery once the lock expires and the CRM answers")
        state = await _state(svc, cid)
        assert state.run.vars["seen"] == ["first"] and state.crm and state.crm["lead_id"]


async def test_a_batch_slower_than_the_lock_ttl_keeps_its_lock_and_saves(redis: Redis, redis_url: str) -> None:
    # A TTL of 1 s, renewed every third of it: a loaded machine (a CI box, other work) may delay a
    # renewal by a few hundred ms without the lock expiring, which 0.3 s did not allow for.
    async with open_services(_config(redis_url, lock_ttl=1.0), start_hub=False) as svc:
        real = svc.conversations.crm
        release = asyncio.Event()
        entered = asyncio.Event()

        class Slow:
            name = "slow"

            async def identify(self, identity):  # type: ignore[no-untyped-def]
                entered.set()
                await release.wait()  # a CRM far slower than the lock's 0.3 s
                return await real.identify(identity)

            async def identify_from(self, identity, replies, *, link=None):  # type: ignore[no-untyped-def]
                return await self.identify(identity), None  # the lookup sent with the push fares alike

            def __getattr__(self, item):  # type: ignore[no-untyped-def]
                return getattr(real, item)

        svc.conversations.crm = Slow()  # type: ignore[assignment]
        cid = "test:acct:slow"
        meta = {"channel": "test", "account": "acct", "external_id": "slow-1"}
        task = asyncio.create_task(svc.conversations.deliver(cid, _msg("first", "s1"), dedupe_id="s1", meta=meta))
        try:
            await asyncio.wait_for(entered.wait(), 5)
            held = await inboxlocks.holder(redis, cid)
            assert held is not None
            token = held[0]
            renewals = {"seen": 0, "last": held[1]}

            async def renewed() -> bool:  # the expiry moved on again: a renewal, over and over
                lock = await inboxlocks.holder(redis, cid)
                assert lock is not None and lock[0] == token, "the lock was lost while the batch ran"
                assert lock[1] > time.time() * 1000, "the lock expired while the batch ran"
                if lock[1] > renewals["last"]:
                    renewals["seen"] += 1
                renewals["last"] = lock[1]
                return renewals["seen"] >= 3

            await wait_for(renewed, 15.0, interval=0.02, what="three renewals of the lock (3 s, three TTLs)")
        finally:  # a failure above must not leave the batch waiting for ever (a hung teardown)
            release.set()
        result = await asyncio.wait_for(task, 5)
        assert result.processed_here
        assert (await _state(svc, cid)).run.vars["seen"] == ["first"]
        assert await redis.exists(f"sb:c:{{{cid}}}:inbox") == 0  # released by the save


async def test_a_process_never_reuses_its_cached_state_after_another_process_wrote(
        redis: Redis, redis_url: str) -> None:
    async with open_services(_config(redis_url), start_hub=False) as a, \
            open_services(_config(redis_url), start_hub=False, load_flows=False) as b:
        cid = "test:acct:cache"
        meta = {"channel": "test", "account": "acct", "external_id": "c-1"}
        await a.conversations.deliver(cid, _msg("one", "c1"), dedupe_id="c1", meta=meta)
        assert cid in a.conversations._states  # a kept what it saved
        await b.conversations.deliver(cid, _msg("two", "c2"), dedupe_id="c2", meta=meta)
        await a.conversations.deliver(cid, _msg("three", "c3"), dedupe_id="c3", meta=meta)
        assert (await _state(a, cid)).run.vars["seen"] == ["one", "two", "three"]
        await a.conversations.deliver(cid, _msg("four", "c4"), dedupe_id="c4", meta=meta)  # from its cache
        assert (await _state(b, cid)).run.vars["seen"] == ["one", "two", "three", "four"]


async def test_a_failed_prefetch_read_loses_only_the_prefetch(redis: Redis, redis_url: str) -> None:
    async with open_services(_config(redis_url), start_hub=False) as svc:
        await redis.rpush("not-a-string", "x")
        cid = "test:acct:reads"
        pushed = await svc.store.push(cid, codec.encode_event(_msg("one", "r1")), dedupe_id="r1",
                                      reads=[("GET", "not-a-string")])  # WRONGTYPE
        assert pushed.batch is not None and pushed.prefetched is None  # the push itself happened
        assert await redis.llen(f"sb:c:{{{cid}}}:inbox") == 1


async def test_taking_the_lock_a_day_after_the_last_refresh_refreshes_the_metadata_ttl(
        redis: Redis, redis_url: str) -> None:
    async with open_services(_config(redis_url), start_hub=False) as svc:
        cid = "test:acct:ttl"
        meta = {"channel": "test", "account": "acct", "external_id": "t-1"}
        await svc.conversations.deliver(cid, _msg("one", "t1"), dedupe_id="t1", meta=meta)
        key = f"sb:c:{{{cid}}}:meta"
        refreshed = await redis.hget(key, "r")  # ``ttl_at``, stored as ``r`` in seconds (statefields.SHORT)
        assert refreshed is not None and abs(int(refreshed) - time.time()) < 60
        pushed = await svc.store.push(cid, codec.encode_event(_msg("two", "t2")), dedupe_id="t2")
        assert pushed.batch is not None and not pushed.batch.refresh_ttl  # refreshed less than a day ago
        assert (await svc.store.save(cid, pushed.batch.token, SaveRequest(
            state=None, processed=1, refresh_ttl=pushed.batch.refresh_ttl))).status == 0

        # A day later (the last refresh made a day older) with the hash about to expire:
        # the push that takes the lock refreshes it, so the save's partial write cannot outlive it.
        await redis.hset(key, "r", str(int(refreshed) - 86400 - 1))
        await redis.expire(key, 5)
        pushed = await svc.store.push(cid, codec.encode_event(_msg("three", "t3")), dedupe_id="t3")
        assert pushed.batch is not None and pushed.batch.refresh_ttl
        assert await redis.ttl(key) > 86400  # the whole hash lives as long as the conversation
        assert abs(int(await redis.hget(key, "r") or 0) - time.time()) < 60
