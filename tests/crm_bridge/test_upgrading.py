"""``crm_bridge/upgrading.py``: the index upgrade in the background, one process walking at a
time, a filter by responsible never answered from a half-filled set, against a real Redis."""

from __future__ import annotations

import asyncio
import logging

import pytest
from redis.asyncio import Redis

from crm_bridge import RedisCrm, idsets
from crm_bridge.directory import CrmDirectory
from crm_bridge.indexes import LAYOUT_KEY, by_key
from crm_bridge.upgrading import GUARD_KEY, IndexUpgrade


async def _older_version(redis: Redis, n: int) -> tuple[CrmDirectory, set[bytes]]:
    """Contacts as a version without the ``responsible`` sets left them."""
    directory = CrmDirectory(RedisCrm(redis))
    ids = {str((await directory.create_contact({"name": f"Old {i}", "responsible": "7"}))["id"]).encode()
           for i in range(n)}
    await redis.delete(*await idsets.names(redis, by_key("contact", "responsible", "7")), LAYOUT_KEY)
    return directory, ids


async def _zscans(redis: Redis) -> int:
    return int((await redis.info("commandstats")).get("cmdstat_zscan", {}).get("calls", 0))


async def test_processes_starting_together_walk_once(redis: Redis) -> None:
    _, old = await _older_version(redis, 3)
    before = await _zscans(redis)
    first, second = IndexUpgrade(redis), IndexUpgrade(redis)  # two processes' starts
    added = await asyncio.gather(first.start(), second.start())
    assert sorted(added) == [0, 3] and await _zscans(redis) - before == 1  # 3 contacts: one ZSCAN
    assert await idsets.members(redis, by_key("contact", "responsible", "7")) == {o.decode() for o in old}
    assert await redis.get(LAYOUT_KEY) == b"2" and await redis.exists(GUARD_KEY) == 0


async def test_a_filter_while_another_process_walks_is_complete(redis: Redis) -> None:
    """Another process holds the guard: this one's start leaves the walk to it, and a filtered
    list walks itself rather than answer from the half-filled set."""
    directory, old = await _older_version(redis, 3)
    await redis.set(GUARD_KEY, "another process", px=60_000)
    assert await directory.indexes.start() == 0 and await redis.get(LAYOUT_KEY) is None
    found, total = await directory.search("contact", filters={"responsible": "7"})
    assert total == 3 and {str(c["id"]).encode() for c in found} == old
    assert await redis.get(LAYOUT_KEY) == b"2"
    before = await _zscans(redis)
    await redis.delete(LAYOUT_KEY)  # seen current once: no more reads, no walk
    assert (await directory.search("contact", filters={"responsible": "7"}))[1] == 3
    assert await _zscans(redis) == before


async def test_a_failed_walk_is_logged_and_close_ends_the_task(caplog: pytest.LogCaptureFixture) -> None:
    unreachable = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1)
    try:
        upgrading = IndexUpgrade(unreachable)
        with caplog.at_level(logging.ERROR, logger="salesbot.crm.upgrading"):
            assert await upgrading.start() == 0
        assert [r.getMessage() for r in caplog.records] == ["crm.indexes_upgrade_failed"]
    finally:
        await unreachable.aclose()


async def test_close_cancels_a_walk_in_progress(redis: Redis) -> None:
    await _older_version(redis, 1)
    upgrading = IndexUpgrade(redis)
    task = upgrading.start()
    await upgrading.close()
    assert task.done()
