"""A lead id shaped like ``<a>:<b>`` (the generic webhook CRM returns any string) makes its queue
id ``lead:<a>:<b>`` look like a channel conversation's id: nothing in the store tells queues
apart by the id's shape, so such a lead's CRM changes are queued by plain commands and a
conversation with such a lead is not parked."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from bot.config import load_config
from bot.engine import events as ev
from bot.runtime.chatevents import ChatEvents
from bot.runtime.leads import lead_cid
from bot.server.services import Services, open_services
from bot.store import keys as k
from crm_bridge.changes import Change

LEAD = "deal:42"  # a CRM's lead id with one colon


@pytest.fixture
async def svc(redis: Redis, redis_url: str, tmp_path: Path) -> AsyncIterator[Services]:
    cfg = load_config(env={}, overrides={"redis_url": redis_url, "flows_dir": str(tmp_path),
                                         "automations_dir": str(tmp_path / "automations"),
                                         "admin_token": "t", "lock_ttl": 2.0, "park_after": 2})
    async with open_services(cfg, start_hub=False) as services:
        yield services


def test_a_lead_queue_id_can_look_like_a_conversation_id() -> None:
    assert k.id_fields(lead_cid(LEAD)) == {"channel": "lead", "account": "deal", "external_id": "42"}


async def test_the_crm_sink_queues_a_change_of_such_a_lead(svc: Services) -> None:
    # raises now: the embedded CRM's / Kommo echo's MULTI/EXEC (the CRM write itself) is never sent
    commands = svc.leads.commands([Change("lead.updated", LEAD, {}, None, 0)])
    assert commands[0][:2] == ("RPUSH", k.ConversationKey(lead_cid(LEAD)).inbox)


async def test_a_conversation_of_such_a_lead_is_parked_once_a_chat_rule_listens(svc: Services, redis: Redis) -> None:
    async def listening() -> frozenset[str]:
        return frozenset({"sales"})

    svc.conversations.chat = ChatEvents(svc.leads, listening)
    cid = "livechat:demo:colonlead"
    meta = {"channel": "livechat", "account": "demo", "external_id": "colonlead",
            "contact_id": "c1", "lead_id": LEAD}  # the conversation's CRM records, as identify gave them
    for i in range(2):  # park_after 2
        await svc.conversations.deliver(cid, ev.InboundMessage(text=f"hi {i}", message_id=f"m{i}"),
                                        dedupe_id=f"m{i}", meta=meta)
    stored = await redis.hgetall(k.ConversationKey(cid).meta)
    assert b"parked" not in stored, stored.get(b"error")
    assert await redis.llen(k.ConversationKey(cid).inbox) == 0
