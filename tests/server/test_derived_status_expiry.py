"""A conversation that expired while ``idle`` (or ``human``) stays a member of that status's set
(the indexes are cleaned lazily, by listings that walk it). When the same person comes back (same
conversation id) and the bot runs again, its status is ``bot``, which has no set (it is listed
when in none of the other statuses' sets): its first save leaves those sets, so it is listed."""

from __future__ import annotations

from aiohttp import ClientSession
from redis.asyncio import Redis

from bot.store import indexes as convindex
from tests.server.test_dashboard_api import AYSE, chat, ids, server  # noqa: F401 - fixtures


async def _expire(redis: Redis, cid: str) -> None:
    """Every key of the conversation gone, as their TTL (``conversation_ttl_days``) would do."""
    keys = [key async for key in redis.scan_iter(match=f"sb:c:{{{cid}}}:*")]
    assert keys
    await redis.delete(*keys)


async def test_a_returning_conversation_running_a_bot_is_listed_under_status_bot(
        http: ClientSession, redis: Redis) -> None:
    cid = await chat(http, "return-0001x", "hi", name="Returning Person")
    other = await chat(http, "return-0002x", "hi", name="Other Person")
    assert (await http.post(f"/api/conversations/{cid}/stop", headers=AYSE)).status == 202
    assert await ids(http, status="idle") == [cid]
    await _expire(redis, cid)
    assert await ids(http) == [other]  # the unfiltered list forgets it (the activity index only)
    assert await redis.sismember(convindex.status_key("idle"), cid)  # left behind: nobody listed idle

    assert await chat(http, "return-0001x", "hello again", name="Returning Person") == cid
    assert await ids(http) == [cid, other]  # listed, its bot running
    assert await ids(http, status="bot") == [cid, other]
