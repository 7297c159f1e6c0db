"""At the upgrade, a conversation running a bot whose earlier life (same id, expired while idle)
left it in the ``idle`` set was listed under ``status=bot`` through the ``bot`` set older versions
kept; the start that drops that set first removes the stale membership, so it stays listed."""

from __future__ import annotations

from redis.asyncio import Redis

from bot.store.indexes import ConversationIndex, Filters, seed, status_key
from bot.store.layout import drop_derived_sets


async def test_a_bot_conversation_left_in_the_idle_set_stays_listed_after_the_upgrade(redis: Redis) -> None:
    cid = "livechat:demo:back"
    await redis.sadd(status_key("idle"), cid)  # its earlier life expired while idle: the member stayed
    pipe = redis.pipeline(transaction=False)
    seed(pipe, cid, {"status": "bot", "channel": "livechat", "bot": "demo", "activity": "5.0"})
    await pipe.execute()
    await redis.sadd(status_key("bot"), cid)  # as the older version's save indexed its status
    await drop_derived_sets(redis)
    page = await ConversationIndex(redis).page(Filters(status="bot"), limit=10)
    assert [c for c, _, _ in page.rows] == [cid]
