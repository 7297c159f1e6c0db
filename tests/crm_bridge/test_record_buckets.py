"""The embedded CRM's contacts and leads as fields of bucket hashes (crm_bridge/records.py), and
the move of an older version's string keys into them at start: also on a Redis Cluster
(tests/cluster imports these bodies), where the buckets are in other slots than the old keys and
the move reads, writes and deletes without a script."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from crm_bridge import RedisCrm, records
from crm_bridge.codec import pack_record, unpack, unpack_record
from crm_bridge.contract import PIPELINES
from crm_bridge.directory import CrmDirectory
from crm_bridge.interface import ChannelIdentity, CrmRef
from crm_bridge.redis_crm import move_old_layout
from tests.fullredis import refusing_writes


async def _plain_keys(redis: Redis) -> list[str]:
    """The keys named ``sb:crm:contact:<id>`` / ``sb:crm:lead:<id>`` (the older layout)."""
    return sorted([k.decode() for pattern in ("sb:crm:contact:*", "sb:crm:lead:*")
                   async for k in redis.scan_iter(match=pattern)])


async def test_a_new_identitys_contact_and_lead_are_fields_of_compact_buckets_not_keys(redis: Redis) -> None:
    crm = RedisCrm(redis, pipelines=PIPELINES)
    ref = await crm.identify(ChannelIdentity("livechat", "demo", "s1", name="Ada"))
    assert await _plain_keys(redis) == []
    for kind, rid in (("contact", ref.contact_id), ("lead", ref.lead_id)):
        hash_, field = records.at(kind, rid)
        assert hash_.startswith(f"sb:crm:rec:{kind}:b:") and field == rid
        assert await redis.object("encoding", hash_) in (b"ziplist", b"listpack")
    assert unpack_record(await redis.hget(*records.at("contact", ref.contact_id)), ref.contact_id)["name"] == "Ada"
    await crm.execute(ref, {"do": "set_field", "entity": "lead", "field": "name", "value": "Big deal"})
    assert (await crm.snapshot(ref))["lead"]["name"] == "Big deal"
    assert await _plain_keys(redis) == []


async def test_a_record_over_64_bytes_makes_its_bucket_a_hash_table_and_every_record_reads_back(
        redis: Redis) -> None:
    crm = RedisCrm(redis, pipelines=PIPELINES)
    directory = CrmDirectory(crm)
    small = await crm.identify(ChannelIdentity("livechat", "demo", "small"))
    big = await crm.identify(ChannelIdentity("livechat", "demo", "big"))
    assert records.at("contact", small.contact_id)[0] == records.at("contact", big.contact_id)[0]
    name = "Grace Brewster Murray Hopper, Rear Admiral of the United States Navy"
    await directory.update_contact(big.contact_id, {"name": name, "email": "grace@navy.example"})
    assert await redis.hstrlen(*records.at("contact", big.contact_id)) > 64
    assert await redis.object("encoding", records.at("contact", big.contact_id)[0]) == b"hashtable"
    assert (await directory.get("contact", big.contact_id) or {})["name"] == name
    assert (await directory.get("contact", small.contact_id) or {})["id"] == small.contact_id
    found, total = await directory.search("contact", q="grace")
    assert [c["id"] for c in found] == [big.contact_id] and total == 1


async def _old_store(redis: Redis, n: int) -> list[CrmRef]:
    """``n`` identities as an older version left them: each record a string key of its own."""
    crm = RedisCrm(redis, pipelines=PIPELINES)
    refs = [await crm.identify(ChannelIdentity("livechat", "demo", f"old-{i}", name=f"Old {i}")) for i in range(n)]
    for ref in refs:
        for kind, rid in (("contact", ref.contact_id), ("lead", ref.lead_id)):
            raw = await redis.hget(*records.at(kind, rid))
            await redis.hdel(*records.at(kind, rid))
            await redis.set(records.old_key(kind, rid), raw)
    return refs


async def test_the_records_of_an_older_version_are_moved_into_their_buckets_at_start(redis: Redis) -> None:
    refs = await _old_store(redis, 3)
    newer = pack_record({"id": refs[0].contact_id, "name": "Written by this version"})
    await redis.hset(*records.at("contact", refs[0].contact_id), newer)  # meanwhile: kept
    await redis.set("sb:crm:lead:claims:x", b"not a record")  # another key under the prefix: left alone
    assert await move_old_layout(redis) >= 6
    assert await _plain_keys(redis) == ["sb:crm:lead:claims:x"]
    assert await redis.hget(*records.at("contact", refs[0].contact_id)) == newer
    crm = RedisCrm(redis, pipelines=PIPELINES)
    directory = CrmDirectory(crm)
    for i, ref in enumerate(refs[1:], 1):
        snapshot = await crm.snapshot(ref)
        assert snapshot["contact"]["name"] == f"Old {i}" and snapshot["lead"]["name"] == f"Old {i}"
    listed, _ = await directory.search("lead")
    assert sorted(lead["id"] for lead in listed) == sorted(ref.lead_id for ref in refs)
    assert await redis.get(records.RECORDS_DONE) is not None
    await redis.set(records.old_key("lead", "999"), b"written after the move")
    assert await records.move_old_records(redis) == 0  # once: later starts read one key


async def test_many_old_records_are_moved_page_by_page(redis: Redis) -> None:
    n = records.MOVE_PAGE + 7
    for i in range(n):
        await redis.set(records.old_key("lead", str(1000 + i)), pack_record({"id": str(1000 + i), "name": f"L{i}"}))
    assert await records.move_old_records(redis) == n
    assert await _plain_keys(redis) == []
    raws = await records.get_many(redis, "lead", [str(1000 + i) for i in range(n)])
    assert [unpack(raw)["name"] for raw in raws] == [f"L{i}" for i in range(n)]


async def test_a_move_refused_midway_loses_no_record_and_the_next_start_finishes_it(redis: Redis) -> None:
    """A Redis that refuses the buckets' writes (here: full, ``noeviction``; on a cluster a node
    away) while it still deletes: the older keys are deleted only once their records are written."""
    refs = await _old_store(redis, 3)
    async with refusing_writes(redis):
        with pytest.raises(ResponseError):
            await records.move_old_records(redis)
    for ref in refs:  # each record still in its old key or in its bucket
        for kind, rid in (("contact", ref.contact_id), ("lead", ref.lead_id)):
            assert await redis.exists(records.old_key(kind, rid)) or await redis.hexists(*records.at(kind, rid)), rid
    assert await records.move_old_records(redis) > 0
    crm = RedisCrm(redis, pipelines=PIPELINES)
    for i, ref in enumerate(refs):
        assert (await crm.snapshot(ref))["lead"]["name"] == f"Old {i}"
