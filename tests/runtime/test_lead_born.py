"""A new lead's first events recorded born (``bot/store/leadborn.py``): no queue key when nothing
acts on them, the same history as the queue gave, the queue again as soon as a document is
stored (a rule never misses an event), later events numbered after the born ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from bot.config import load_config
from bot.runtime.automations import EngineReactor, counts_key
from bot.runtime.leads import lead_cid
from bot.server.services import Services, open_services
from bot.store import codec, leadborn
from bot.store.versions import digest_of
from crm_bridge import ChannelIdentity, CrmRef, RedisCrm
from tests.server.conftest import NO_AUTOMATIONS

pytestmark = pytest.mark.both_loops

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
DOC = {"format": "salesbot.automations/1", "id": "sales", "pipeline": "Sales",
       "rules": [{"id": "hello", "stage": "Incoming", "on": ["created"],
                  "do": {"actions": [{"do": "tags", "add": ["hello"]}]}}]}


def _config(redis_url: str) -> Any:
    return load_config(env={}, overrides={"redis_url": redis_url, "flows_dir": str(FIXTURES),
                                          "automations_dir": str(NO_AUTOMATIONS), "admin_token": "t"})


async def _quiet(svc: Services) -> EngineReactor:
    reactor = svc.leads.reactor
    assert isinstance(reactor, EngineReactor)
    assert not await reactor.prepare()  # no active document: the reactor knows it (a batch's first step)
    assert reactor.quiet is not None
    return reactor


async def _born(svc: Services, external: str) -> tuple[RedisCrm, CrmRef]:
    """A live chat contact and lead made while nothing listens: their first events born."""
    crm = svc.crm
    assert isinstance(crm, RedisCrm)
    await _quiet(svc)
    ref = await crm.identify(ChannelIdentity("livechat", "demo", external))
    await svc.leads.idle()
    return crm, ref


async def _queue_keys(redis: Redis, lead_id: str) -> list[bytes]:
    return [key async for key in redis.scan_iter(match=f"sb:c:{{{lead_cid(lead_id)}}}:*")]


def _plain(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The history without what differs from lead to lead (ids, times, the contact)."""
    return [{k: v for k, v in h.items() if k not in ("id", "at", "happened_at")} | (
        {"data": {**h["data"], "contact": "c"}} if "contact" in h["data"] else {}) for h in history]


async def test_a_new_leads_events_keep_no_queue_when_nothing_listens(redis: Redis, redis_url: str) -> None:
    async with open_services(_config(redis_url), start_hub=False) as svc:
        crm = svc.crm
        assert isinstance(crm, RedisCrm)
        queued = await crm.identify(ChannelIdentity("livechat", "demo", "before", "Ada"))  # not known yet: queued
        await svc.leads.idle()
        assert await _queue_keys(redis, queued.lead_id)
        await _quiet(svc)
        ref = await crm.identify(ChannelIdentity("livechat", "demo", "born-1", "Ada"))
        await svc.leads.idle()
        assert await _queue_keys(redis, ref.lead_id) == []  # (the old code: sb:c:{lead:<id>}:meta)
        raw = await redis.hget(leadborn.key(ref.lead_id), ref.lead_id)
        assert raw is not None and len(raw) <= 50  # a field of a compact bucket hash
        history = await svc.leads.history(ref.lead_id)
        assert _plain(history) == _plain(await svc.leads.history(queued.lead_id))  # the same entries
        assert [(h["seq"], h["type"], h["data"]) for h in history] == [
            (1, "lead.created", {"pipeline": "Sales", "stage": "Incoming"}),
            (2, "contact.created", {"contact": ref.contact_id})]
        ids = [h["id"] for h in history]
        assert len(set(ids)) == 2 and all(i.startswith("gen-") and len(i) == 20 for i in ids)
        assert all(h["at"] == h["happened_at"] and h["source"] == "crm" and h["depth"] == 0 for h in history)


async def test_a_lead_created_through_the_directory_is_born_too(redis: Redis, redis_url: str) -> None:
    async with open_services(_config(redis_url), start_hub=False) as svc:
        assert svc.directory is not None
        await _quiet(svc)
        lead = str((await svc.directory.create_lead({"name": "Deal"}))["id"])  # the MULTI/EXEC's EVAL
        await svc.leads.idle()
        assert await _queue_keys(redis, lead) == []
        assert [(h["seq"], h["type"]) for h in await svc.leads.history(lead)] == [(1, "lead.created")]


async def test_later_events_follow_the_born_ones_and_know_the_contact(redis: Redis, redis_url: str) -> None:
    async with open_services(_config(redis_url), start_hub=False) as svc:
        crm, ref = await _born(svc, "born-2")
        await svc.leads.deliver(svc.leads.event("order.paid", ref.lead_id, id_="pay-1"))  # no contact named
        meta = await svc.store.meta(lead_cid(ref.lead_id))
        assert meta.get("contact_id") == ref.contact_id  # the queue learnt its contact (from the born record)
        await crm.execute(ref, {"do": "change_stage", "stage": "Qualified"})
        await svc.leads.idle()
        history = await svc.leads.history(ref.lead_id)
        assert [(h["seq"], h["type"]) for h in history] == [
            (1, "lead.created"), (2, "contact.created"), (3, "order.paid"), (4, "lead.stage_changed")]
        assert [h["seq"] for h in await svc.leads.history(ref.lead_id, 2)] == [3, 4]
        again = await svc.leads.deliver(svc.leads.event("order.paid", ref.lead_id, id_="pay-1"))
        assert again.duplicate  # dedupe as before: the queue's
        # the queue's first batch took the born entries into its transcript: the field is gone
        assert await redis.hget(leadborn.key(ref.lead_id), ref.lead_id) is None
        assert [(n, codec.unpack(raw)["type"]) for n, raw in await svc.store.tail_log(lead_cid(ref.lead_id))] == [
            (1, "lead.created"), (2, "contact.created"), (3, "order.paid"), (4, "lead.stage_changed")]


async def test_born_entries_go_with_their_bucket_and_not_into_a_queue_made_after_the_ttl(
        redis: Redis, redis_url: str) -> None:
    """A born field is not kept forever (the bucket's TTL), and a lead whose queue is made
    after the store's TTL gets the history main gives: its queue would have expired, so only
    the new event, numbered 1 (not the born entries brought back)."""
    async with open_services(_config(redis_url), start_hub=False) as svc:
        _, ref = await _born(svc, "born-late")
        ttl = await redis.ttl(leadborn.key(ref.lead_id))
        assert svc.store.ttl - 5 <= ttl <= svc.store.ttl
        real = svc.leads.clock
        svc.leads.clock = lambda: real() + svc.store.ttl + 60  # the TTL went by (another write kept the bucket)
        assert await svc.leads.history(ref.lead_id) == []
        await svc.leads.deliver(svc.leads.event("order.paid", ref.lead_id, id_="late-1"))
        assert [(h["seq"], h["type"]) for h in await svc.leads.history(ref.lead_id)] == [(1, "order.paid")]
        assert await redis.hget(leadborn.key(ref.lead_id), ref.lead_id) is None
        assert (await svc.store.meta(lead_cid(ref.lead_id))).get("contact_id") == ref.contact_id


def test_only_leads_of_dense_buckets_are_born() -> None:
    assert leadborn.dense("7") and leadborn.dense(str((1 << 24) - 1))
    assert not leadborn.dense(str(1 << 24)) and not leadborn.dense("abc")


async def test_a_document_stored_meanwhile_sends_the_events_to_the_queue(redis: Redis, redis_url: str) -> None:
    """The reactor of this process still thinks nothing is active; the create script sees the
    generation token moved and queues the events: the new rule fires on the new lead."""
    async with open_services(_config(redis_url), start_hub=False) as svc:
        crm = svc.crm
        assert isinstance(crm, RedisCrm) and svc.directory is not None
        reactor = await _quiet(svc)
        await reactor.documents.put("sales", DOC, digest=digest_of(DOC), name="sales")  # another process's PUT
        assert reactor.quiet is not None  # not seen here yet
        ref = await crm.identify(ChannelIdentity("livechat", "demo", "born-3"))
        await svc.leads.idle()
        assert {k.decode(): int(v) for k, v in (await redis.hgetall(counts_key("sales"))).items()} == {
            "hello:fired": 1, "hello:acted": 1}
        assert await redis.hget(leadborn.key(ref.lead_id), ref.lead_id) is None
        assert [h["type"] for h in await svc.leads.history(ref.lead_id) if h["role"] == "event"] == [
            "lead.created", "contact.created", "lead.tag_added"]  # (the rule's tag)
        assert reactor.quiet is None  # the batch found the document
        lead = str((await svc.directory.create_lead({"name": "Deal"}))["id"])  # now queued at once
        await svc.leads.idle()
        assert int((await redis.hgetall(counts_key("sales")))[b"hello:fired"]) == 2
        assert await _queue_keys(redis, lead)


def test_the_compact_form_reads_back_every_kind_of_event() -> None:
    common = leadborn.Born(1796650405.25, bytes(range(12)), "7", (
        ("lead.created", {"pipeline": "Sales", "stage": "Incoming"}, "7", 0),
        ("contact.created", {"contact": "7"}, "7", 0)))
    other = leadborn.Born(1.5, b"\xff" * 12, None, (
        ("lead.created", {"pipeline": "Sales", "stage": "Incoming", "x": 1}, None, 2),
        ("lead.tag_added", {"tag": "vip"}, "9", 0)))
    for born in (common, other):
        assert leadborn.decode(leadborn.encode(born)) == born
    assert len(leadborn.encode(common)) == 41  # (at 9 B, the seed 14, the contact, the position)
    assert [common.event_id(n) for n in range(2)] == ["gen-AAECAwQFBgcICQoL", "gen-AAECAwQFBgcICQoK"]


def test_born_entries_show_until_the_queue_has_a_transcript() -> None:
    born = leadborn.Born(1000.0, bytes(12), "7", (
        ("lead.created", {"pipeline": "Sales", "stage": "Incoming"}, "7", 0),
        ("contact.created", {"contact": "7"}, "7", 0)))

    def seqs(rows: list[tuple[int, bytes]], **kw: Any) -> list[int]:
        args: dict[str, Any] = {"now": 1200.0, "ttl": 500.0, "cap": 10, "limit": 200} | kw
        return [h["seq"] for h in leadborn.merged(born, rows, **args)]

    assert seqs([]) == [1, 2]
    assert seqs([], now=2000.0) == []  # expired with the TTL, as the queue would have
    assert seqs([], limit=1) == [2]
    assert seqs([], cap=1) == [2]  # as a transcript of ``transcript_max`` 1 keeps them
    assert seqs([(1, b"\x80"), (2, b"\x80"), (3, b"\x80")]) == [1, 2, 3]  # the queue took them in
    assert seqs([(9, b"\x80")], limit=1) == [9]


async def test_a_born_lead_and_a_queued_one_show_the_same_history_through_the_api(
        redis: Redis, redis_url: str) -> None:
    """The same events for a lead queued from the start (main's path) and for a born one: the
    API gives the same entries, numbers and fields (ids and times aside), before and after the
    queue's first batch, and with ``limit``."""
    from aiohttp import ClientSession
    from aiohttp.test_utils import TestServer

    from bot.server.app import create_app

    config = _config(redis_url)
    async with open_services(config, start_hub=False) as svc:
        crm = svc.crm
        assert isinstance(crm, RedisCrm)
        queued = await crm.identify(ChannelIdentity("livechat", "demo", "main-path", "Ada"))
        await svc.leads.idle()
        await _quiet(svc)
        born = await crm.identify(ChannelIdentity("livechat", "demo", "born-path", "Ada"))
        await svc.leads.idle()
        assert await _queue_keys(redis, born.lead_id) == [] and await _queue_keys(redis, queued.lead_id)
        srv = TestServer(create_app(config, services=svc))
        await srv.start_server()
        async with ClientSession(base_url=str(srv.make_url(""))) as client:
            async def events(lead: str, limit: int = 200) -> Any:
                answer = await client.get(f"/api/leads/{lead}/events?limit={limit}",
                                          headers={"Authorization": "Bearer t"})
                assert answer.status == 200
                body = await answer.json()
                assert set(body) == {"lead", "events"} and body["lead"] == lead
                return body["events"]

            async def same() -> None:
                for limit in (200, 1, 3):
                    mine, theirs = await events(born.lead_id, limit), await events(queued.lead_id, limit)
                    assert _plain(mine) == _plain(theirs)
                    assert [sorted(e) for e in mine] == [sorted(e) for e in theirs]

            await same()
            for ref in (queued, born):
                await svc.leads.deliver(svc.leads.event("order.paid", ref.lead_id, id_=f"pay-{ref.lead_id}"))
                await crm.execute(ref, {"do": "change_stage", "stage": "Qualified"})
                await svc.leads.idle()
            await same()
            assert [e["seq"] for e in await events(born.lead_id)] == [1, 2, 3, 4]
        await srv.close()
