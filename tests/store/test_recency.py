"""The bucketed recency index (``bot/store/recency.py``) against a plain sorted list in Python:
pages newest first with offset, limit and a ``before`` cursor, the member count, removals, score
updates, dense, sparse and text members; the move of an older version's whole sorted set; the
buckets stay small (ziplists) and a page visits few of them however many members there are."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from redis.asyncio import Redis

from bot.store import recency

KEY = "sb:{t}:recent"


def _tie(member: str) -> tuple[int, int, bytes]:
    """Members of one score: a counter's numbers (no leading zero, below 2**31) the highest first,
    then the others by their bytes, descending."""
    if member.isascii() and member.isdigit() and str(int(member)) == member and int(member) < 2**31:
        return (1, int(member), b"")
    return (0, 0, member.encode())


def _reference(scores: dict[str, float], *, offset: int, limit: int,
               before: float | None) -> list[tuple[str, float]]:
    """Score descending, then ``_tie`` descending."""
    rows = [(m, s) for m, s in scores.items() if before is None or s < before]
    rows.sort(key=lambda r: (r[1], _tie(r[0])), reverse=True)
    return rows[offset:offset + limit]


async def _write(redis: Redis, scores: dict[str, float], ops: list[tuple[str, str, float]]) -> None:
    pipe = redis.pipeline(transaction=False)
    for op, member, score in ops:
        if op == "add":
            recency.add(pipe, KEY, member, score)
            scores[member] = score
        else:
            recency.remove(pipe, KEY, member)
            scores.pop(member, None)
    await pipe.execute()


def _member(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.8:
        return str(rng.randrange(2000))  # dense: a counter's
    if kind < 0.9:
        return str(rng.randrange(recency.DENSE_MAX, recency.DENSE_MAX * 4))  # sparse: another CRM's
    return rng.choice((f"c{rng.randrange(100)}", f"0{rng.randrange(50)}"))  # text, a number with a leading zero


async def test_pages_equal_a_sorted_list_through_adds_updates_and_removals(redis: Redis) -> None:
    rng = random.Random(15)
    scores: dict[str, float] = {}
    for _ in range(6):
        ops = []
        for _ in range(400):
            member = _member(rng)
            if rng.random() < 0.2:
                ops.append(("remove", member, 0.0))
            else:  # times with ties, and some going back (a clock set back: a stale-high max)
                ops.append(("add", member, float(rng.randrange(300)) + rng.choice((0.0, 0.5))))
        await _write(redis, scores, ops)
        for _ in range(15):
            offset, limit = rng.choice((0, 0, 3, 40)), rng.choice((1, 7, 50))
            before = rng.choice((None, float(rng.randrange(300)), 150.5))
            rows, total = await recency.page(redis, KEY, offset=offset, limit=limit, before=before)
            assert rows == _reference(scores, offset=offset, limit=limit, before=before), (offset, limit, before)
            assert total == len(scores)
        members = [*rng.sample(sorted(scores), 20), "999999", "nope"]
        assert await recency.scores(redis, KEY, members) == [scores.get(m) for m in members]


async def test_an_emptied_bucket_leaves_the_max_set_and_a_removal_lowers_its_max(redis: Redis) -> None:
    pipe = redis.pipeline(transaction=False)
    for member, score in (("1", 10.0), ("2", 20.0), ("300", 5.0)):
        recency.add(pipe, KEY, member, score)
    await pipe.execute()
    await _write(redis, {}, [("remove", "2", 0.0), ("remove", "300", 0.0), ("remove", "300", 0.0)])
    assert await redis.zrange(recency.tops(KEY), 0, -1, withscores=True) == [(recency.label(0).encode(), 10.0)]
    assert await redis.get(recency.count(KEY)) == b"1"
    assert await recency.page(redis, KEY) == ([("1", 10.0)], 1)
    assert await recency.page(redis, KEY, offset=3, limit=0) == ([], 1)


async def test_buckets_stay_ziplists_and_the_count_is_exact_under_concurrent_writers(redis: Redis) -> None:
    clients = [Redis(connection_pool=redis.connection_pool) for _ in range(4)]

    async def writer(client: Redis, seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(20):
            pipe = client.pipeline(transaction=False)
            for _ in range(50):
                recency.add(pipe, KEY, str(rng.randrange(1024)), float(rng.randrange(1000)))
            await pipe.execute()

    await asyncio.gather(*(writer(c, n) for n, c in enumerate(clients)))
    members = {m for n in range(8) for m in await redis.zrange(recency.name(KEY, n), 0, -1)}
    assert int(await redis.get(recency.count(KEY)) or 0) == len(members)
    assert (await recency.page(redis, KEY, limit=1))[1] == len(members)
    for n in range(8):
        assert await redis.object("encoding", recency.name(KEY, n)) in (b"ziplist", b"listpack")


async def _page_calls(redis: Redis, **page: Any) -> int:
    """The ``ZREVRANGEBYSCORE`` calls (buckets visited) of one page."""
    stats: dict[str, Any] = await redis.info("commandstats")
    before = int(stats.get("cmdstat_zrevrangebyscore", {}).get("calls", 0))
    await recency.page(redis, KEY, **page)
    stats = await redis.info("commandstats")
    return int(stats.get("cmdstat_zrevrangebyscore", {}).get("calls", 0)) - before


async def test_a_page_visits_at_most_offset_plus_limit_buckets_however_many_members(redis: Redis) -> None:
    rng = random.Random(3)
    for total in (1_000, 30_000):
        pipe = redis.pipeline(transaction=False)
        for member in range(total):
            recency.add(pipe, KEY, str(member), rng.random() * 1e6)
        await pipe.execute()
        assert await _page_calls(redis, offset=0, limit=10) <= 10
        assert await _page_calls(redis, offset=20, limit=30) <= 50
        assert await _page_calls(redis, offset=0, limit=50, before=2e6) <= 50  # nothing written since
    pipe = redis.pipeline(transaction=False)
    for member in range(30_000):  # all written at one time (a bulk import): the highest numbers first
        recency.add(pipe, KEY, str(member), 5e6)
    await pipe.execute()
    assert await _page_calls(redis, offset=0, limit=50) <= 2 + 2  # the last bucket, part of the one before
    rows, total = await recency.page(redis, KEY, offset=100, limit=3)
    assert rows == [(str(29_899 - n), 5e6) for n in range(3)] and total == 30_000


async def test_the_old_whole_sorted_set_is_moved_into_the_buckets(redis: Redis) -> None:
    old = {str(n): float(n % 97) for n in range(recency.MOVE_PAGE * 2 + 3)} | {"c1": 1.0, str(1 << 40): 2.0}
    await redis.zadd(KEY, old)
    pipe = redis.pipeline(transaction=False)
    recency.add(pipe, KEY, "5", 500.0)  # written by this version before the move: the later time stays
    recency.add(pipe, KEY, "7000", 1.5)  # a record only this version wrote
    await pipe.execute()
    assert await recency.move_whole(redis, KEY) == len(old)
    assert not await redis.exists(KEY)
    want = old | {"5": 500.0, "7000": 1.5}
    assert await recency.page(redis, KEY, limit=200) == (_reference(want, offset=0, limit=200, before=None), len(want))
    assert await recency.move_whole(redis, KEY) == 0


async def test_the_plain_form_of_an_add_writes_what_the_script_does(redis: Redis) -> None:
    pipe = redis.pipeline(transaction=False)
    recency.add(pipe, KEY, "130", 7.0)
    (command,) = [c[0] for c in pipe.command_stack]
    plain = recency.plain_new(command)
    assert plain is not None and recency.plain_new(("EVAL", "other", 0)) is None
    for words in plain:
        await redis.execute_command(*words)
    assert await recency.page(redis, KEY) == ([("130", 7.0)], 1)
    assert await redis.zrange(recency.tops(KEY), 0, -1) == [b"00000001"]


async def _page_usec(redis: Redis, **page: Any) -> tuple[list[tuple[str, float]], int]:
    """The page, and the microseconds its script ran (``INFO commandstats``)."""
    stats: dict[str, Any] = await redis.info("commandstats")
    before = int(stats.get("cmdstat_eval", {}).get("usec", 0))
    rows, _ = await recency.page(redis, KEY, **page)
    stats = await redis.info("commandstats")
    return rows, int(stats["cmdstat_eval"]["usec"]) - before


async def test_an_offset_past_the_members_visits_no_bucket(redis: Redis) -> None:
    """A hostile ``offset`` (the API takes up to 2**53) must not walk and sort every member."""
    pipe = redis.pipeline(transaction=False)
    for member in range(3_000):
        recency.add(pipe, KEY, str(member), float(member % 7))
    await pipe.execute()
    assert await _page_calls(redis, offset=10**9, limit=50) == 0
    assert await recency.page(redis, KEY, offset=3_000, limit=50) == ([], 3_000)


async def test_a_deep_page_is_not_quadratic_in_its_offset(redis: Redis) -> None:
    """A page deep in the index keeps its candidates by sorting at twice the page, not by inserting
    each into a sorted list (an insertion moves the page: seconds of Redis CPU at 30,000)."""
    rng = random.Random(8)
    scores = {str(member): float(rng.randrange(10**6)) for member in range(60_000)}
    pipe = redis.pipeline(transaction=False)
    for member, score in scores.items():
        recency.add(pipe, KEY, member, score)
    await pipe.execute()
    rows, usec = await _page_usec(redis, offset=30_000, limit=50)
    assert rows == _reference(scores, offset=30_000, limit=50, before=None)
    assert usec < 1_500_000, usec  # (about 0.2 s here; 3.4 s with insertions)
