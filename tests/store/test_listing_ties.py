"""Pages of the dashboard's listing with many conversations sharing an activity (the cursor is
the last row, ``before`` and ``before_id``): under random filters, limits, plans and script
budgets, with expired conversations and stale entries in other partitions, every matching
conversation is listed exactly once across the pages, newest first, each page at most ``limit``
rows, however many share an activity (bot/store/partitions.py ``PAGE``)."""

from __future__ import annotations

import random

import pytest
from redis.asyncio import Redis

from bot.store import indexes, partitions
from bot.store.indexes import ConversationIndex, Filters, seed
from bot.store.keys import PREFIX

CHANNELS = ("livechat", "whatsapp")
BOTS = ("demo", "sales", "")


async def _pages(index: ConversationIndex, filters: Filters, search: str | None, limit: int) -> list[tuple[str, float]]:
    got: list[tuple[str, float]] = []
    before: float | None = None
    before_id: str | None = None
    for _ in range(2000):  # a listing that never ends fails
        page = await index.page(filters, search=search, before=before, before_id=before_id, limit=limit)
        assert len(page.rows) <= limit
        got += [(cid, score) for cid, score, _ in page.rows]
        if page.next_before is None:
            return got
        assert page.next_before_id is not None
        assert before is None or (page.next_before, page.next_before_id) < (before, before_id or ""), "goes down"
        before, before_id = page.next_before, page.next_before_id
    raise AssertionError("the pages never end")


@pytest.mark.parametrize("seed_", range(12))
async def test_pages_list_each_matching_conversation_once_newest_first_with_many_ties(
        redis: Redis, monkeypatch: pytest.MonkeyPatch, seed_: int) -> None:
    rng = random.Random(seed_)
    plan = ("", "merge", "score")[seed_ % 3]
    if seed_ % 2:
        monkeypatch.setattr(indexes, "_BUDGET", rng.choice((1, 2, 5)))
    rows: dict[str, dict[str, str]] = {}
    expired: list[str] = []
    pipe = redis.pipeline(transaction=False)
    for i in range(150):
        channel = rng.choice(CHANNELS)
        cid = f"{channel}:acc:{i:03d}"  # (an id holds its channel: a search looks there first)
        meta = {"channel": channel, "status": rng.choice(("bot", "human", "idle")),
                "chat_status": rng.choice(("answered", "unanswered")),
                "activity": repr(1000.0 + rng.randrange(8) / 4), "name": rng.choice(("Ann Lee", "Ann Ray", "Bob"))}
        if bot := rng.choice(BOTS):
            meta["bot"] = bot
        seed(pipe, cid, meta)
        if rng.random() < 0.1:  # expired: its metadata gone, its index entries left
            expired.append(cid)
            continue
        rows[cid] = meta
        if rng.random() < 0.15:  # an entry left in another partition, older (stale) or newer
            other = partitions.label(rng.choice(CHANNELS), rng.choice(BOTS))
            if other != partitions.of(meta):
                score = float(meta["activity"]) + rng.choice((-0.25, 0.0, 0.25))
                pipe.zadd(partitions.key(other), {cid: score})
                pipe.sadd(partitions.REGISTRY, other)
    await pipe.execute()
    for cid in expired:
        await redis.delete(f"{PREFIX}:c:{{{cid}}}:meta")
    index = ConversationIndex(redis, plan=plan)
    for _ in range(12):
        filters = Filters(status=rng.choice((None, "bot", "human", "idle")), channel=rng.choice((None, *CHANNELS)),
                          bot=rng.choice((None, "demo", "sales")), waiting=rng.random() < 0.3)
        search = rng.choice((None, "ann"))
        limit = rng.choice((1, 2, 3, 7, 20))
        want = {cid for cid, meta in rows.items() if filters.match(meta)
                and (search is None or meta["name"].startswith("Ann"))}
        got = await _pages(index, filters, search, limit)
        ids = [cid for cid, _ in got]
        assert len(ids) == len(set(ids)), ("listed twice", filters, search, limit, plan)
        assert set(ids) == want, (filters, search, limit, plan, sorted(want ^ set(ids)))
        assert [s for _, s in got] == sorted((s for _, s in got), reverse=True), (filters, search, limit, plan)
        if search is None:  # (a search ranks by the newest entry it reads: a newer one may be elsewhere)
            assert all(s == float(rows[c]["activity"]) for c, s in got)


@pytest.mark.parametrize(("plan", "budget"), [("merge", 0), ("score", 0), ("merge", 7)])
async def test_hundreds_of_conversations_with_one_activity_are_each_listed_once_in_pages_of_the_limit(
        redis: Redis, monkeypatch: pytest.MonkeyPatch, plan: str, budget: int) -> None:
    """600 conversations share one activity (an import, a broadcast): pages of 50 list each once,
    none skipped past the 500 a page once took on, and no page is longer than its limit."""
    if budget:
        monkeypatch.setattr(indexes, "_BUDGET", budget)
    pipe = redis.pipeline(transaction=False)
    want = [f"livechat:acc:{i:04d}" for i in range(600)]
    for n, cid in enumerate(want):
        seed(pipe, cid, {"channel": "livechat", "bot": "demo" if n % 3 else "sales", "status": "human",
                         "chat_status": "answered", "activity": "5000.25", "name": "Ann"})
    seed(pipe, "livechat:acc:old", {"channel": "livechat", "bot": "demo", "status": "human",
                                    "chat_status": "answered", "activity": "4000.5", "name": "Ann"})
    await pipe.execute()
    index = ConversationIndex(redis, plan=plan)
    for filters in (Filters(), Filters(status="human")):
        got = await _pages(index, filters, None, 50)
        assert [c for c, _ in got] == [*sorted(want, reverse=True), "livechat:acc:old"], filters
    found = await _pages(index, Filters(), "ann", 50)
    assert [c for c, _ in found] == [*sorted(want, reverse=True), "livechat:acc:old"]


async def test_an_older_cursor_of_one_number_lists_what_is_below_it(redis: Redis) -> None:
    """``before`` without ``before_id`` (a page of an older version, which held every row at its
    last activity) goes on below that activity."""
    pipe = redis.pipeline(transaction=False)
    for cid, activity in [("livechat:acc:a", "9.0"), ("livechat:acc:b", "9.0"), ("livechat:acc:c", "8.0")]:
        seed(pipe, cid, {"channel": "livechat", "bot": "demo", "status": "bot", "chat_status": "answered",
                         "activity": activity, "name": "Ann"})
    await pipe.execute()
    for search in (None, "ann"):
        page = await ConversationIndex(redis).page(Filters(), search=search, before=9.0, limit=5)
        assert [cid for cid, _, _ in page.rows] == ["livechat:acc:c"] and page.next_before is None
        page = await ConversationIndex(redis).page(Filters(), search=search, before=9.0, before_id="livechat:acc:b",
                                                   limit=5)
        assert [cid for cid, _, _ in page.rows] == ["livechat:acc:a", "livechat:acc:c"]
