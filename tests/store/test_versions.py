"""Versioned documents in a real Redis: the one store bots and automation documents share."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from bot.store.bots import BotNotFound, BotRegistry
from bot.store.versions import DocumentNotFound, VersionedDocuments, digest_of


async def test_versions_unchanged_activate_and_listing(redis: Redis) -> None:
    docs = VersionedDocuments(redis, "automation")
    one, two = {"id": "a", "n": 1}, {"id": "a", "n": 2}
    info, new = await docs.put("a", one, digest=digest_of(one), name="A")
    assert (info.id, info.version, new) == ("a", 1, True)
    assert (await docs.put("a", {"n": 1, "id": "a"}, digest=digest_of({"n": 1, "id": "a"}), name="A"))[1] is False
    info, new = await docs.put("a", two, digest=digest_of(two), name="A2", warnings=("/x: hmm",))
    assert (info.version, new, info.warnings) == (2, True, ("/x: hmm",))
    assert await docs.document("a") == (2, two)
    assert (await docs.activate("a", 1)).name == "A"
    assert await docs.document("a") == (1, one)
    assert await docs.document("a", 2) == (2, two)
    assert await docs.listing() == [{"id": "a", "name": "A", "active_version": 1, "versions": 2}]
    assert await redis.smembers("sb:automations") == {b"a"}
    assert await redis.exists("sb:automation:{a}:v:2") == 1  # the document's keys share its hash tag


async def test_not_found_names_the_kind(redis: Redis) -> None:
    docs = VersionedDocuments(redis, "automation")
    with pytest.raises(DocumentNotFound, match="no automation 'x'"):
        await docs.document("x")
    with pytest.raises(DocumentNotFound, match="no automation 'x' version 3"):
        await docs.activate("x", 3)


async def test_bots_keep_their_keys_and_error(redis: Redis) -> None:
    """The bot registry stores through the same code under the keys it always used."""
    bots = BotRegistry(redis)
    flow = {"format": "salesbot.flow/1", "id": "hi", "start": "a", "steps": {"a": {"type": "message", "text": "x"}}}
    info, new = await bots.put(flow)
    assert (info.bot, info.version, new) == ("hi", 1, True)
    assert await redis.get("sb:bot:{hi}:active") == b"1"
    assert await redis.smembers("sb:bots") == {b"hi"}
    with pytest.raises(BotNotFound) as caught:
        await bots.activate("hi", 2)
    assert (caught.value.bot, str(caught.value)) == ("hi", "no bot 'hi' version 2")
    assert bots.get("hi") is not None and bots.get("hi").version == 1  # type: ignore[union-attr]


async def test_a_new_active_version_is_served_only_once_compiled(redis: Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process activates version 2: while this one compiles it (in a thread, seconds for
    a big flow), the bot is still served at version 1, never missing (a greeting's unknown bot)."""
    import asyncio
    import threading

    from bot.store import bots as bots_module

    def flow(text: str) -> dict[str, object]:
        step = {"type": "message", "text": text}
        return {"format": "salesbot.flow/1", "id": "hi", "start": "a", "steps": {"a": step}}

    here, there = BotRegistry(redis), BotRegistry(redis)
    await there.put(flow("one"))
    await here.refresh("hi")
    await there.put(flow("two"))  # stored and made active by the other process
    entered, release = threading.Event(), threading.Event()
    check = bots_module._check_document

    def held(doc: object) -> object:
        entered.set()
        release.wait(10)
        return check(doc)

    monkeypatch.setattr(bots_module, "_check_document", held)
    refreshing = asyncio.create_task(here.refresh("hi"))
    assert await asyncio.to_thread(entered.wait, 10)
    served = here.get("hi")
    assert served is not None and served.version == 1  # mid-compile: the version before
    release.set()
    await refreshing
    served = here.get("hi")
    assert served is not None and served.version == 2
