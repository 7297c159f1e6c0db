"""The rule engine's adapter compiles a new document version once, off the event loop, however
many lead batches need it at the same moment (a 1,000-rule document takes a second or two: each
batch compiling it in the loop stalled conversations and Redis replies for all of them)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any

import pytest
from redis.asyncio import Redis

from bot.automations.compiled import CompiledAutomations, compile_automations
from bot.runtime.automations import EngineReactor
from bot.store.versions import VersionedDocuments

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

    monkeypatch.setattr("bot.runtime.automations.compile_automations", counting)
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
