"""The activity index partitioned by (channel, bot) (bot/store/partitions.py, issue 14 aim 3):
saves write no set per channel or bot, listings by any filter equal "sort all by activity,
filter, page", a conversation moved between partitions is listed once, a stale entry left by a
save that did not know the previous partition is listed once and moved where it belongs."""

from __future__ import annotations

import itertools
import random
from collections.abc import AsyncIterator, Iterable

import pytest
from redis.asyncio import Redis

from bot.store import indexes, partitions, savescript
from bot.store.clusterclient import ClusterRespClient, is_cluster
from bot.store.conversations import ConversationStore, SaveRequest
from bot.store.indexes import ConversationIndex, Filters, plan_save, seed, status_key

CHANNELS = ("livechat", "whatsapp", "odd:chan%3A")  # a channel name with the label's separator
BOTS = ("demo", "sales", "")


@pytest.fixture
async def store(redis: Redis, redis_url: str) -> AsyncIterator[ConversationStore]:
    """The store as a process has it (on a cluster: the hot path's cluster client, tests/cluster)."""
    fast = ClusterRespClient.from_url(redis_url, max_connections=8) if is_cluster(redis) else None
    made = ConversationStore(redis, fast=fast, lock_ttl=30.0)
    yield made
    await made.close()


async def _turn(redis: Redis, store: ConversationStore, cid: str, changes: dict[str, str], activity: float) -> None:
    """A processed message as the service saves it: the index plan with the store's save."""
    pushed = await store.push(cid, b"event", dedupe_id=f"{cid}:{activity}")
    assert pushed.batch is not None
    old = await store.meta(cid)
    new = {**changes, "activity": f"{activity:.3f}"}
    req = SaveRequest(state=None, processed=len(pushed.batch.events), activity=activity)
    req.partition, req.left = plan_save(cid, old, new, activity=activity, logged=False, commands=req.extra_commands)
    req.meta = new
    assert (await store.save(cid, pushed.batch.token, req)).status == 0


async def _ids(redis: Redis, filters: Filters, *, before: float | None = None, limit: int = 50) -> list[str]:
    page = await ConversationIndex(redis).page(filters, before=before, limit=limit)
    return [cid for cid, _, _ in page.rows]


async def _everywhere(redis: Redis, cid: str) -> list[str]:
    """The partitions ``cid`` is in."""
    return [part for part in sorted(await partitions.labels(redis))
            if await redis.zscore(partitions.key(part), cid) is not None]


def test_labels_are_unambiguous() -> None:
    for channel, bot in itertools.product(("", "a", "a:b", "a%3Ab", "%", ":"), ("", "x", "x:y", ":")):
        name = partitions.label(channel, bot)
        assert partitions.split(name) == (channel, bot)
    assert partitions.label("livechat", "demo") == "livechat:demo"


async def test_saves_write_the_partition_and_no_channel_or_bot_set(redis: Redis, store: ConversationStore) -> None:
    await _turn(redis, store, "livechat:demo:a", {"channel": "livechat", "bot": "demo", "status": "bot"}, 10.0)
    await _turn(redis, store, "livechat:demo:b", {"channel": "livechat", "status": "idle"}, 11.0)
    await _turn(redis, store, "livechat:demo:a", {}, 12.0)  # a follow-up: a plain ZADD
    assert not await redis.keys("sb:idx:{conv}:f:channel:*") and not await redis.keys("sb:idx:{conv}:f:bot:*")
    assert not await redis.exists("sb:idx:{conv}:activity")
    assert await redis.smembers(partitions.REGISTRY) == {b"livechat:demo", b"livechat:"}
    assert await redis.zrange(partitions.key("livechat:demo"), 0, -1, withscores=True) == [(b"livechat:demo:a", 12.0)]
    assert await _ids(redis, Filters()) == ["livechat:demo:a", "livechat:demo:b"]
    assert await _ids(redis, Filters(bot="demo")) == ["livechat:demo:a"]
    assert await _ids(redis, Filters(status="idle", channel="livechat")) == ["livechat:demo:b"]


async def test_a_bot_change_moves_the_conversation_between_partitions(redis: Redis, store: ConversationStore) -> None:
    cid = "livechat:demo:m"
    await _turn(redis, store, cid, {"channel": "livechat", "bot": "demo", "status": "bot"}, 10.0)
    await _turn(redis, store, cid, {"bot": "sales"}, 20.0)
    assert await _everywhere(redis, cid) == ["livechat:sales"]
    assert await _ids(redis, Filters()) == [cid]
    assert await _ids(redis, Filters(bot="demo")) == []
    assert await _ids(redis, Filters(bot="sales", channel="livechat")) == [cid]


async def test_a_stale_entry_is_listed_once_and_moved_where_its_metadata_says(redis: Redis,
                                                                              store: ConversationStore) -> None:
    cid = "livechat:demo:s"
    await _turn(redis, store, cid, {"channel": "livechat", "bot": "demo", "status": "bot"}, 10.0)
    await redis.delete(f"sb:c:{{{cid}}}:meta")  # expired: the next save knows no previous partition
    await _turn(redis, store, cid, {"channel": "livechat", "bot": "sales", "status": "bot"}, 20.0)
    assert await _everywhere(redis, cid) == ["livechat:demo", "livechat:sales"]  # the earlier life's entry
    assert await _ids(redis, Filters()) == [cid]
    assert await _ids(redis, Filters(bot="demo")) == []
    assert await _everywhere(redis, cid) == ["livechat:sales"]  # cleaned by the listing that met it
    # one whose metadata names a partition it is missing from (a move at start guessing from stale sets)
    await redis.zadd(partitions.key("whatsapp:demo"), {cid: 5.0})
    await redis.zrem(partitions.key("livechat:sales"), cid)
    await redis.sadd(partitions.REGISTRY, "whatsapp:demo")
    assert await _ids(redis, Filters()) == []
    assert await _everywhere(redis, cid) == ["livechat:sales"]
    assert await _ids(redis, Filters()) == [cid]
    assert await redis.smembers(partitions.REGISTRY) == {  # the emptied ones' labels too: never dropped
        b"livechat:demo", b"livechat:sales", b"whatsapp:demo"}


async def test_a_partition_emptied_for_a_moment_keeps_its_label_so_a_follow_up_into_it_is_listed(
        redis: Redis, store: ConversationStore) -> None:
    """A listing that sees a partition empty (its one member moved out by a refused save's
    activity script, or dropped as expired) leaves its label: the conversation's next follow-up
    is a plain ``ZADD`` into it, which registers nothing."""
    cid = "livechat:demo:e"
    await _turn(redis, store, cid, {"channel": "livechat", "bot": "demo", "status": "bot"}, 10.0)
    await redis.zrem(partitions.key("livechat:demo"), cid)  # out for a moment
    assert await _ids(redis, Filters()) == []
    await _turn(redis, store, cid, {}, 20.0)  # a follow-up: the partition its metadata names
    assert await _ids(redis, Filters()) == [cid]
    assert await _ids(redis, Filters(bot="demo", channel="livechat")) == [cid]


async def test_a_refused_save_that_moved_its_conversation_does_not_hide_it(redis: Redis,
                                                                           store: ConversationStore) -> None:
    """A turn slower than its lock (a slow call): another processor took the conversation and saved
    a follow-up; the late save is refused, but its activity script (another slot, beside the
    save script) still moves the conversation into the partition the refused save computed. The
    metadata names the partition it left: the listing puts it back there (``ZADD NX``)."""
    cid = "livechat:demo:l"
    await _turn(redis, store, cid, {"channel": "livechat", "bot": "demo", "status": "bot"}, 10.0)
    await _turn(redis, store, cid, {}, 20.0)  # the processor that took over: a follow-up
    req = SaveRequest(state=None, processed=0, activity=30.0)  # the late one, planned after it: a bot change
    req.partition, req.left = plan_save(cid, await store.meta(cid), {"bot": "sales", "activity": "30.000"},
                                        activity=30.0, logged=False, commands=req.extra_commands)
    assert (req.partition, req.left) == ("livechat:sales", "livechat:demo")
    assert (await store.save(cid, "a-lost-token", req)).status == -1
    assert (await store.meta(cid))["bot"] == "demo"
    await _ids(redis, Filters())  # meets it where the refused save put it
    assert await _ids(redis, Filters()) == [cid]
    assert await _ids(redis, Filters(bot="demo")) == [cid]
    assert await _ids(redis, Filters(bot="sales")) == []


async def test_a_conversation_back_while_a_listing_drops_its_expired_entry_stays_listed(
        redis: Redis, store: ConversationStore) -> None:
    """A listing reads an expired conversation's metadata (gone), the conversation comes back
    (its save writes its partition), then the listing drops the entry it met: only if its score
    is still the one met. Else its partition, of it alone, emptied, would lose its label and
    every later follow-up (a plain ``ZADD``) would go to a partition no listing reads."""
    cid = "livechat:solo:x"
    await _turn(redis, store, cid, {"channel": "livechat", "bot": "solo", "status": "bot"}, 10.0)
    await redis.delete(f"sb:c:{{{cid}}}:meta")  # expired
    raced: list[str] = []

    class Racing(ConversationIndex):
        async def metas(self, cids: Iterable[str]) -> list[dict[str, str]]:
            cids = list(cids)
            found = await super().metas(cids)
            if cid in cids and not raced:  # back meanwhile
                raced.append(cid)
                await _turn(redis, store, cid, {"channel": "livechat", "bot": "solo", "status": "bot"}, 20.0)
            return found

    assert [c for c, _, _ in (await Racing(redis).page(Filters())).rows] == [] and raced
    await _ids(redis, Filters())
    await _turn(redis, store, cid, {}, 30.0)  # a follow-up: a plain ZADD
    assert await _ids(redis, Filters()) == [cid]
    assert await _ids(redis, Filters(bot="solo")) == [cid]


async def test_a_save_after_script_flush_still_writes_its_partition(redis: Redis, store: ConversationStore) -> None:
    await _turn(redis, store, "livechat:demo:f", {"channel": "livechat", "bot": "demo", "status": "bot"}, 10.0)
    await redis.script_flush()  # as after a Redis restart
    await _turn(redis, store, "livechat:demo:g", {"channel": "livechat", "bot": "sales", "status": "bot"}, 11.0)
    assert await _everywhere(redis, "livechat:demo:g") == ["livechat:sales"]
    await redis.script_flush()
    await _turn(redis, store, "livechat:demo:f", {"bot": "sales"}, 12.0)  # a move: the script again
    assert await _everywhere(redis, "livechat:demo:f") == ["livechat:sales"]
    assert await _ids(redis, Filters(bot="sales")) == ["livechat:demo:f", "livechat:demo:g"]


async def test_a_save_whose_activity_script_alone_is_missing_runs_once(redis: Redis, store: ConversationStore) -> None:
    """As on a cluster whose {conv} node restarted: the save script ran, the activity script met
    ``NOSCRIPT``; only it is sent again (a second run of the save would find its lock gone)."""
    await redis.script_flush()
    await redis.script_load(savescript.SAVE)
    await _turn(redis, store, "livechat:demo:o", {"channel": "livechat", "bot": "demo", "status": "bot"}, 10.0)
    assert await _everywhere(redis, "livechat:demo:o") == ["livechat:demo"]
    assert await store.meta("livechat:demo:o") != {}


def _reference(rows: dict[str, dict[str, str]], filters: Filters) -> list[str]:
    ranked = sorted(rows, key=lambda c: float(rows[c]["activity"]), reverse=True)
    return [cid for cid in ranked if filters.match(rows[cid])]


@pytest.mark.parametrize(("seed_", "plan"), [(1, ""), (2, ""), (3, "merge"), (4, "score")])
async def test_listings_equal_sort_filter_page_over_every_partition(redis: Redis, seed_: int, plan: str) -> None:
    rng = random.Random(seed_)
    rows: dict[str, dict[str, str]] = {}
    pipe = redis.pipeline(transaction=False)
    for i in range(120):
        status = rng.choice(("bot", "bot", "human", "idle"))
        meta = {"channel": rng.choice(CHANNELS), "status": status,
                "chat_status": rng.choice(("answered", "unanswered")), "activity": repr(1000.0 + rng.random() * 500),
                "name": rng.choice(("Ann Lee", "Bob Ray"))}
        if bot := rng.choice(BOTS):
            meta["bot"] = bot
        cid = f"livechat:acc:{i}"
        rows[cid] = meta
        seed(pipe, cid, meta)
    await pipe.execute()
    assert await redis.exists(status_key("human")) and not await redis.exists(status_key("bot"))
    cases = [Filters(status=s, channel=c, bot=b, waiting=w)
             for s in (None, "bot", "human", "idle") for c in (None, *CHANNELS) for b in (None, "demo", "sales")
             for w in (False, True) if rng.random() < 0.5 or (s is None and not w)]
    for filters in cases:
        want = _reference(rows, filters)
        index = ConversationIndex(redis, plan=plan)
        assert [cid for cid, _, _ in (await index.page(filters, limit=200)).rows] == want, filters
        found = await index.page(filters, search="ann", limit=200)
        assert [cid for cid, _, _ in found.rows] == [c for c in want if rows[c]["name"] == "Ann Lee"], filters
        limit = rng.choice((1, 3, 7))
        got: list[str] = []
        before = None
        while True:  # paged with ``before``
            page = await index.page(filters, before=before, limit=limit)
            got += [cid for cid, _, _ in page.rows]
            if page.next_before is None:
                break
            before = page.next_before
        assert got == want, filters


@pytest.mark.parametrize(("seed_", "plan", "budget"), [(5, "", 0), (6, "merge", 0), (7, "score", 0), (8, "merge", 3)])
async def test_conversations_sharing_a_pages_last_activity_are_not_skipped(
        redis: Redis, monkeypatch: pytest.MonkeyPatch, seed_: int, plan: str, budget: int) -> None:
    """The next page reads from below the last row's activity (``before``, one number): rows at
    exactly that activity, in any partition, go on the page that ends there (listing and search),
    and on the round that ends there when a page takes more than one (a script's budget spent)."""
    if budget:
        monkeypatch.setattr(indexes, "_BUDGET", budget)
    rng = random.Random(seed_)
    rows: dict[str, dict[str, str]] = {}
    pipe = redis.pipeline(transaction=False)
    for i in range(90):
        meta = {"channel": rng.choice(CHANNELS), "status": rng.choice(("bot", "human", "idle")),
                "chat_status": "answered", "activity": repr(1000.0 + rng.randrange(6)), "name": "Ann Lee"}
        if bot := rng.choice(BOTS):
            meta["bot"] = bot
        rows[f"livechat:acc:{i}"] = meta
        seed(pipe, f"livechat:acc:{i}", meta)
    await pipe.execute()
    index = ConversationIndex(redis, plan=plan)
    for filters in (Filters(), Filters(status="bot"), Filters(bot="demo"), Filters(status="idle", channel="livechat")):
        want = _reference(rows, filters)
        for search in (None, "ann"):
            for limit in (1, 2, 5):
                got: list[tuple[str, float]] = []
                before: float | None = None
                before_id: str | None = None
                while True:
                    page = await index.page(filters, search=search, before=before, before_id=before_id, limit=limit)
                    got += [(cid, score) for cid, score, _ in page.rows]
                    if page.next_before is None:
                        break
                    before, before_id = page.next_before, page.next_before_id
                assert sorted(c for c, _ in got) == sorted(want), (filters, search, limit)
                assert len(got) == len(want) and [s for _, s in got] == sorted((s for _, s in got), reverse=True)


async def test_a_conversation_back_while_a_listing_drops_it_from_a_status_set_stays_in_it(redis: Redis) -> None:
    """A listing met the conversation expired (no metadata) and drops it from the filter's sets;
    a save brought it back meanwhile (its ``SADD`` before the listing's ``SREM``): it stays listed."""
    cid = "livechat:demo:back"
    meta = {"channel": "livechat", "bot": "demo", "status": "human", "chat_status": "answered", "activity": "50.0"}
    pipe = redis.pipeline(transaction=False)
    seed(pipe, cid, meta)
    await pipe.execute()
    index = ConversationIndex(redis)
    await index._forget([(cid, "livechat:demo", 40.0)], [status_key("human")])  # as met before the save
    assert await redis.sismember(status_key("human"), cid)
    assert await _ids(redis, Filters(status="human")) == [cid]
    await redis.delete(f"sb:c:{{{cid}}}:meta")  # gone for good: dropped
    await index._forget([(cid, "livechat:demo", 50.0)], [status_key("human")])
    assert not await redis.sismember(status_key("human"), cid)
    assert await _ids(redis, Filters(status="human")) == []
