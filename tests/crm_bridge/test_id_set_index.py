"""Each id set's index of its non-empty buckets (``idsets.index``): a filtered
listing walks those buckets only, however many ids the CRM has made; a bucket that empties leaves
the index and comes back with its next id; the buckets an older version wrote (no index yet) are
read whole until the first start lists them."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Connection, ConnectionPool, Redis

from bot.store.resp import RespClient
from crm_bridge import ChannelIdentity, RedisCrm, idsets
from crm_bridge.contract import PIPELINES
from crm_bridge.directory import CrmDirectory
from crm_bridge.indexes import by_key, contact_stage_key
from crm_bridge.redis_crm import move_old_layout

#: A counter as a CRM that has made ten million ids has: 19,532 buckets a set may have.
MANY = 10_000_000


class _Counting(Connection):
    """A connection that counts the words of the commands it sends (keys named, arguments)."""

    sent: list[int]

    def pack_command(self, *args: Any) -> list[bytes]:
        self.sent.append(len(args))
        return super().pack_command(*args)


def _counting(redis: Redis, sent: list[int]) -> Redis:
    """Another client of ``redis``'s server whose connections count into ``sent``."""
    kwargs = dict(redis.connection_pool.connection_kwargs)
    counting = type("Counting", (_Counting,), {"sent": sent})
    return Redis.from_pool(ConnectionPool(connection_class=counting, host=kwargs.get("host", "localhost"),
                                          port=kwargs.get("port", 6379)))


async def _lookups(redis: Redis) -> int:
    """The keys Redis has looked up so far (found or not): what a walk of buckets costs it."""
    stats: dict[str, Any] = await redis.info("stats")
    return int(stats["keyspace_hits"]) + int(stats["keyspace_misses"])


async def _started(redis: Redis) -> CrmDirectory:
    await move_old_layout(redis)  # as at a server's start: the indexes are trusted from then on
    return CrmDirectory(RedisCrm(redis, pipelines=PIPELINES))


async def _leads(directory: CrmDirectory, n: int, tags: list[str]) -> list[str]:
    return [str((await directory.create_lead({"name": f"Deal {i}", "tags": tags}))["id"]) for i in range(n)]


async def _lookups_of(redis: Redis, directory: CrmDirectory, kind: str,
                      filters: dict[str, Any]) -> tuple[list[str], int]:
    before = await _lookups(redis)
    found, _ = await directory.search(kind, filters=filters, limit=50)
    return sorted(r["id"] for r in found), await _lookups(redis) - before


async def test_a_listing_walks_the_sets_non_empty_buckets_not_every_one_up_to_the_counter(redis: Redis) -> None:
    sent: list[int] = []
    redis = _counting(redis, sent)
    try:
        directory = await _started(redis)
        await redis.set(idsets.IDS, MANY - 10)  # the leads' ids in the last buckets of a large CRM
        ids = sorted(await _leads(directory, 3, ["vip"]))
        contact = str((await directory.create_contact({"name": "Ann"}))["id"])
        await directory.update_lead(ids[0], {"contacts": [contact]})
        for kind, filters, want in (("lead", {"stage": "New"}, ids), ("lead", {"stage": "New", "tag": ["vip"]}, ids),
                                    ("lead", {"stage": "New", "tag": ["vip", "none"]}, []),
                                    ("contact", {"stage": "New"}, [contact]),
                                    ("contact", {"status": "potential"}, [contact])):  # (excluded sets)
            sent.clear()
            found, looked_up = await _lookups_of(redis, directory, kind, filters)
            assert found == want, filters
            assert looked_up < 60, (filters, looked_up)  # every bucket up to the counter: 19,532 a set
            assert sum(sent) < 100, (filters, sent)  # and as many bucket names sent
    finally:
        await redis.aclose()


async def test_a_bucket_that_empties_leaves_the_index_and_its_next_id_brings_it_back(redis: Redis) -> None:
    directory = await _started(redis)
    await redis.set(idsets.IDS, 3 * idsets.SET_BUCKET - 1)  # the next id opens bucket 3
    stage = by_key("lead", "stage", "Sales/New")
    (lead,) = await _leads(directory, 1, [])
    contact = str((await directory.create_contact({"name": "Ann"}))["id"])
    await directory.update_lead(lead, {"contacts": [contact]})
    assert await redis.smembers(idsets.index(stage)) == {b"3"}
    assert await redis.smembers(idsets.index(contact_stage_key("Sales/New"))) == {b"3"}
    await directory.update_lead(lead, {"stage": "Qualified"})  # its bucket of New empties
    assert not await redis.exists(idsets.index(stage), idsets.index(contact_stage_key("Sales/New")))
    assert await directory.search("lead", filters={"stage": "New"}) == ([], 0)
    assert await directory.search("contact", filters={"stage": "New"}) == ([], 0)
    await directory.update_lead(lead, {"stage": "New"})  # back: listed again
    assert await redis.smembers(idsets.index(stage)) == {b"3"}
    found_again, looked_up = await _lookups_of(redis, directory, "lead", {"stage": "New"})
    assert found_again == [lead] and looked_up < 20
    found, _ = await directory.search("contact", filters={"stage": "New"})
    assert [r["id"] for r in found] == [contact]


async def test_a_remove_that_leaves_ids_in_the_bucket_keeps_it_listed(redis: Redis) -> None:
    directory = await _started(redis)
    ids = await _leads(directory, 2, ["vip"])  # one bucket
    await directory.update_lead(ids[0], {"tags": []})
    assert await redis.smembers(idsets.index(by_key("lead", "tag", "vip"))) == {b"0"}
    found, _ = await directory.search("lead", filters={"tag": ["vip"]})
    assert [r["id"] for r in found] == [ids[1]]


async def test_the_buckets_of_a_version_before_the_indexes_are_read_whole_then_listed_at_start(redis: Redis) -> None:
    directory = CrmDirectory(RedisCrm(redis, pipelines=PIPELINES))
    ids = []
    for at in (10, 2 * idsets.SET_BUCKET + 5, 7 * idsets.SET_BUCKET):  # three buckets
        await redis.set(idsets.IDS, at)
        ids += await _leads(directory, 2, ["vip"])
    contact = str((await directory.create_contact({"name": "Ann"}))["id"])
    await directory.update_lead(ids[-1], {"contacts": [contact]})
    # as the version before the indexes left them: buckets only
    await redis.delete(*[k async for k in redis.scan_iter(f"{idsets.NB}*")], idsets.INDEXED)
    for step in ("before", "started"):
        for kind, filters, want in (("lead", {"stage": "New"}, ids), ("lead", {"stage": "New", "tag": ["vip"]}, ids),
                                    ("contact", {"stage": "New"}, [contact])):
            found, _ = await directory.search(kind, filters=filters, limit=50)
            assert sorted(r["id"] for r in found) == sorted(want), (step, filters)
        if step == "before":
            assert await move_old_layout(redis) == 0  # nothing moved: the buckets listed
    assert await redis.smembers(idsets.index(by_key("lead", "stage", "Sales/New"))) == {b"0", b"2", b"7"}
    assert await redis.smembers(idsets.index(contact_stage_key("Sales/New"))) == {b"7"}
    assert await idsets.index_sets(redis) == 0  # once: later starts read one key


async def test_an_older_versions_set_of_a_tag_named_like_an_index_is_moved_not_taken_for_one(redis: Redis) -> None:
    """A tag is free text and may end as an index's name would under ``by:`` (``vip:nb``): the
    whole set an older version kept of it must be moved into its buckets, not skipped as the tag
    ``vip``'s index (its leads would be lost to their tag, and read as bucket numbers of ``vip``)."""
    directory = CrmDirectory(RedisCrm(redis, pipelines=PIPELINES))
    tags = ["vip", "vip:nb"]
    ids = {tag: str((await directory.create_lead({"name": f"Deal {tag}", "tags": [tag]}))["id"]) for tag in tags}
    for tag in tags:  # as the version before the buckets kept them: one set each, no index
        key = by_key("lead", "tag", tag)
        members = await idsets.members(redis, key)
        await redis.delete(*await idsets.names(redis, key), idsets.index(key))
        await redis.sadd(key, *members)
    await move_old_layout(redis)
    for tag in tags:
        found, total = await directory.search("lead", filters={"tag": [tag]})
        assert ([r["id"] for r in found], total) == ([ids[tag]], 1), tag


async def test_a_new_identitys_records_made_in_one_script_list_their_buckets(redis: Redis) -> None:
    """On one Redis a new identity's contact and lead are written by one script (``CREATE``,
    ``redis_crm._plain``): their sets' buckets are listed there too, the lead's stage and the
    contact's stage (a bucket of its own: ids past the first)."""
    lean = RespClient.like(redis)
    try:
        await move_old_layout(redis)
        await redis.set(idsets.IDS, 5 * idsets.SET_BUCKET - 1)  # the contact in bucket 5, its lead in 5
        crm = RedisCrm(redis, pipelines=PIPELINES, reader=lean)
        ref = await crm.identify(ChannelIdentity("livechat", "demo", "new-one", name="Ada"))
        assert await redis.smembers(idsets.index(by_key("lead", "stage", "Sales/New"))) == {b"5"}
        assert await redis.smembers(idsets.index(contact_stage_key("Sales/New"))) == {b"5"}
        directory = CrmDirectory(crm)
        found, _ = await directory.search("contact", filters={"stage": "New"})
        assert [r["id"] for r in found] == [ref.contact_id]
        found, _ = await directory.search("lead", filters={"stage": "New"})
        assert [r["id"] for r in found] == [ref.lead_id]
    finally:
        await lean.aclose()
