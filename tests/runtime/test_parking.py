"""A conversation whose processing keeps failing is parked, never retried forever, and never
holds up recovery for the others (issue: poison input must not wedge a conversation)."""

from __future__ import annotations

from pathlib import Path

from aiohttp import ClientSession
from redis.asyncio import Redis

from bot.config import load_config
from bot.engine import events as ev
from bot.runtime.worker import Worker
from bot.server.keys import SERVICES
from bot.server.services import open_services
from bot.store import codec
from bot.store.keys import ConversationKey, pending_key, retry_member, shard_of
from tests import inboxlocks
from tests.server.conftest import ADMIN, NO_AUTOMATIONS, make_config, running
from tests.waiting import wait_for

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
AUTH = {"Authorization": f"Bearer {ADMIN}"}


def _msg(text: str, mid: str) -> ev.InboundMessage:
    return ev.InboundMessage(text=text, message_id=mid, greeting="recorder")


async def _bot_texts(http: ClientSession, session: str) -> list[str]:
    body = await (await http.get("/chat/demo/messages", params={"session": session})).json()
    return [m["text"] for m in body["messages"] if m["role"] == "bot"]


async def test_a_failing_conversation_is_parked_shown_and_retried(redis: Redis, redis_url: str) -> None:
    async with (running(make_config(redis_url, lock_ttl=0.3, park_after=3)) as server,
                ClientSession(base_url=str(server.make_url(""))) as http):
        svc = server.app[SERVICES]
        worker = Worker(svc)
        session = "poisoned-1"
        r = await http.post("/chat/demo/messages", json={"session": session, "text": "hi"})
        cid = (await r.json())["conversation"]
        await wait_for(lambda: _bot_texts(http, session), what="the greeting")
        greeted = len(await _bot_texts(http, session))
        # a state nobody can read (in the metadata hash: bot/store/statefields.py)
        await redis.hset(ConversationKey(cid).meta, mapping={"~0": b"\xc1 not msgpack", "~": "1"})

        r = await http.post("/chat/demo/messages", json={"session": session, "text": "again"})
        assert r.status == 202, await r.text()  # accepted: it waits in the inbox, nothing is lost

        async def parked() -> bool:
            return bool((await svc.store.meta(cid)).get("parked"))

        await wait_for(parked, 10, what="the conversation to be parked", between=worker.recover)
        meta = await svc.store.meta(cid)
        assert meta["failures"] == "3" and "not msgpack" not in meta["error"] and meta["error"]
        assert await redis.llen(ConversationKey(cid).inbox) == 1  # the event is kept
        assert await redis.zscore(pending_key(shard_of(cid, svc.store.shards)), cid) is None
        assert await redis.zscore(pending_key(shard_of(cid, svc.store.shards)), retry_member(cid)) is None

        body = await (await http.get(f"/api/conversations/{cid}", headers=AUTH)).json()
        assert body["parked"] is True and body["failures"] == 3 and body["error"]
        listed = await (await http.get("/api/conversations", params={"parked": "1"}, headers=AUTH)).json()
        assert [c["id"] for c in listed["conversations"]] == [cid]

        # While parked, new messages queue up without another attempt.
        r = await http.post("/chat/demo/messages", json={"session": session, "text": "still there?"})
        assert r.status == 202
        await worker.recover()
        assert (await svc.store.meta(cid))["failures"] == "3"
        assert await redis.llen(ConversationKey(cid).inbox) == 2
        assert await inboxlocks.holder(redis, cid) is None  # given back

        # Someone repairs the data and retries: both waiting messages are answered in order.
        await redis.hdel(ConversationKey(cid).meta, "~", "~0")
        r = await http.post(f"/api/conversations/{cid}/retry", headers=AUTH)
        assert r.status == 202, await r.text()
        after = await r.json()
        assert after["parked"] is False and after["failures"] == 0 and after["error"] is None
        assert await redis.llen(ConversationKey(cid).inbox) == 0
        assert len(await _bot_texts(http, session)) > greeted
        assert await (await http.get("/api/conversations", params={"parked": "1"}, headers=AUTH)).json() == \
            {"conversations": [], "next_before": None, "next_before_id": None}


async def test_retry_can_discard_the_event_that_keeps_failing(redis: Redis, redis_url: str) -> None:
    cfg = load_config(env={}, overrides={"redis_url": redis_url, "flows_dir": str(FIXTURES), "admin_token": "t",
                                         "automations_dir": str(NO_AUTOMATIONS),
                                         "lock_ttl": 0.3, "park_after": 2})
    async with open_services(cfg, start_hub=False) as svc:
        worker = Worker(svc)
        cid = "test:acct:poison-event"
        await svc.conversations.deliver(cid, _msg("one", "p1"), dedupe_id="p1")
        await svc.store.redis.rpush(ConversationKey(cid).inbox, b"\x00garbage")  # an event nobody can decode
        await svc.conversations.deliver(cid, _msg("two", "p2"), dedupe_id="p2")

        async def parked() -> bool:
            return bool((await svc.store.meta(cid)).get("parked"))

        await wait_for(parked, 10, what="parking", between=worker.recover)
        assert await svc.store.redis.llen(ConversationKey(cid).inbox) == 2

        assert await svc.conversations.retry(cid, skip=1, user="ayse") is True
        state = codec.decode_state(await svc.store.state(cid) or b"")
        assert state.run is not None and state.run.vars["seen"] == ["one", "two"]
        log = [codec.unpack(b) for _, b in await svc.store.read_log(cid)]
        assert any(e.get("event") == "discarded" and "ayse discarded 1 event" in e["text"] for e in log)
        meta = await svc.store.meta(cid)
        assert not meta.get("parked") and meta.get("failures", "0") == "0"


async def test_recovery_is_not_starved_by_failing_conversations(redis: Redis, redis_url: str) -> None:
    """Recovery used to read only the 100 oldest pending conversations of a shard: 100 that keep
    failing stopped it for everybody. Now each failure moves its conversation later."""
    cfg = load_config(env={}, overrides={"redis_url": redis_url, "flows_dir": str(FIXTURES), "admin_token": "t",
                                         "automations_dir": str(NO_AUTOMATIONS),
                                         "lock_ttl": 30.0, "timer_shards": 1})
    async with open_services(cfg, start_hub=False) as svc:
        worker = Worker(svc)
        pending = pending_key(0)
        for i in range(120):  # failing conversations whose processors died long ago
            cid = f"test:acct:bad-{i}"
            await svc.store.redis.rpush(ConversationKey(cid).inbox, b"\x00garbage")
            await svc.store.redis.zadd(pending, {cid: 1000.0 + i})
        good = "test:acct:good"
        pushed = await svc.store.push(good, codec.encode_event(_msg("hello", "g1")))
        assert pushed.batch is not None  # its processor dies with the lock …
        assert await inboxlocks.expire(redis, good)  # … which has expired since
        await svc.store.redis.zadd(pending, {good: 5000.0})  # due, behind all the failing ones

        for _ in range(3):
            await worker.recover()
        raw = await svc.store.state(good)
        assert raw is not None and codec.decode_state(raw).run.vars["seen"] == ["hello"]  # type: ignore[union-attr]
        assert await svc.store.redis.zcount(pending, "-inf", 1000.0 + 119) == 0  # every failing one moved on


async def test_a_conversation_locked_by_a_live_processor_is_looked_at_again_later(redis: Redis, redis_url: str) -> None:
    cfg = load_config(env={}, overrides={"redis_url": redis_url, "flows_dir": str(FIXTURES), "admin_token": "t",
                                         "automations_dir": str(NO_AUTOMATIONS),
                                         "lock_ttl": 30.0, "timer_shards": 1})
    async with open_services(cfg, start_hub=False) as svc:
        cid = "test:acct:busy"
        pushed = await svc.store.push(cid, codec.encode_event(_msg("hello", "b1")))
        assert pushed.batch is not None  # held by a live processor
        await svc.store.redis.zadd(pending_key(0), {cid: 1.0})
        assert await Worker(svc).recover() == 0
        score = await svc.store.redis.zscore(pending_key(0), cid)
        assert score is not None and score > 1_000_000_000  # now + the lock TTL, no longer at the front


async def test_a_name_with_control_characters_does_not_break_the_conversation(redis: Redis, redis_url: str) -> None:
    """The search index kept name, phone and e-mail joined by \\x1f: a visitor's name holding one
    crashed every save of the conversation."""
    cfg = load_config(env={}, overrides={"redis_url": redis_url, "flows_dir": str(FIXTURES), "admin_token": "t",
                                         "automations_dir": str(NO_AUTOMATIONS)})
    async with open_services(cfg, start_hub=False) as svc:
        cid = "test:acct:odd-name"
        meta = {"channel": "test", "account": "acct", "name": "a\x1fb\x1fc\x00" + "x" * 100}
        result = await svc.conversations.deliver(cid, _msg("hi", "n1"), dedupe_id="n1", meta=meta)
        assert result.processed_here
        result = await svc.conversations.deliver(cid, _msg("again", "n2"), dedupe_id="n2", meta={"name": "a\x1fz"})
        assert result.processed_here
        state = codec.decode_state(await svc.store.state(cid) or b"")
        assert state.run is not None and state.run.vars["seen"] == ["hi", "again"]
        assert (await svc.store.meta(cid)).get("failures", "0") == "0"


async def test_an_outage_is_not_a_failure_and_never_parks(redis: Redis, redis_url: str) -> None:
    """A CRM that cannot identify the customer leaves the events queued for recovery; however long
    it lasts, the conversation is not counted as failing nor parked."""
    from bot.errors import CrmUnavailable

    cfg = load_config(env={}, overrides={"redis_url": redis_url, "flows_dir": str(FIXTURES), "admin_token": "t",
                                         "automations_dir": str(NO_AUTOMATIONS),
                                         "lock_ttl": 0.2, "park_after": 2})
    async with open_services(cfg, start_hub=False) as svc:
        real = svc.conversations.crm

        class Down:
            name = "down"

            async def identify(self, identity):  # type: ignore[no-untyped-def]
                raise CrmUnavailable("the CRM is down")

            async def identify_from(self, identity, replies, *, link=None):  # type: ignore[no-untyped-def]
                raise CrmUnavailable("the CRM is down")  # the lookup sent with the push too

            def __getattr__(self, item):  # type: ignore[no-untyped-def]
                return getattr(real, item)

        svc.conversations.crm = Down()  # type: ignore[assignment]
        cid = "test:acct:outage"
        meta = {"channel": "test", "account": "acct", "external_id": "who-2"}
        for i in range(4):
            await svc.conversations.deliver(cid, _msg(f"m{i}", f"o{i}"), dedupe_id=f"o{i}", meta=meta)
            await inboxlocks.expire(redis, cid)  # as if its TTL ran out
            await Worker(svc).recover()
        stored = await svc.store.meta(cid)
        assert not stored.get("parked") and not stored.get("failures")
        assert await redis.llen(ConversationKey(cid).inbox) == 4  # all waiting for the CRM
        svc.conversations.crm = real
        await inboxlocks.expire(redis, cid)
        await svc.store.redis.zadd(pending_key(shard_of(cid, svc.store.shards)), {cid: 1.0})
        await Worker(svc).recover()
        state = codec.decode_state(await svc.store.state(cid) or b"")
        assert state.run is not None and state.run.vars["seen"] == ["m0", "m1", "m2", "m3"]


async def test_retry_races_and_outages_leave_the_conversation_with_recovery(redis: Redis, redis_url: str) -> None:
    from bot.errors import CrmUnavailable

    cfg = load_config(env={}, overrides={"redis_url": redis_url, "flows_dir": str(FIXTURES), "admin_token": "t",
                                         "automations_dir": str(NO_AUTOMATIONS),
                                         "lock_ttl": 5.0, "park_after": 1, "timer_shards": 1})
    async with open_services(cfg, start_hub=False) as svc:
        store = svc.store
        cid = "test:acct:race"
        meta = {"channel": "test", "account": "acct", "external_id": "who-3"}
        await svc.store.redis.rpush(ConversationKey(cid).inbox, b"\x00garbage")
        pushed = await store.push(cid, codec.encode_event(_msg("hi", "r1")), meta=meta)
        assert pushed.batch is not None
        # A processor that lost its lock does not count a failure, nor park.
        assert await store.record_failure(cid, "not-the-token", "boom", park_after=1) == (0, False)
        assert not (await store.meta(cid)).get("failures")
        assert await store.record_failure(cid, pushed.batch.token, "boom", park_after=1) == (1, True)

        # A push takes the lock of the parked conversation while a person's retry unparks it:
        # the push's set-aside sees it unparked and hands it to recovery instead of dropping it.
        again = await store.push(cid, codec.encode_event(_msg("there?", "r2")))
        assert again.batch is not None and again.batch.meta.get("parked")
        await store.unpark(cid)
        await redis.zrem(pending_key(0), cid)  # (the push's own entry: not what is tested here)
        assert await store.set_aside(cid, again.batch.token) == (False, 0)
        assert await redis.zscore(pending_key(0), retry_member(cid)) is not None  # due at once

        # A retry while the CRM is away: queued for recovery, no error.
        await store.redis.hset(ConversationKey(cid).meta, "parked", "1")
        await store.redis.lpop(ConversationKey(cid).inbox)  # the garbage is gone: only the CRM is in the way
        real = svc.conversations.crm

        class Down:
            async def identify(self, identity):  # type: ignore[no-untyped-def]
                raise CrmUnavailable("the CRM is down")

            async def identify_from(self, identity, replies, *, link=None):  # type: ignore[no-untyped-def]
                raise CrmUnavailable("the CRM is down")  # the lookup sent with the push too

            def __getattr__(self, item):  # type: ignore[no-untyped-def]
                return getattr(real, item)

        svc.conversations.crm = Down()  # type: ignore[assignment]
        await redis.zrem(pending_key(0), cid)
        assert await svc.conversations.retry(cid) is True
        assert await redis.zscore(pending_key(0), cid) is not None  # recovery will go on with it
        assert not (await store.meta(cid)).get("parked")


async def test_retry_with_skip_on_a_busy_conversation_says_so(redis: Redis, redis_url: str) -> None:
    async with running(make_config(redis_url)) as server, \
            ClientSession(base_url=str(server.make_url(""))) as http:
        svc = server.app[SERVICES]
        cid = "test:acct:busy-retry"
        pushed = await svc.store.push(cid, codec.encode_event(_msg("hi", "b1")), meta={"channel": "test"})
        assert pushed.batch is not None  # someone is processing it
        r = await http.post(f"/api/conversations/{cid}/retry", json={"skip": 1}, headers=AUTH)
        assert r.status == 409 and (await r.json())["error"]["code"] == "busy"
        assert await redis.llen(ConversationKey(cid).inbox) == 1  # nothing was discarded
