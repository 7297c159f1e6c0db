"""The embedded CRM's listings over its recency buckets (``crm_bridge/recent.py``): unfiltered,
filtered by id sets and by the default status (excluded sets) equal to a reference computed from
the records' write times; an older version's whole recency sorted sets moved at start; the cost
of a listing follows the page and the matches, not the records."""

from __future__ import annotations

import random
from typing import Any

import pytest
from redis.asyncio import Redis

from bot.store import recency
from crm_bridge import RedisCrm, idsets
from crm_bridge.contract import PIPELINES
from crm_bridge.directory import CrmDirectory
from crm_bridge.indexes import recent_key
from crm_bridge.recent import DONE
from crm_bridge.redis_crm import move_old_layout

STAGES = PIPELINES["Sales"][:3]
TAGS = ["vip", "cold", "new"]


class _Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


async def _started(redis: Redis, clock: _Clock) -> CrmDirectory:
    await move_old_layout(redis)
    return CrmDirectory(RedisCrm(redis, pipelines=PIPELINES, clock=clock))


def _newest(times: dict[str, float], ids: set[str]) -> list[str]:
    return sorted(ids, key=lambda i: (times[i], int(i)), reverse=True)  # one time: the later id first


async def _ids(directory: CrmDirectory, kind: str, filters: dict[str, Any], offset: int = 0, limit: int = 200,
               before: float | None = None) -> tuple[list[str], int]:
    found, total = await directory.search(kind, filters=filters, offset=offset, limit=limit, before=before)
    return [r["id"] for r in found], total


async def test_listings_equal_a_reference_over_random_records(redis: Redis) -> None:
    rng, clock = random.Random(14), _Clock()
    directory = await _started(redis, clock)
    leads: dict[str, dict[str, Any]] = {}
    contacts: dict[str, dict[str, Any]] = {}
    times: dict[str, float] = {}
    for _ in range(120):
        clock.now += rng.choice((0.0, 1.0, 2.5))  # ties too
        data = {"stage": rng.choice(STAGES), "tags": rng.sample(TAGS, rng.randrange(3))}
        lead = await directory.create_lead(data)
        leads[lead["id"]], times[lead["id"]] = data, clock.now
        status = rng.choice(("current", "potential"))
        contact = await directory.create_contact({"name": "Ann", "status": status, "tags": data["tags"]})
        contacts[contact["id"]], times[contact["id"]] = {"status": status, "tags": data["tags"]}, clock.now
    for lid in rng.sample(sorted(leads), 40):  # later writes move records to the front
        clock.now += 1.0
        tags = rng.sample(TAGS, rng.randrange(3))
        await directory.update_lead(lid, {"tags": tags, "name": f"Deal {clock.now}"})
        leads[lid]["tags"], times[lid] = tags, clock.now
    cases: list[tuple[str, dict[str, Any], set[str]]] = [("lead", {}, set(leads)), ("contact", {}, set(contacts))]
    for stage in STAGES:
        cases.append(("lead", {"stage": stage}, {i for i, d in leads.items() if d["stage"] == stage}))
        for tag in TAGS:
            cases.append(("lead", {"stage": stage, "tag": [tag]},
                          {i for i, d in leads.items() if d["stage"] == stage and tag in d["tags"]}))
    for status in ("current", "potential"):  # potential: in none of the other statuses' sets
        cases.append(("contact", {"status": status}, {i for i, d in contacts.items() if d["status"] == status}))
        cases.append(("contact", {"status": status, "tag": ["vip"]},
                      {i for i, d in contacts.items() if d["status"] == status and "vip" in d["tags"]}))
    for kind, filters, want in cases:
        newest = _newest(times, want)
        assert await _ids(directory, kind, filters) == (newest, len(want)), (kind, filters)
        assert await _ids(directory, kind, filters, offset=5, limit=7) == (newest[5:12], len(want))
        cut = times[newest[len(newest) // 2]] if newest else 0.0
        assert (await _ids(directory, kind, filters, before=cut))[0] == [i for i in newest if times[i] < cut][:200]
        found, _ = await directory.search(kind, filters=filters, limit=20)  # the times the listing read
        assert [r["updated_at"] for r in found] == [times[r["id"]] for r in found]
    some = rng.sample(sorted(leads), 10)
    assert [r["updated_at"] for r in await directory._present("lead", [{"id": i} for i in some])] == \
        [times[i] for i in some]


async def test_text_ids_are_listed_and_filtered_too(redis: Redis) -> None:
    """Ids that are not the counter's (other CRMs', tests') go to text buckets and ``:x`` id-set buckets."""
    directory = await _started(redis, _Clock())
    pipe = redis.pipeline(transaction=False)
    for n, rid in enumerate(("c1", "c2", str(1 << 40), "7")):
        recency.add(pipe, recent_key("lead"), rid, 10.0 + n)
        idsets.add(pipe, "sb:{crm}:by:lead:tag:vip", rid)
    recency.add(pipe, recent_key("lead"), "c3", 20.0)
    await pipe.execute()
    rows, total = await recent_listing(directory, {"tag": ["vip"]})
    assert (rows, total) == ([("7", 13.0), (str(1 << 40), 12.0), ("c2", 11.0), ("c1", 10.0)], 4)
    assert [i for i, _ in (await recent_listing(directory, {}))[0]] == ["c3", "7", str(1 << 40), "c2", "c1"]


async def recent_listing(directory: CrmDirectory, filters: dict[str, Any]) -> tuple[list[tuple[str, float]], int]:
    from crm_bridge import recent

    keys, excluded = directory._filter_keys("lead", filters)
    return await recent.listing(directory.redis, "lead", keys, excluded, offset=0, limit=50, before=None)


async def test_an_older_versions_recency_sorted_sets_are_moved_at_start(redis: Redis) -> None:
    clock = _Clock()
    directory = await _started(redis, clock)
    made = [(await directory.create_lead({"name": f"Deal {n}"}))["id"] for n in range(5)]
    # as an older version left them: one sorted set per kind, no buckets
    for kind in ("lead", "contact"):
        for key in await redis.keys(f"{recent_key(kind)}:*"):
            await redis.delete(key)
    await redis.zadd(recent_key("lead"), {rid: 100.0 + n for n, rid in enumerate(made)})
    await redis.zadd(recent_key("contact"), {"900": 5.0})
    await redis.delete(DONE)
    await move_old_layout(redis)
    assert not await redis.exists(recent_key("lead")) and not await redis.exists(recent_key("contact"))
    assert await redis.get(DONE) == b"6"
    assert await _ids(directory, "lead", {}) == (made[::-1], 5)
    assert await _ids(directory, "lead", {"stage": "New"}) == (made[::-1], 5)
    assert await recency.page(redis, recent_key("contact")) == ([("900", 5.0)], 1)  # (no record: not presented)
    await redis.zadd(recent_key("lead"), {"1": 1.0})  # the marker: a later start reads nothing else
    await move_old_layout(redis)
    assert await redis.exists(recent_key("lead"))


async def _lookups(redis: Redis) -> int:
    stats: dict[str, Any] = await redis.info("stats")
    return int(stats["keyspace_hits"]) + int(stats["keyspace_misses"])


async def test_a_listing_costs_as_much_with_many_records_as_with_few(redis: Redis) -> None:
    directory = await _started(redis, _Clock())
    costs = []
    for extra in (0, 3_000):
        pipe = redis.pipeline(transaction=False)  # many other leads, written long ago
        for n in range(extra):
            rid = str(100_000 + n)
            recency.add(pipe, recent_key("lead"), rid, 1.0 + n / 10_000)
            idsets.add(pipe, "sb:{crm}:by:lead:stage:Sales/Contacted", rid)
        await pipe.execute()
        await directory.create_lead({"name": "Deal", "tags": ["vip"]})
        row = []
        for filters in ({}, {"stage": "New", "tag": ["vip"]}, {"stage": "New"}):
            before = await _lookups(redis)
            found, _ = await directory.search("lead", filters=filters, limit=10)
            assert found[0]["name"] == "Deal"
            row.append(await _lookups(redis) - before)
        costs.append(row)
    few, many = costs
    assert all(m <= f + 12 for f, m in zip(few, many, strict=True)), costs  # 3,000 records more: 24 buckets


def _tie(rid: str) -> tuple[int, int, bytes]:
    if rid.isascii() and rid.isdigit() and str(int(rid)) == rid and int(rid) < 2**31:
        return (1, int(rid), b"")
    return (0, 0, rid.encode())


def _record(pipe: Any, rng: random.Random, times: dict[str, float], sets: dict[str, set[str]], key: str, rid: str,
            at: float, *, share: float) -> None:
    """Queue ``rid`` written at ``at`` (the lead recency index), and in each set of ``sets``
    (``key`` + its name) with the chance ``share``; ``times`` and ``sets`` keep the reference."""
    times[rid] = at
    recency.add(pipe, recent_key("lead"), rid, at)
    for name, members in sets.items():
        if rng.random() < share:
            members.add(rid)
            idsets.add(pipe, key + name, rid)


def _matching(times: dict[str, float], sets: dict[str, set[str]], within: list[str], outside: list[str]) -> set[str]:
    """The reference's records in every set ``within`` and none ``outside``."""
    want = set(times)
    for name in within:
        want &= sets[name]
    for name in outside:
        want -= sets[name]
    return want


async def test_filtered_pages_equal_a_reference_over_many_buckets(redis: Redis) -> None:
    """Random ids over many buckets (and text ids), random times with ties, sets intersected and
    excluded: every page as a sorted list in Python gives it (newest first, one time: the later id)."""
    from crm_bridge import recent

    await move_old_layout(redis)  # as at a start: the sets' indexes of non-empty buckets are trusted
    rng = random.Random(7)
    times: dict[str, float] = {}
    sets: dict[str, set[str]] = {name: set() for name in ("a", "b", "c")}
    key = "sb:{crm}:by:lead:tag:"
    for _ in range(3):
        pipe = redis.pipeline(transaction=False)
        for _ in range(1500):
            rid = str(rng.randrange(20_000)) if rng.random() < 0.95 else f"x{rng.randrange(40)}"
            _record(pipe, rng, times, sets, key, rid, float(rng.randrange(400)), share=0.4)
        await pipe.execute()
    cases = [(["a"], []), (["a", "b"], []), (["a"], ["c"]), (["a", "b"], ["c"]), ([], ["c"]), ([], ["b", "c"])]
    for within, outside in cases:
        want = _matching(times, sets, within, outside)
        newest = sorted(want, key=lambda i: (times[i], _tie(i)), reverse=True)
        for offset, limit, before in ((0, 50, None), (30, 20, None), (0, 200, 200.0), (7, 1, 399.0),
                                      (900, 100, None), (300, 100, 300.0), (10**9, 50, None)):
            rows, total = await recent.listing(redis, "lead", [key + n for n in within], [key + n for n in outside],
                                               offset=offset, limit=limit, before=before)
            expected = [i for i in newest if before is None or times[i] < before][offset:offset + limit]
            assert [i for i, _ in rows] == expected, (within, outside, offset, limit, before)
            assert [at for _, at in rows] == [times[i] for i in expected]
            assert total == len(want)


@pytest.mark.parametrize("seed", range(4))
async def test_pages_after_a_cursor_list_every_record_once_whatever_the_ties(redis: Redis, seed: int) -> None:
    """Walked page by page, each from the previous page's last (time, id) (``before``,
    ``before_id``), every listing (unfiltered, filtered, excluded) gives each record exactly once in
    its order, with most records sharing a few times (an import gives its records one time):
    hundreds of ties span buckets, text ids among them. A cursor taken anywhere starts the page
    right after it; ``before`` alone still lists only the records written earlier."""
    from crm_bridge import recent

    await move_old_layout(redis)
    rng = random.Random(seed)
    times: dict[str, float] = {}
    sets: dict[str, set[str]] = {name: set() for name in ("a", "b")}
    key = "sb:{crm}:by:lead:tag:"
    pipe = redis.pipeline(transaction=False)
    for rid in ("0", "00", "000"):  # a counter's 0 among ids written with leading zeros
        times[rid] = 100.0
        recency.add(pipe, recent_key("lead"), rid, 100.0)
    for _ in range(2000):
        rid = str(rng.randrange(3_000)) if rng.random() < 0.9 else rng.choice(("x", "x1", "y", "07", "0")) + str(
            rng.randrange(2_000))
        at = rng.choice((100.0, 100.0, 100.0, 250.5, 7.25, float(rng.randrange(1000))))
        _record(pipe, rng, times, sets, key, rid, at, share=0.5)
    await pipe.execute()
    for within, outside in (([], []), (["a"], []), (["a", "b"], []), (["a"], ["b"]), ([], ["a"])):
        want = _matching(times, sets, within, outside)
        newest = sorted(want, key=lambda i: (times[i], _tie(i)), reverse=True)  # (not the code under test)
        assert sum(times[i] == 100.0 for i in newest) > 130  # ties past a page and a bucket
        walked: list[str] = []
        cursor: tuple[float, str] | None = None
        for _ in range(len(newest) + 2):
            limit = rng.choice((1, 7, 50, 130))
            rows, total = await recent.listing(redis, "lead", [key + n for n in within], [key + n for n in outside],
                                               offset=0, limit=limit, before=cursor and cursor[0],
                                               before_id=cursor and cursor[1])
            assert total == len(want)
            walked += [i for i, _ in rows]
            if len(rows) < limit:
                break
            cursor = (rows[-1][1], rows[-1][0])
        assert walked == newest, (within, outside)
        for at in rng.sample(range(len(newest)), 6):
            rid = newest[at]
            rows, _ = await recent.listing(redis, "lead", [key + n for n in within], [key + n for n in outside],
                                           offset=2, limit=20, before=times[rid], before_id=rid)
            assert [i for i, _ in rows] == newest[at + 3:at + 23], (within, outside, rid)
            assert [i for i in newest if recency.after(i, times[i], times[rid], rid)] == newest[at + 1:]
        rows, _ = await recent.listing(redis, "lead", [key + n for n in within], [key + n for n in outside],
                                       offset=0, limit=1000, before=100.0)
        assert [i for i, _ in rows] == [i for i in newest if times[i] < 100.0][:1000]


async def test_a_filtered_offset_past_the_matches_scores_no_bucket(redis: Redis) -> None:
    """A hostile ``offset`` (the API takes up to 2**53): the matches are counted, none scored."""
    from crm_bridge import recent

    await move_old_layout(redis)
    key = "sb:{crm}:by:lead:tag:vip"
    pipe = redis.pipeline(transaction=False)
    for n in range(3_000):
        recency.add(pipe, recent_key("lead"), str(n), float(n % 11))
        idsets.add(pipe, key, str(n))
    await pipe.execute()
    stats: dict[str, Any] = await redis.info("commandstats")
    before = int(stats.get("cmdstat_zmscore", {}).get("calls", 0))
    rows, total = await recent.listing(redis, "lead", [key], [], offset=10**9, limit=50, before=None)
    stats = await redis.info("commandstats")
    assert (rows, total) == ([], 3_000)
    assert int(stats["cmdstat_zmscore"]["calls"]) - before == 1  # the buckets' max only


async def test_a_recency_move_refused_midway_loses_no_member_and_the_next_start_finishes_it(redis: Redis) -> None:
    """A Redis that refuses writes (full, ``noeviction``) after the first page of the move: every
    member is in the old sorted set or in its bucket, never counted twice; the next start finishes."""
    import pytest
    from redis.exceptions import ResponseError

    from crm_bridge.recent import move_recent
    from tests.fullredis import refusing_writes

    key = recent_key("lead")
    old = {str(n): float(n % 13) for n in range(recency.MOVE_PAGE * 2 + 7)} | {"c1": 3.0}
    await redis.zadd(key, old)
    first = await redis.zrange(key, 0, recency.MOVE_PAGE - 1, withscores=True)  # the first page, as move_whole
    args = [v for m, s in first for v in (m.decode(), repr(s), recency.label(recency.number(m.decode())))]
    await redis.eval(recency.MOVE, 3, key, recency.tops(key), recency.count(key), *args)
    async with refusing_writes(redis):
        with pytest.raises(ResponseError):
            await move_recent(redis)
    assert not await redis.exists(DONE)
    moved = {m for m, _ in (await recency.page(redis, key, limit=recency.MOVE_PAGE))[0]}
    assert moved | {m.decode() for m in await redis.zrange(key, 0, -1)} == set(old)
    assert int(await redis.get(recency.count(key)) or 0) == len(moved) == recency.MOVE_PAGE
    assert await move_recent(redis) == len(old) - recency.MOVE_PAGE
    rows, total = await recency.page(redis, key, limit=len(old))
    assert dict(rows) == old and total == len(old) and not await redis.exists(key)


async def test_a_default_status_page_visits_few_buckets_and_makes_no_temporary_set(redis: Redis) -> None:
    """The contacts in no other status's set, a page newest first: the recency buckets in
    descending max until the page is certain, not a walk of every bucket into a temporary set
    (160-180 ms of Redis CPU a page at 50,000 contacts where the one sorted set's took 22)."""
    from crm_bridge import recent

    await move_old_layout(redis)
    rng, key, current = random.Random(5), recent_key("contact"), "sb:{crm}:by:contact:status:current"
    times: dict[str, float] = {}
    pipe = redis.pipeline(transaction=False)
    for n in range(30_000):
        times[str(n)] = float(rng.randrange(10**6))
        recency.add(pipe, key, str(n), times[str(n)])
        if rng.random() < 0.3:
            idsets.add(pipe, current, str(n))
            times.pop(str(n))
    await pipe.execute()
    stats: dict[str, Any] = await redis.info("commandstats")
    calls = {c: int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("zrange", "zrevrangebyscore", "zadd")}
    rows, total = await recent.listing(redis, "contact", [], [current], offset=10, limit=50, before=None)
    stats = await redis.info("commandstats")
    visits = sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) - n for c, n in calls.items())
    newest = sorted(times, key=lambda i: (times[i], int(i)), reverse=True)
    assert [i for i, _ in rows] == newest[10:60] and total == len(times)
    assert visits < 100, visits  # of 235 buckets
