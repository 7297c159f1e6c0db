"""The CRM snapshot prefetch: a customer message's snapshot reads travel with the push.

``ConversationService.deliver`` sends the embedded CRM's ``snapshot_reads`` of the lead it
remembers for a conversation in the push's round trip; the snapshot is built from those replies
only when the conversation still works on that lead. Real services on a real Redis, as in
``test_conversations.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from bot.engine import events as ev
from bot.runtime import service as conversations_module
from bot.server.services import Services
from bot.store import codec
from bot.store.keys import ConversationKey
from bot.store.statefields import SHORT
from crm_bridge import ChannelIdentity, CrmRef, records
from crm_bridge.versions import check
from tests.engine.helpers import make_doc
from tests.runtime.conftest import runtime_services
from tests.runtime.roundtrips import RoundTrips

#: Reads the CRM: the contact's first name and the lead's name.
GREETER = make_doc({
    "ask": {"type": "message",
            "text": "Hello {{ contact.first_name | default('there', true) }} about {{ lead.name }}",
            "buttons": [{"title": "Done", "next": "done"}],
            "other_answer": "ask", "no_answer": {"after": "1h", "next": "done"}},
    "done": {"type": "stop"},
}, id="greeter")

#: Never reads the CRM.
PLAIN = make_doc({
    "ask": {"type": "message", "text": "echo {{ message.text }}",
            "buttons": [{"title": "Done", "next": "done"}],
            "other_answer": "ask", "no_answer": {"after": "1h", "next": "done"}},
    "done": {"type": "stop"},
}, id="plain")


@pytest.fixture
async def svc(redis: Redis, redis_url: str, tmp_path: Path) -> AsyncIterator[Services]:
    async with runtime_services(redis_url, tmp_path) as services:
        await services.bots.put(GREETER)
        await services.bots.put(PLAIN)
        yield services


def _meta(external_id: str, name: str = "Ada Lovelace") -> dict[str, str]:
    return {"channel": "livechat", "account": "demo", "external_id": external_id, "name": name}


async def _say(svc: Services, cid: str, text: str, mid: str, *, bot: str = "greeter",
               meta: dict[str, str] | None = None) -> str:
    """Deliver a customer message, processed here; return the bot's reply to it."""
    before = len(await _bot_texts(svc, cid))
    result = await svc.conversations.deliver(cid, ev.InboundMessage(text=text, message_id=mid, greeting=bot),
                                             dedupe_id=mid, meta=meta)
    assert result.processed_here and not result.duplicate
    replies = await _bot_texts(svc, cid)
    assert len(replies) == before + 1, replies
    return replies[-1]


async def _bot_texts(svc: Services, cid: str) -> list[str]:
    return [e["text"] for _, raw in await svc.store.read_log(cid, 0, 10_000)
            if (e := codec.unpack(raw))["role"] == "bot"]


async def _ref(svc: Services, cid: str) -> CrmRef:
    meta = await svc.store.meta(cid)
    return CrmRef(meta["contact_id"], meta["lead_id"], meta.get("company_id") or None)


class SnapshotSpy:
    """Counts the CRM's own snapshot reads (the fallback when nothing usable was prefetched)."""

    def __init__(self, svc: Services, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[CrmRef] = []
        crm = svc.crm
        real = crm.snapshot

        async def snapshot(ref: CrmRef) -> dict[str, Any]:
            self.calls.append(ref)
            return await real(ref)

        monkeypatch.setattr(crm, "snapshot", snapshot)


async def test_the_second_message_sees_a_crm_change_made_after_the_first(
        svc: Services, trips: RoundTrips, monkeypatch: pytest.MonkeyPatch) -> None:
    cid = "livechat:demo:fresh"
    assert await _say(svc, cid, "hi", "m1", meta=_meta("fresh")) == "Hello Ada about Ada Lovelace"
    ref = await _ref(svc, cid)
    assert svc.conversations._snapshot_refs[cid] == ref  # remembered: the next push carries its reads
    await svc.crm.execute(ref, {"do": "set_field", "entity": "contact", "field": "name", "value": "Grace Hopper"})
    await svc.crm.execute(ref, {"do": "set_field", "entity": "lead", "field": "name", "value": "Big deal"})
    spy = SnapshotSpy(svc, monkeypatch)
    await svc.leads.idle()  # the lead's own events are handled in the background
    trips.clear()
    assert await _say(svc, cid, "again", "m2") == "Hello Grace about Big deal"
    assert spy.calls == []  # built from the reads sent with the push, not read again
    assert trips.crm_reads() == [records.read("contact", ref.contact_id), records.read("lead", ref.lead_id)]
    # and once more: every message reads what the CRM holds now
    await svc.crm.execute(ref, {"do": "set_field", "entity": "contact", "field": "first_name", "value": "Amazing"})
    assert await _say(svc, cid, "third", "m3") == "Hello Amazing about Big deal"
    assert spy.calls == []


async def test_a_steady_state_message_costs_two_round_trips_and_no_redis_py_call(
        svc: Services, trips: RoundTrips) -> None:
    cid = "livechat:demo:trips"
    await _say(svc, cid, "hi", "t1", meta=_meta("trips"))
    await _say(svc, cid, "warm up", "t2")
    ref = await _ref(svc, cid)
    for n in range(3, 6):
        await svc.leads.idle()  # the lead's own events are handled in the background
        trips.clear()
        result = await svc.conversations.deliver(cid, ev.InboundMessage(text=f"m{n}", message_id=f"t{n}"),
                                                 dedupe_id=f"t{n}")
        assert result.processed_here
        assert len(trips.fast) == 2, trips.fast  # push (+ CRM reads), save
        push, save = trips.fast
        assert push[0][0] == "EVALSHA" and save[0][0] == "EVALSHA"
        assert push[-1] == check(ref)  # the snapshot this process kept: its records' versions only
        assert not any(c[0] == "GET" for c in save)
        assert trips.redis_py == []  # nothing through redis-py on the hot path
    assert (await _bot_texts(svc, cid))[-1] == "Hello Ada about Ada Lovelace"


async def test_a_conversation_moved_to_another_lead_does_not_use_the_old_leads_reads(
        svc: Services, redis: Redis, trips: RoundTrips, monkeypatch: pytest.MonkeyPatch) -> None:
    cid = "livechat:demo:moved"
    assert await _say(svc, cid, "hi", "v1", meta=_meta("moved")) == "Hello Ada about Ada Lovelace"
    old = await _ref(svc, cid)
    other = await svc.crm.identify(ChannelIdentity("livechat", "demo", "someone-else", name="Grace Hopper"))
    assert other.lead_id != old.lead_id
    # Another process (a CRM webhook, say) points the conversation at the other lead.
    await redis.hset(f"sb:c:{{{cid}}}:meta", SHORT["lead_id"], other.lead_id)
    spy = SnapshotSpy(svc, monkeypatch)
    await svc.leads.idle()  # the lead's own events are handled in the background
    trips.clear()
    assert await _say(svc, cid, "again", "v2") == "Hello Ada about Grace Hopper"
    moved = CrmRef(old.contact_id, other.lead_id)
    # The push carried the old lead's version check (all it knew); it was not used: the CRM was read.
    assert check(old) in trips.fast[0]
    assert spy.calls == [moved]
    assert svc.conversations._snapshot_refs[cid] == moved
    await svc.leads.idle()  # the lead's own events are handled in the background
    trips.clear()
    assert await _say(svc, cid, "third", "v3") == "Hello Ada about Grace Hopper"
    assert spy.calls == [moved]  # now prefetched again, for the new lead: its kept snapshot checked
    assert check(moved) in trips.fast[0] and trips.crm_reads() == []
    assert records.read("lead", old.lead_id) not in trips.crm_reads()


async def test_a_conversation_moved_to_another_contact_and_lead(
        svc: Services, redis: Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    cid = "livechat:demo:moved-both"
    assert await _say(svc, cid, "hi", "w1", meta=_meta("moved-both")) == "Hello Ada about Ada Lovelace"
    other = await svc.crm.identify(ChannelIdentity("livechat", "demo", "grace", name="Grace Hopper"))
    await svc.crm.execute(other, {"do": "set_field", "entity": "lead", "field": "name", "value": "Compilers"})
    await redis.hset(f"sb:c:{{{cid}}}:meta", mapping={SHORT["contact_id"]: other.contact_id,
                                                      SHORT["lead_id"]: other.lead_id})
    assert await _say(svc, cid, "again", "w2") == "Hello Grace about Compilers"
    assert svc.conversations._snapshot_refs[cid] == other


async def test_the_remembered_leads_are_a_bounded_lru(svc: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(conversations_module, "SNAPSHOT_REFS_MAX", 3)
    refs = svc.conversations._snapshot_refs
    cids = [f"livechat:demo:lru{i}" for i in range(6)]
    for i, cid in enumerate(cids[:5]):
        await _say(svc, cid, "hi", f"lru{i}", meta=_meta(f"lru{i}"))
        assert len(refs) <= 3
    assert list(refs) == cids[2:5]
    await _say(svc, cids[2], "again", "lru2b")  # used: now the most recent
    assert list(refs) == [cids[3], cids[4], cids[2]]
    await _say(svc, cids[5], "hi", "lru5", meta=_meta("lru5"))
    assert list(refs) == [cids[4], cids[2], cids[5]]  # the least recently used one went
    # A forgotten conversation still reads its CRM data (without the prefetch) and is remembered again.
    ref0 = await _ref(svc, cids[0])
    await svc.crm.execute(ref0, {"do": "set_field", "entity": "contact", "field": "name", "value": "Ida Rhodes"})
    spy = SnapshotSpy(svc, monkeypatch)
    assert await _say(svc, cids[0], "back", "lru0b") == "Hello Ida about Ada Lovelace"
    assert spy.calls == [ref0]
    assert list(refs) == [cids[2], cids[5], cids[0]] and refs[cids[0]] == ref0


async def test_a_flow_that_never_reads_the_crm_is_not_remembered(svc: Services, trips: RoundTrips) -> None:
    cid = "livechat:demo:plain"
    assert await _say(svc, cid, "hi", "p1", bot="plain", meta=_meta("plain")) == "echo hi"
    assert (await svc.store.meta(cid))["lead_id"]  # the lead was found all the same
    assert cid not in svc.conversations._snapshot_refs
    await svc.leads.idle()  # the lead's own events are handled in the background
    trips.clear()
    assert await _say(svc, cid, "again", "p2", bot="plain") == "echo again"
    assert cid not in svc.conversations._snapshot_refs
    assert trips.crm_reads() == []  # no CRM reads with the push, none later
    assert len(trips.fast) == 2


async def test_a_conversation_without_a_lead_sends_no_crm_reads(svc: Services, trips: RoundTrips) -> None:
    cid = "livechat:demo:anonymous"
    assert await _say(svc, cid, "hi", "a1", meta={"channel": "livechat", "account": "demo"}) == \
        "Hello there about "
    assert cid not in svc.conversations._snapshot_refs
    assert trips.crm_reads() == []


async def test_the_event_just_pushed_is_not_decoded_again(svc: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    """The batch a push hands back holds the payload this process just encoded: the turn uses the
    event itself (issue 14, CPU per message); an event queued by another delivery is decoded."""
    decoded: list[bytes] = []
    decode = codec.decode_event_extra

    def counting(raw: bytes) -> tuple[ev.Event, dict[str, Any]]:
        decoded.append(raw)
        return decode(raw)

    monkeypatch.setattr(codec, "decode_event_extra", counting)
    cid = "livechat:demo:own-event"
    assert await _say(svc, cid, "hi", "m1", bot="plain", meta=_meta("v-own")) == "echo hi"
    assert await _say(svc, cid, "again", "m2", bot="plain") == "echo again"
    result = await svc.conversations.deliver(cid, ev.TimerFired("t-unknown"), dedupe_id="timer:t-unknown",
                                             entry_extra={"due": 1.5})
    assert result.processed_here
    assert decoded == []
    queued = codec.encode_event(ev.InboundMessage(text="queued", message_id="m3"))
    await svc.store.redis.rpush(ConversationKey(cid).inbox, queued)  # waiting, no lock taken
    result = await svc.conversations.deliver(cid, ev.InboundMessage(text="last", message_id="m4"), dedupe_id="m4")
    assert result.processed_here
    assert decoded == [queued]  # the batch: the queued event (decoded), then the one just pushed
    assert (await _bot_texts(svc, cid))[-2:] == ["echo queued", "echo last"]
