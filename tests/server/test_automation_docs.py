"""What the server checks automation documents against: the CRM's pipelines (embedded, Kommo over
real HTTP to the fake Kommo, or unknown) and the bot store, with real Redis."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from bot.errors import AutomationsInvalid
from bot.server.automation_docs import AutomationDocuments, crm_pipelines
from bot.store.bots import BotRegistry
from crm_bridge import KommoCrm, RedisCrm, WebhookCrm
from crm_bridge.memory import DEFAULT_STAGES
from tests.crm_bridge.fakes.kommo import TOKEN, FakeKommo
from tests.live_app import free_port

DOC: dict[str, Any] = {"format": "salesbot.automations/1", "id": "sales", "pipeline": "Sales",
                       "rules": [{"id": "r", "stage": "Qualified", "on": "moved_in", "do": {"start_bot": "demo"}}]}


@pytest.fixture
async def kommo() -> AsyncIterator[KommoCrm]:
    async with FakeKommo(rate_limit=None) as fake:
        crm = KommoCrm(fake.url, TOKEN, rate=1000)
        try:
            yield crm
        finally:
            await crm.aclose()


async def test_the_embedded_crm_gives_its_configured_pipelines_or_the_default(redis: Redis) -> None:
    assert await crm_pipelines(RedisCrm(redis)) == {"Sales": DEFAULT_STAGES}
    configured = {"Support": ["New", "Done"], "Sales": ["A", "B"]}
    assert await crm_pipelines(RedisCrm(redis, pipelines=configured)) == configured


async def test_kommo_gives_the_accounts_pipelines_without_its_incoming_leads_stage(kommo: KommoCrm) -> None:
    assert await crm_pipelines(kommo) == {"Sales": ["New", "Contacted", "Qualified", "Won", "Lost"],
                                          "Partners": ["Applied", "Signed", "Closed - won", "Closed - lost"]}


async def test_an_unreachable_kommo_or_a_webhook_crm_leaves_pipelines_unchecked(
        caplog: pytest.LogCaptureFixture) -> None:
    crm = KommoCrm(f"http://127.0.0.1:{free_port()}", TOKEN, rate=1000, timeout=1.0)
    try:
        with caplog.at_level(logging.WARNING, logger="salesbot.automations"):
            assert await crm_pipelines(crm) == {}
    finally:
        await crm.aclose()
    assert [r.getMessage() for r in caplog.records if r.name == "salesbot.automations"] == [
        "automations.pipelines_unknown"]
    webhook = WebhookCrm("http://127.0.0.1:9/crm", "a-secret-value")
    try:
        assert await crm_pipelines(webhook) == {}
    finally:
        await webhook.aclose()


async def test_documents_are_checked_against_kommos_stages_and_the_stored_bots(
        redis: Redis, kommo: KommoCrm) -> None:
    bots = BotRegistry(redis)
    documents = AutomationDocuments.of(redis, kommo, bots)
    with pytest.raises(AutomationsInvalid) as info:
        await documents.put({**DOC, "rules": [{**DOC["rules"][0], "stage": "Incoming leads"}]})
    assert {p.pointer: p.message for p in info.value.problems} == {
        "/rules/0/stage": 'unknown stage "Incoming leads" of pipeline "Sales"; its stages: New, Contacted, '
                          "Qualified, Won, Lost",
        "/rules/0/do/start_bot": 'unknown bot "demo"; no bot is loaded'}
    await bots.put({"format": "salesbot.flow/1", "id": "demo", "start": "a",
                    "steps": {"a": {"type": "message", "text": "hi"}}})
    info_, new = await documents.put(DOC)
    assert (info_.version, new) == (1, True)
    assert (await documents.put(DOC))[1] is False
