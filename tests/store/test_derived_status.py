"""The dashboard's commonest status (``bot``) keeps no filter set (issue 14, aim 3): it lists as
the conversations in neither other status's set, filtered alone, with others and in a search; the
set an older version kept is dropped at start."""

from __future__ import annotations

from redis.asyncio import Redis

from bot.store import indexes
from bot.store.indexes import DERIVED_STATUS, ConversationIndex, Filters, seed, status_key
from bot.store.layout import drop_derived_sets


async def _seed(redis: Redis, rows: list[tuple[str, str, str, float]]) -> None:
    pipe = redis.pipeline(transaction=False)
    for cid, status, channel, at in rows:
        seed(pipe, cid, {"status": status, "channel": channel, "bot": "demo", "name": f"Ann {cid[-1]}",
                         "activity": str(at)})
    await pipe.execute()


async def _ids(redis: Redis, filters: Filters, search: str | None = None) -> list[str]:
    page = await ConversationIndex(redis).page(filters, search=search, limit=10)
    return [cid for cid, _, _ in page.rows]


async def test_the_derived_status_lists_alone_with_other_filters_and_in_a_search(redis: Redis) -> None:
    await _seed(redis, [("livechat:demo:a", "bot", "livechat", 1.0), ("whatsapp:main:b", "idle", "whatsapp", 2.0),
                        ("livechat:demo:c", "human", "livechat", 3.0), ("whatsapp:main:d", "bot", "whatsapp", 4.0)])
    assert not await redis.exists(status_key(DERIVED_STATUS))
    assert await _ids(redis, Filters(status="bot")) == ["whatsapp:main:d", "livechat:demo:a"]
    assert await _ids(redis, Filters(status="bot", channel="livechat")) == ["livechat:demo:a"]
    assert await _ids(redis, Filters(status="idle")) == ["whatsapp:main:b"]
    assert await _ids(redis, Filters(status="bot"), search="ann") == ["whatsapp:main:d", "livechat:demo:a"]
    assert await _ids(redis, Filters(status="bot", channel="whatsapp"), search="ann") == ["whatsapp:main:d"]
    assert await _ids(redis, Filters(status="human"), search="ann") == ["livechat:demo:c"]
    assert await redis.keys(f"{indexes.PREFIX}:idx:{{conv}}:tmp:*") == []


async def test_the_derived_status_set_of_an_older_version_is_dropped_at_start(redis: Redis) -> None:
    await redis.sadd(status_key(DERIVED_STATUS), "livechat:demo:a")  # as an older version kept it
    await _seed(redis, [("livechat:demo:a", "bot", "livechat", 1.0)])
    await drop_derived_sets(redis)
    assert not await redis.exists(status_key(DERIVED_STATUS))
    assert await _ids(redis, Filters(status="bot")) == ["livechat:demo:a"]
