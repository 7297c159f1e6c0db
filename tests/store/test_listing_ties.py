"""Pages of the dashboard's listing with many conversations sharing an activity (the cursor is
one number: ``before``): under random filters, limits, plans and script budgets, with expired
conversations and stale entries in other partitions, every matching conversation is listed
exactly once across the pages, newest first (bot/store/indexes.py ``ConversationIndex._ties``)."""

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
    before = None
    for _ in range(1000):  # a listing that never ends fails
        page = await index.page(filters, search=search, before=before, limit=limit)
        got += [(cid, score) for cid, score, _ in page.rows]
        if page.next_before is None:
            return got
        assert before is None or page.next_before < before, "the cursor goes down"
        before = page.next_before
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


@pytest.mark.parametrize("plan", ["merge", "score"])
async def test_ties_the_filter_leaves_out_do_not_take_the_places_of_those_it_keeps(
        redis: Redis, monkeypatch: pytest.MonkeyPatch, plan: str) -> None:
    """``_ties`` reads at most ``_TIES`` more conversations than the page's at that activity: the
    ones the filter leaves out (here idle, ids on either side) counted, and a bot conversation past
    them was skipped by the next page."""
    monkeypatch.setattr(indexes, "_TIES", 3)
    pipe = redis.pipeline(transaction=False)
    metas = {**{f"livechat:acc:{p}{n}": ("idle", 5.0) for n in range(6) for p in "ad"},
             **{f"livechat:acc:b{n}": ("bot", 5.0) for n in range(2)}, "livechat:acc:c": ("bot", 4.0)}
    for cid, (status, activity) in metas.items():
        seed(pipe, cid, {"channel": "livechat", "bot": "demo", "status": status, "chat_status": "answered",
                         "activity": repr(activity), "name": "Ann"})
    await pipe.execute()
    got = await _pages(ConversationIndex(redis, plan=plan), Filters(status="bot"), None, 1)
    assert [cid for cid, _ in got] == ["livechat:acc:b1", "livechat:acc:b0", "livechat:acc:c"]


async def test_a_page_filled_by_a_rounds_ties_reads_them_once(redis: Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """The round's budget ends at an activity whose ties fill the page: they are not read again."""
    monkeypatch.setattr(indexes, "_BUDGET", 2)
    pipe = redis.pipeline(transaction=False)
    for cid, status in [("livechat:acc:b0", "bot"), ("livechat:acc:b1", "bot"),
                        *((f"livechat:acc:i{n}", "idle") for n in range(4))]:
        seed(pipe, cid, {"channel": "livechat", "bot": "demo", "status": status, "chat_status": "answered",
                         "activity": "5.0", "name": "Ann"})
    await pipe.execute()
    index = ConversationIndex(redis, plan="merge")
    calls = []
    tie = index._tie

    async def counted(**kwargs: object) -> object:
        calls.append(kwargs)
        return await tie(**kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(index, "_tie", counted)
    page = await index.page(Filters(status="bot"), limit=2)
    assert [cid for cid, _, _ in page.rows] == ["livechat:acc:b1", "livechat:acc:b0"] and page.next_before == 5.0
    assert len(calls) == 1
