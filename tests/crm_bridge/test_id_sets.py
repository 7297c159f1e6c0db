"""The embedded CRM's sets of ids in buckets of 512 (crm_bridge/idsets.py): small intsets, the
filtered listings and searches as before (order, totals, pages, cursors) across buckets, and the
move of an older version's whole sets at start. Also on a Redis Cluster (tests/cluster imports
these bodies): every bucket shares the slot ``{crm}``."""

from __future__ import annotations

from redis.asyncio import Redis

from crm_bridge import RedisCrm, idsets
from crm_bridge.contract import PIPELINES
from crm_bridge.directory import CrmDirectory
from crm_bridge.indexes import by_key, contact_stage_key
from crm_bridge.redis_crm import move_old_layout


class _Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        self.now += 1
        return self.now


async def _directory(redis: Redis) -> CrmDirectory:
    return CrmDirectory(RedisCrm(redis, pipelines=PIPELINES, clock=_Clock()))


async def _leads_across_a_bucket_edge(redis: Redis, directory: CrmDirectory, n: int) -> list[str]:
    """``n`` leads whose ids straddle the first buckets' edge (511 / 512), oldest first; every
    third tagged ``vip``, the even ones moved to ``Qualified``."""
    await redis.set(idsets.IDS, idsets.SET_BUCKET - n // 2)
    ids = []
    for i in range(n):
        lead = await directory.create_lead({"name": f"Deal {i}", "tags": ["vip"] if i % 3 == 0 else []})
        ids.append(str(lead["id"]))
    for i in range(0, n, 2):
        await directory.update_lead(ids[i], {"stage": "Qualified"})
    return ids


async def test_a_stages_ids_are_small_intsets_one_per_512_ids(redis: Redis) -> None:
    directory = await _directory(redis)
    ids = await _leads_across_a_bucket_edge(redis, directory, 20)
    stage = by_key("lead", "stage", "Sales/Qualified")
    assert not await redis.exists(stage)  # no set of its own: buckets
    buckets = {idsets.bucket(stage, i) for i in ids[0::2]}
    assert buckets == {f"{stage}:b:0", f"{stage}:b:1"}
    for name in buckets:
        assert await redis.object("encoding", name) == b"intset"
    assert await idsets.members(redis, stage) == set(ids[0::2])


async def test_filtered_lists_across_buckets_keep_their_order_totals_pages_and_cursors(redis: Redis) -> None:
    directory = await _directory(redis)
    ids = await _leads_across_a_bucket_edge(redis, directory, 20)
    qualified = ids[0::2]  # updated last: newest first in the order of their update
    found, total = await directory.search("lead", filters={"stage": "Qualified"}, limit=4)
    assert [r["id"] for r in found] == qualified[::-1][:4] and total == 10
    page2, _ = await directory.search("lead", filters={"stage": "Qualified"}, limit=4, offset=4)
    assert [r["id"] for r in page2] == qualified[::-1][4:8]
    after, _ = await directory.search("lead", filters={"stage": "Qualified"}, limit=4,
                                      before=found[-1]["updated_at"])
    assert [r["id"] for r in after] == qualified[::-1][4:8]
    both, total = await directory.search("lead", filters={"stage": "Qualified", "tag": ["vip"]})
    assert [r["id"] for r in both] == [i for i in qualified[::-1] if ids.index(i) % 3 == 0] and total == len(both)
    new, total = await directory.search("lead", filters={"stage": "New"})
    assert [r["id"] for r in new] == ids[1::2][::-1] and total == 10
    searched, total = await directory.search("lead", q="deal", filters={"stage": "Qualified", "tag": ["vip"]})
    assert [r["id"] for r in searched] == [r["id"] for r in both]
    contacts, total = await directory.search("contact", filters={"stage": "Qualified"})
    assert (contacts, total) == ([], 0)  # no contact has a lead there


async def test_a_contact_in_a_stage_is_found_through_the_buckets(redis: Redis) -> None:
    directory = await _directory(redis)
    await redis.set(idsets.IDS, idsets.SET_BUCKET - 2)
    contacts = [str((await directory.create_contact({"name": f"Ann {i}"}))["id"]) for i in range(4)]
    for cid in contacts:
        await directory.create_lead({"name": "Sofa"}, contact_id=cid)
    assert {idsets.bucket(contact_stage_key("Sales/New"), c) for c in contacts} == {
        f"{contact_stage_key('Sales/New')}:b:0", f"{contact_stage_key('Sales/New')}:b:1"}
    found, total = await directory.search("contact", filters={"stage": "New"})
    assert sorted(c["id"] for c in found) == sorted(contacts) and total == 4
    found, _ = await directory.search("contact", q="ann", filters={"stage": "New"})
    assert sorted(c["id"] for c in found) == sorted(contacts)
    await directory.update_contact(contacts[-1], {"status": "current"})  # (the newest write)
    for filters, want in (({"status": "potential", "stage": "New"}, contacts[:-1]),  # excluded, with a set
                          ({"status": "current", "stage": "New"}, contacts[-1:]),
                          ({"status": "potential"}, contacts[:-1]),  # excluded only
                          ({"status": "current"}, contacts[-1:])):
        found, total = await directory.search("contact", filters=filters)
        assert sorted(c["id"] for c in found) == sorted(want) and total == len(want), filters


async def test_the_whole_sets_of_an_older_version_are_moved_into_buckets_at_start(redis: Redis) -> None:
    directory = await _directory(redis)
    ids = await _leads_across_a_bucket_edge(redis, directory, 20)
    want, _ = await directory.search("lead", filters={"stage": "Qualified", "tag": ["vip"]})
    # as an older version kept them: one set each (and many members: pages)
    for key in (by_key("lead", "stage", "Sales/Qualified"), by_key("lead", "stage", "Sales/New"),
                by_key("lead", "tag", "vip")):
        members = await idsets.members(redis, key)
        await redis.delete(*await idsets.names(redis, key))
        await redis.sadd(key, *members)
    many = by_key("contact", "tag", "crowd")
    await redis.set(idsets.IDS, 5000)
    await redis.sadd(many, *(str(i) for i in range(1, 1 + 3 * idsets.MOVE_PAGE)))
    assert await move_old_layout(redis) >= 20 + 3 * idsets.MOVE_PAGE
    assert [k async for k in redis.scan_iter("sb:{crm}:by:*")
            if not idsets.IS_BUCKET.match(k.decode())] == []
    found, _ = await directory.search("lead", filters={"stage": "Qualified", "tag": ["vip"]})
    assert found == want
    assert await idsets.members(redis, by_key("lead", "stage", "Sales/New")) == set(ids[1::2])
    assert await idsets.members(redis, many) == {str(i) for i in range(1, 1 + 3 * idsets.MOVE_PAGE)}
    assert await redis.get(idsets.DONE) is not None
    await redis.sadd(by_key("lead", "tag", "later"), "1")
    assert await idsets.move_unbucketed_sets(redis) == 0  # once: later starts read one key


async def test_an_older_versions_set_named_like_a_bucket_is_moved_not_taken_for_one(redis: Redis) -> None:
    """A tag may end as a bucket's name does (``vip:x``, ``vip:b:7``): an older version's whole
    set of it is named as the tag ``vip``'s bucket would be. Left where it is, its leads would be
    listed under ``vip`` and lost to their own tag."""
    directory = await _directory(redis)
    tags = ["vip:x", "vip:b:7", "vip"]
    ids = {tag: str((await directory.create_lead({"name": f"Deal {tag}", "tags": [tag]}))["id"]) for tag in tags}
    for tag in tags[:2]:  # as an older version kept them: one set each
        key = by_key("lead", "tag", tag)
        members = await idsets.members(redis, key)
        await redis.delete(*await idsets.names(redis, key))
        await redis.sadd(key, *members)
    await move_old_layout(redis)
    for tag in tags:
        found, total = await directory.search("lead", filters={"tag": [tag]})
        assert ([r["id"] for r in found], total) == ([ids[tag]], 1), tag
