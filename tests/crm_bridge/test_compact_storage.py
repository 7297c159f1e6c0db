"""The embedded CRM's compact storage (issue 14, memory): records and identities read back exactly,
and what an older version wrote stays readable and is moved to the new layout on first touch."""

from __future__ import annotations

import msgpack
from redis.asyncio import Redis

from bot.store.buckets import BUCKET, bucket
from bot.store.layout import rename_old_keys
from crm_bridge import RedisCrm, idsets, records
from crm_bridge.codec import SHAPED, pack, pack_record, unpack, unpack_record
from crm_bridge.contract import PIPELINES
from crm_bridge.directory import CrmDirectory
from crm_bridge.indexes import (
    CONTACT_STAGES_DONE,
    LEADS_OF,
    OLD_DEFAULT_STATUS_KEY,
    contact_stage_key,
    contact_stage_more_key,
    move_contact_stages,
    old_contact_stage_key,
    old_leads_of_key,
    search_key,
)
from crm_bridge.interface import ChannelIdentity, CrmRef
from crm_bridge.redis_crm import IDENTITIES, IDENTITY, identities_key, identity_hash, move_old_layout


async def _field(redis: Redis, key: str, owner: str) -> bytes | None:
    """``owner``'s field of the list ``key`` (in its bucket)."""
    found: bytes | None = await redis.hget(bucket(key, owner), owner)
    return found


def test_a_record_reads_back_exactly_with_its_order_and_types() -> None:
    lead = {"id": "12", "name": "Lead #12", "price": 0.0, "pipeline": "Sales", "stage": "Incoming",
            "responsible": None, "fields": {"budget": 5, "name": ""}, "tags": [], "contacts": ["11"],
            "company": None, "subscribers": [], "stage_since": 1796537725.5, "custom": {"x": [1]},
            "unsubscribed": 0, "discount": False}
    back = unpack(pack_record(lead))
    assert back == lead
    assert list(back) == list(lead)
    assert [type(v) for v in back.values()] == [type(v) for v in lead.values()]


def test_a_leads_default_name_is_written_as_a_mark_and_read_back_from_its_id() -> None:
    lead = {"name": "Lead #10000", "id": "10000", "price": 5}
    compact = pack_record(lead)
    assert b"Lead" not in compact
    assert list(unpack(compact).items()) == list(lead.items())
    for other in ({"id": "7", "name": "Lead #8"}, {"id": 7, "name": "Lead #7"}, {"name": "Lead #None"}):
        assert unpack(pack_record(other)) == other and b"Lead" in pack_record(other)


def test_defaults_come_back_as_new_objects() -> None:
    first, second = unpack(pack_record({"tags": []})), unpack(pack_record({"tags": []}))
    first["tags"].append("vip")
    assert second == {"tags": []}


def test_a_compact_record_is_less_than_half_the_plain_one() -> None:
    contact = {"id": "5", "name": "", "first_name": None, "phone": None, "email": None, "fields": {}, "tags": [],
               "responsible": None}
    compact = pack_record(contact)
    assert compact.startswith(SHAPED)
    assert len(compact) * 2 < len(pack(contact))


async def test_a_record_written_plain_by_an_older_version_is_read_and_compacted_by_the_next_write(
        redis: Redis) -> None:
    crm = RedisCrm(redis, pipelines=PIPELINES)
    ref = await crm.identify(ChannelIdentity("livechat", "demo", "s1"))
    old_lead = unpack_record(await redis.hget(*records.at("lead", ref.lead_id)), ref.lead_id)
    await redis.hset(*records.at("lead", ref.lead_id), msgpack.packb(old_lead, use_bin_type=True))
    assert (await crm.snapshot(ref))["lead"]["name"] == old_lead["name"]
    await crm.execute(ref, {"do": "tags", "add": ["vip"]})
    raw = await redis.hget(*records.at("lead", ref.lead_id))
    assert raw.startswith(SHAPED)
    assert unpack_record(raw, ref.lead_id) == {**old_lead, "tags": ["vip"]}


async def test_identities_live_in_one_hash(redis: Redis) -> None:
    crm = RedisCrm(redis, pipelines=PIPELINES)
    ref = await crm.identify(ChannelIdentity("livechat", "demo", "s1"))
    assert await crm.attach(ChannelIdentity("telegram", "shop", "42"), ref) == ref
    assert await crm.attach(ChannelIdentity("telegram", "shop", "42"), ref) == ref  # known: not doubled
    assert await crm.identities(ref.contact_id) == [("livechat", "demo", "s1"), ("telegram", "shop", "42")]
    assert await _field(redis, IDENTITIES, ref.contact_id) == b"livechat:demo:s1\x1ftelegram:shop:42"
    assert not await redis.exists(identities_key(ref.contact_id))


async def test_identities_of_the_old_layout_are_read_and_moved_on_first_touch(redis: Redis) -> None:
    crm = RedisCrm(redis, pipelines=PIPELINES)
    await redis.hset(identity_hash("livechat:demo:old"), "livechat:demo:old", "1:2")  # as an older version wrote them
    await redis.sadd(identities_key("1"), "livechat:demo:old", "whatsapp:main:905551112233")
    await crm.attach(ChannelIdentity("telegram", "shop", "42"), CrmRef("1", "2"))
    expected = [("livechat", "demo", "old"), ("telegram", "shop", "42"), ("whatsapp", "main", "905551112233")]
    assert await crm.identities("1") == expected
    assert not await redis.exists(identities_key("1"))
    assert sorted((await _field(redis, IDENTITIES, "1")).split(b"\x1f")) == [
        b"livechat:demo:old", b"telegram:shop:42", b"whatsapp:main:905551112233"]
    assert await crm.identities("1") == expected


async def test_a_new_contact_and_lead_write_no_dead_index(redis: Redis) -> None:
    crm = RedisCrm(redis, pipelines=PIPELINES)
    ref = await crm.identify(ChannelIdentity("livechat", "demo", "s1"))
    await crm.execute(ref, {"do": "tags", "add": ["vip"]})
    assert not await redis.exists("sb:crm:idx:leads")


async def test_a_contacts_leads_live_in_one_hash_and_follow_the_leads_contacts(redis: Redis) -> None:
    crm = RedisCrm(redis, pipelines=PIPELINES)
    directory = CrmDirectory(crm)
    ref = await crm.identify(ChannelIdentity("livechat", "demo", "s1", name="Deniz Ak"))
    second = await directory.create_lead({"name": "Sofa"}, contact_id=ref.contact_id)
    assert await _field(redis, LEADS_OF, ref.contact_id) == f"{ref.lead_id},{second['id']}".encode()
    assert [lead["id"] for lead in (await directory.contact(ref.contact_id) or {})["leads"]] == [
        ref.lead_id, second["id"]]
    other = await directory.create_contact({"name": "Ece"})
    await directory.update_lead(second["id"], {"contacts": [other["id"]]})
    assert await _field(redis, LEADS_OF, ref.contact_id) == ref.lead_id.encode()
    assert await _field(redis, LEADS_OF, other["id"]) == second["id"].encode()
    found, _ = await directory.search("lead", q="deniz")
    assert [lead["id"] for lead in found] == [ref.lead_id]
    await directory.update_lead(ref.lead_id, {"contacts": [other["id"]]})
    assert not await _field(redis, LEADS_OF, ref.contact_id)
    assert not await redis.exists(old_leads_of_key(ref.contact_id), old_leads_of_key(other["id"]))


async def test_a_contacts_leads_of_the_old_layout_are_read_and_moved_on_first_touch(redis: Redis) -> None:
    crm = RedisCrm(redis, pipelines=PIPELINES)
    directory = CrmDirectory(crm)
    ref = await crm.identify(ChannelIdentity("livechat", "demo", "s1", name="Deniz Ak"))
    lead = await directory.create_lead({"name": "Sofa"})
    await redis.sadd(old_leads_of_key(ref.contact_id), lead["id"], "999")  # as an older version wrote it
    assert [x["id"] for x in (await directory.contact(ref.contact_id) or {})["leads"]] == [ref.lead_id, lead["id"]]
    assert not await redis.exists(old_leads_of_key(ref.contact_id))
    assert await _field(redis, LEADS_OF, ref.contact_id) == f"{ref.lead_id},{lead['id']},999".encode()
    await redis.sadd(old_leads_of_key(ref.contact_id), lead["id"])  # a lead leaving: gone from both
    await directory.update_lead(lead["id"], {"contacts": [ref.contact_id]})
    await directory.update_lead(lead["id"], {"contacts": []})
    assert not await redis.exists(old_leads_of_key(ref.contact_id))
    assert await _field(redis, LEADS_OF, ref.contact_id) == f"{ref.lead_id},999".encode()


async def test_an_unnamed_lead_is_found_by_its_number_without_an_index_entry(redis: Redis) -> None:
    crm = RedisCrm(redis, pipelines=PIPELINES)
    directory = CrmDirectory(crm)
    ref = await crm.identify(ChannelIdentity("livechat", "demo", "s1"))
    named = await directory.create_lead({"name": "Lead generation deal"})
    assert (await directory.get("lead", ref.lead_id) or {})["name"] == f"Lead #{ref.lead_id}"
    assert await redis.zcard(search_key("lead")) == 3  # "lead", "generation", "deal" of the named one
    found, total = await directory.search("lead", q=f"#{ref.lead_id}")
    assert [lead["id"] for lead in found] == [ref.lead_id] and total == 1
    found, _ = await directory.search("lead", q="lead")
    assert [lead["id"] for lead in found] == [named["id"]]


async def test_the_index_entries_an_older_version_wrote_for_a_default_name_go_with_a_new_name(redis: Redis) -> None:
    crm = RedisCrm(redis, pipelines=PIPELINES)
    directory = CrmDirectory(crm)
    ref = await crm.identify(ChannelIdentity("livechat", "demo", "s1"))
    lid = ref.lead_id
    await redis.zadd(search_key("lead"), {f"lead\x00{lid}": 0, f"#{lid}\x00{lid}": 0})  # as written before
    found, _ = await directory.search("lead", q="lead")
    assert [lead["id"] for lead in found] == [lid]  # still found as it was
    await directory.update_lead(lid, {"name": "Sofa"})
    assert await redis.zrange(search_key("lead"), 0, -1) == [f"sofa\x00{lid}".encode()]


async def test_the_dead_lead_index_of_an_older_version_is_unlinked_at_start(redis: Redis) -> None:
    await redis.zadd("sb:crm:idx:leads", {"2": 2.0, "4": 4.0})
    assert await rename_old_keys(redis, shards=16) == 1  # what every start on a single Redis runs
    assert not await redis.exists("sb:crm:idx:leads")
    assert await rename_old_keys(redis, shards=16) == 0


def test_a_lists_owners_share_buckets_of_at_most_128_numeric_ids() -> None:
    assert bucket(LEADS_OF, "0") == bucket(LEADS_OF, str(BUCKET - 1)) == "sb:crm:leads_of:b:0"
    assert bucket(LEADS_OF, str(BUCKET)) == "sb:crm:leads_of:b:1"
    assert bucket(IDENTITIES, "c1") == bucket(IDENTITIES, "c1") and ":t:" in bucket(IDENTITIES, "c1")
    assert ":t:" in bucket(LEADS_OF, "31234567")  # another CRM's sparse ids: spread, not one bucket each
    assert bucket(LEADS_OF, "17") != old_leads_of_key("17")  # never the name of an older version's set


async def test_a_bucket_is_a_compact_hash(redis: Redis) -> None:
    crm = RedisCrm(redis, pipelines=PIPELINES)
    refs = [await crm.identify(ChannelIdentity("livechat", "demo", f"s{n}")) for n in range(40)]
    for key in {bucket(IDENTITIES, r.contact_id) for r in refs} | {bucket(LEADS_OF, r.contact_id) for r in refs}:
        assert await redis.object("encoding", key) in (b"ziplist", b"listpack")


async def test_the_unbucketed_hashes_of_the_previous_layout_are_moved_at_start_and_read(redis: Redis) -> None:
    crm = RedisCrm(redis, pipelines=PIPELINES)
    directory = CrmDirectory(crm)
    ref = await crm.identify(ChannelIdentity("livechat", "demo", "s1", name="Deniz Ak"))
    lead = await directory.create_lead({"name": "Sofa"})
    # As the previous version wrote them: one big hash per list (the first contact's field both in
    # the old hash and in its bucket: an edit that reached the bucket first keeps its members).
    await redis.hset(IDENTITIES, mapping={"1000": "livechat:demo:old\x1fwhatsapp:main:905551112233",
                                          ref.contact_id: "telegram:shop:42"})
    await redis.hset(LEADS_OF, mapping={"1000": "1001,1003", ref.contact_id: lead["id"]})
    await redis.hset(IDENTITY, "livechat:demo:old", "1000:1001")
    assert await move_old_layout(redis) == 6  # (the old identity's field moved, then renamed to its digest)
    assert not await redis.exists(IDENTITY, IDENTITIES, LEADS_OF)
    assert await crm.identify(ChannelIdentity("livechat", "demo", "old")) == CrmRef("1000", "1001")
    assert await crm.identify(ChannelIdentity("livechat", "demo", "s1")) == ref
    assert await crm.identities("1000") == [("livechat", "demo", "old"), ("whatsapp", "main", "905551112233")]
    assert await crm.identities(ref.contact_id) == [("livechat", "demo", "s1"), ("telegram", "shop", "42")]
    assert await _field(redis, LEADS_OF, "1000") == b"1001,1003"
    assert await _field(redis, LEADS_OF, ref.contact_id) == f"{lead['id']},{ref.lead_id}".encode()
    assert [x["id"] for x in (await directory.contact(ref.contact_id) or {})["leads"]] == sorted(
        [ref.lead_id, lead["id"]], key=int)
    assert await move_old_layout(redis) == 0  # a later start: nothing left


async def test_the_default_status_has_no_set_and_filters_as_the_contacts_in_no_other(redis: Redis) -> None:
    crm = RedisCrm(redis, pipelines=PIPELINES)
    directory = CrmDirectory(crm)
    ref = await crm.identify(ChannelIdentity("livechat", "demo", "s1", name="Deniz Ak"))
    ece = await directory.create_contact({"name": "Ece Ak", "status": "current", "tags": ["vip"]})
    cem = await directory.create_contact({"name": "Cem Ak", "tags": ["vip"]})
    assert not await redis.exists(OLD_DEFAULT_STATUS_KEY)

    async def listed(q: str | None = None, **filters: str) -> tuple[list[str], int]:
        found, total = await directory.search("contact", q=q, filters=filters)
        return [c["id"] for c in found], total

    assert await listed(status="potential") == ([cem["id"], ref.contact_id], 2)
    assert await listed(status="current") == ([ece["id"]], 1)
    assert await listed(status="potential", tag="vip") == ([cem["id"]], 1)
    assert await listed(q="ak", status="potential") == ([cem["id"], ref.contact_id], 2)
    assert await listed(q="ak", status="current") == ([ece["id"]], 1)
    await directory.update_contact(ece["id"], {"status": "potential"})
    await directory.update_contact(cem["id"], {"status": "current"})
    assert await listed(status="potential", tag="vip") == ([ece["id"]], 1)
    assert await listed(status="current") == ([cem["id"]], 1)
    assert not await redis.exists(OLD_DEFAULT_STATUS_KEY)


async def test_the_default_status_set_of_an_older_version_is_dropped_at_start(redis: Redis) -> None:
    await redis.sadd(OLD_DEFAULT_STATUS_KEY, "1", "3")  # as an older version kept it
    await move_old_layout(redis)
    assert not await redis.exists(OLD_DEFAULT_STATUS_KEY)


async def test_a_contacts_leads_in_a_stage_are_a_set_member_and_a_count_of_the_more(redis: Redis) -> None:
    crm = RedisCrm(redis, pipelines=PIPELINES)
    directory = CrmDirectory(crm)
    ref = await crm.identify(ChannelIdentity("livechat", "demo", "s1", name="Deniz Ak"))
    other = await crm.identify(ChannelIdentity("livechat", "demo", "s2", name="Ece Ak"))
    incoming = contact_stage_key("Sales/New")

    async def in_stage(stage: str, q: str | None = None) -> list[str]:
        found, _ = await directory.search("contact", q=q, filters={"stage": stage})
        return sorted(c["id"] for c in found)

    assert await idsets.members(redis, incoming) == {ref.contact_id, other.contact_id}
    assert not await redis.exists(contact_stage_more_key("Sales/New"))
    second = await directory.create_lead({"name": "Sofa"}, contact_id=ref.contact_id)
    assert await redis.hget(contact_stage_more_key("Sales/New"), ref.contact_id) == b"1"
    await directory.update_lead(ref.lead_id, {"stage": "Won"})  # one of its two leaves: still there
    assert await in_stage("New") == sorted([ref.contact_id, other.contact_id])
    assert await in_stage("Won") == [ref.contact_id]
    assert not await redis.exists(contact_stage_more_key("Sales/New"))
    await directory.update_lead(second["id"], {"stage": "Won"})  # the other one too: gone
    assert await in_stage("New") == [other.contact_id]
    assert await in_stage("New", q="ak") == [other.contact_id]
    assert await in_stage("Won", q="deniz") == [ref.contact_id]
    assert await redis.hget(contact_stage_more_key("Sales/Won"), ref.contact_id) == b"1"
    assert not await redis.exists(old_contact_stage_key("Sales/New"), old_contact_stage_key("Sales/Won"))


async def test_the_contacts_stage_counts_of_an_older_version_are_moved_at_start(redis: Redis) -> None:
    crm = RedisCrm(redis, pipelines=PIPELINES)
    directory = CrmDirectory(crm)
    ref = await crm.identify(ChannelIdentity("livechat", "demo", "s1", name="Deniz Ak"))
    # as an older version kept it:
    await redis.delete(*await idsets.names(redis, contact_stage_key("Sales/New")), CONTACT_STAGES_DONE)
    await redis.zadd(old_contact_stage_key("Sales/New"), {ref.contact_id: 2, "77": 1})
    assert await move_old_layout(redis) == 2
    assert await redis.get(CONTACT_STAGES_DONE) == b"2"  # later starts read this key, no SCAN
    assert not await redis.exists(old_contact_stage_key("Sales/New"))
    assert await idsets.members(redis, contact_stage_key("Sales/New")) == {ref.contact_id, "77"}
    found, _ = await directory.search("contact", filters={"stage": "New"})
    assert [c["id"] for c in found] == [ref.contact_id]  # (77: no record)
    await directory.update_lead(ref.lead_id, {"stage": "Won"})  # one of its two counted leads left
    assert ref.contact_id in await idsets.members(redis, contact_stage_key("Sales/New"))
    assert await move_old_layout(redis) == 0


async def test_a_stage_count_moved_onto_a_contact_the_new_set_has_keeps_every_lead(redis: Redis) -> None:
    """A contact counted in both layouts (a lead this version added before the move): the old
    count's leads are all more than the one the set stands for."""
    await redis.sadd(idsets.bucket(contact_stage_key("Sales/New"), "5"), "5")  # one lead, counted by this version
    await redis.zadd(old_contact_stage_key("Sales/New"), {"5": 2, "6": 1})  # two more, counted before
    assert await move_contact_stages(redis) == 2
    assert await idsets.members(redis, contact_stage_key("Sales/New")) == {"5", "6"}
    assert await redis.hgetall(contact_stage_more_key("Sales/New")) == {b"5": b"2"}  # 3 leads: 2 more
