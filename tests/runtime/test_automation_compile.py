"""A new automation document is checked (on PUT) and compiled (by the rule engine's adapter, once,
however many lead batches need it at the same moment) off the event loop: a 1,000-rule document
takes a second or two, and in the loop that stalled every conversation and Redis reply."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any

import pytest
from redis.asyncio import Redis

from bot.automations.compiled import CompiledAutomations, compile_automations
from bot.automations.validate import AutomationContext, check_automations
from bot.runtime.automations import EngineReactor
from bot.server.automation_docs import AutomationDocuments
from bot.store.bots import BotRegistry
from bot.store.versions import VersionedDocuments
from crm_bridge import RedisCrm

STAGES = ["New", "Won"]
DOC: dict[str, Any] = {
    "format": "salesbot.automations/1", "id": "sales", "pipeline": "Sales",
    "rules": [{"id": "tag_new", "stage": "New", "on": ["created"],
               "do": {"actions": [{"do": "tags", "add": ["new"]}]}}],
}


async def test_concurrent_batches_compile_a_new_version_once_and_off_the_event_loop(
        redis: Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    documents = VersionedDocuments(redis, "automation")
    await documents.put("sales", DOC, digest="d1", name="sales")
    compiled_in: list[bool] = []

    def counting(*args: Any, **kwargs: Any) -> CompiledAutomations:
        compiled_in.append(threading.current_thread() is threading.main_thread())
        return compile_automations(*args, **kwargs)

    monkeypatch.setattr("bot.automations.compiled.compile_automations", counting)  # imported where used
    # Each batch that would compile waits (at most a second) until all eight got that far, as
    # when a slow document read or compilation lets them all miss the cache.
    read = documents.document
    arrived: list[int] = []
    everyone = asyncio.Event()

    async def reading(doc_id: str, version: int | None = None) -> tuple[int, Any]:
        arrived.append(1)
        if len(arrived) == 8:
            everyone.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(everyone.wait(), 1.0)
        return await read(doc_id, version)

    monkeypatch.setattr(documents, "document", reading)
    reactor = EngineReactor(documents, {"Sales": STAGES})
    assert await asyncio.gather(*(reactor.prepare() for _ in range(8))) == [True] * 8
    assert compiled_in == [False] and len(arrived) == 1  # once, in a worker thread
    assert reactor.document_for("Sales") is not None
    assert await reactor.prepare() and compiled_in == [False]  # cached afterwards

    await documents.put("sales", {**DOC, "name": "v2"}, digest="d2", name="sales")
    assert await asyncio.gather(*(reactor.prepare() for _ in range(3))) == [True] * 3
    assert compiled_in == [False, False]
    compiled = reactor.document_for("Sales")
    assert compiled is not None and compiled.version == 2


async def test_versions_no_longer_active_are_not_kept_compiled(redis: Redis) -> None:
    documents = VersionedDocuments(redis, "automation")
    reactor = EngineReactor(documents, {"Sales": STAGES})
    for n in range(1, 6):
        await documents.put("sales", {**DOC, "name": f"v{n}"}, digest=f"d{n}", name="sales")
        assert await reactor.prepare()
        assert set(reactor._compiled) == {("sales", n)}  # only the active version stays cached


async def test_a_document_put_is_checked_off_the_event_loop(redis: Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    checked_in: list[bool] = []

    def recording(doc: Any, context: AutomationContext) -> Any:
        checked_in.append(threading.current_thread() is threading.main_thread())
        return check_automations(doc, context)

    monkeypatch.setattr("bot.automations.validate.check_automations", recording)  # imported where used
    docs = AutomationDocuments.of(redis, RedisCrm(redis, pipelines={"Sales": STAGES}), BotRegistry(redis))
    info, new = await docs.put(DOC)
    assert new and info.version == 1 and checked_in == [False]
