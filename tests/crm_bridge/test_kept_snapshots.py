"""The embedded CRM across processes (two ``RedisCrm`` on one real Redis, each with its own lean
connection, as two server processes have): a new identity's records are created once whoever
races for them, and a snapshot a process keeps (``crm_bridge/versions.py``) is never used after
another process, or the API, changed its records."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from bot.store.resp import RespClient
from crm_bridge import ChannelIdentity, CrmRef, RedisCrm, records
from crm_bridge.codec import pack_record
from crm_bridge.contract import PIPELINES
from crm_bridge.directory import CrmDirectory
from crm_bridge.redis_crm import identity_field, identity_hash
from crm_bridge.versions import BUCKETS, VERSIONS, check


@pytest.fixture
async def processes(redis: Redis) -> AsyncIterator[tuple[RedisCrm, RedisCrm]]:
    leans = [RespClient.like(redis), RespClient.like(redis)]
    try:
        yield (RedisCrm(redis, pipelines=PIPELINES, reader=leans[0]),
               RedisCrm(redis, pipelines=PIPELINES, reader=leans[1]))
    finally:
        for lean in leans:
            await lean.aclose()


async def _calls(redis: Redis, name: str) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get(f"cmdstat_{name}", {}).get("calls", 0))


async def _records(redis: Redis, kind: str) -> int:
    """How many records of ``kind`` are stored (fields of their buckets, ``records.py``)."""
    return sum([await redis.hlen(key) async for key in redis.scan_iter(f"{records.RECORDS[kind]}:*")])


async def _snapshot_via_reads(crm: RedisCrm, ref: CrmRef) -> dict[str, Any]:
    """What the runtime does: the reads sent (with its push), the snapshot built from the replies."""
    reads = crm.snapshot_reads(ref)
    pipe = crm.reader.pipeline(transaction=False)
    for command in reads:
        pipe.execute_command(*command)
    return await crm.snapshot_from(ref, await pipe.execute())


@pytest.mark.parametrize("lean", [True, False], ids=["one-script", "claim-then-write"])
async def test_two_processes_creating_one_identity_at_once_create_one_contact(redis: Redis, lean: bool) -> None:
    clients = [RespClient.like(redis) for _ in range(2)]
    try:
        crms = [RedisCrm(redis, pipelines=PIPELINES, reader=c if lean else None) for c in clients]
        who = ChannelIdentity("livechat", "demo", "same-person", name="Ada")
        for _ in range(3):  # the first messages of the same contact on two processes: neither found it
            results = await asyncio.gather(*(crm.identify_from(who, [None]) for crm in crms))
            refs = {ref for ref, _ in results}
            assert len(refs) == 1, results  # both work on the same records
            (ref,) = refs
            created = [records for _, records in results if records is not None]
            assert len(created) <= 1
        assert await _records(redis, "contact") == 1
        assert await _records(redis, "lead") == 1
        person = "livechat:demo:same-person"
        claim = await redis.hget(identity_hash(person), identity_field(person))
        assert claim == f"{ref.contact_id}:{ref.lead_id}".encode()
        assert (await crms[0].snapshot(ref))["contact"]["name"] == "Ada"
        if lean:  # the loser's ids are kept for its next new identity, not lost
            assert sum(len(crm._spare) for crm in crms) % 2 == 0
    finally:
        for c in clients:
            await c.aclose()


async def test_a_process_that_finds_an_identity_claimed_finds_its_records_written(
        redis: Redis, processes: tuple[RedisCrm, RedisCrm], monkeypatch: pytest.MonkeyPatch) -> None:
    """The claim and the records go in one script: after every round trip of the process creating
    them, another process sees both or neither."""
    a, b = processes
    who = ChannelIdentity("livechat", "demo", "watcher", name="Grace")
    lean = a.reader
    assert isinstance(lean, RespClient)
    send = lean.send
    seen: list[tuple[bool, bool]] = []

    async def watched(commands: Any) -> list[Any]:
        replies = await send(commands)
        claim = await redis.hget(identity_hash("livechat:demo:watcher"), identity_field("livechat:demo:watcher"))
        seen.append((claim is not None, bool(await _records(redis, "contact"))))
        return replies

    monkeypatch.setattr(lean, "send", watched)
    ref, _ = await a.identify_from(who, [None])
    assert seen[-1] == (True, True) and all(claimed == written for claimed, written in seen), seen
    assert (await b.identify_from(who, [f"{ref.contact_id}:{ref.lead_id}".encode()]))[0] == ref


async def test_a_kept_snapshot_is_checked_with_one_read_and_never_used_after_another_process_writes(
        redis: Redis, processes: tuple[RedisCrm, RedisCrm]) -> None:
    a, b = processes
    ref = await a.identify(ChannelIdentity("livechat", "demo", "kept", name="Ada"))
    assert (await _snapshot_via_reads(a, ref))["lead"]["name"] == "Ada"
    assert a.snapshot_reads(ref) == [check(ref)]  # kept: only the versions are read
    gets = await _calls(redis, "hget")
    assert (await _snapshot_via_reads(a, ref))["lead"]["name"] == "Ada"
    assert await _calls(redis, "hget") == gets  # served from what was kept

    # Another process runs a flow's command on the lead: the next check reads it again.
    await b.execute(ref, {"do": "set_field", "entity": "lead", "field": "name", "value": "Big deal"})
    assert (await _snapshot_via_reads(a, ref))["lead"]["name"] == "Big deal"
    # ... and the API (any process) edits the contact.
    directory = CrmDirectory(b)
    await directory.update_contact(ref.contact_id, {"name": "Grace Hopper"})
    assert (await _snapshot_via_reads(a, ref))["contact"]["name"] == "Grace Hopper"
    assert (await _snapshot_via_reads(a, ref))["contact"]["name"] == "Grace Hopper"
    assert await _calls(redis, "hget") > gets


async def test_a_process_reads_its_own_write_with_the_next_push_not_in_a_round_trip_of_its_own(
        processes: tuple[RedisCrm, RedisCrm]) -> None:
    a, _ = processes
    ref = await a.identify(ChannelIdentity("livechat", "demo", "own", name="Ada"))
    await _snapshot_via_reads(a, ref)
    await a.execute(ref, {"do": "change_stage", "stage": "Qualified"})
    assert a.snapshot_reads(ref)[1:] == [records.read("contact", ref.contact_id),
                                         records.read("lead", ref.lead_id)]
    assert (await _snapshot_via_reads(a, ref))["lead"]["stage"] == "Qualified"


async def test_a_write_to_another_record_of_the_same_bucket_only_costs_a_read(
        redis: Redis, processes: tuple[RedisCrm, RedisCrm]) -> None:
    a, _ = processes
    ref = await a.identify(ChannelIdentity("livechat", "demo", "bucket", name="Ada"))
    await _snapshot_via_reads(a, ref)
    await redis.hincrby(VERSIONS, str(int(ref.lead_id) % BUCKETS), 1)  # as a write of lead id + BUCKETS would
    gets = await _calls(redis, "hget")
    assert (await _snapshot_via_reads(a, ref))["lead"]["name"] == "Ada"
    assert await _calls(redis, "hget") == gets + 2  # read again, same records


async def test_records_an_older_version_wrote_without_versions_are_kept_until_a_write(
        redis: Redis, processes: tuple[RedisCrm, RedisCrm]) -> None:
    a, b = processes
    ref = await a.identify(ChannelIdentity("livechat", "demo", "older", name="Ada"))
    await redis.delete(VERSIONS)  # as before versions existed
    assert (await _snapshot_via_reads(a, ref))["lead"]["name"] == "Ada"
    assert a.snapshot_reads(ref) == [check(ref)]
    await b.execute(ref, {"do": "set_field", "entity": "lead", "field": "name", "value": "Changed"})
    assert (await _snapshot_via_reads(a, ref))["lead"]["name"] == "Changed"


async def test_a_snapshot_of_records_not_written_yet_is_not_kept(
        redis: Redis, processes: tuple[RedisCrm, RedisCrm]) -> None:
    """A claim found before its records (the claim-then-write path of a Redis Cluster or of a CRM
    without the lean connection): the stand-in records are not kept, the written ones are read."""
    a, _ = processes
    ref = CrmRef("900", "901")
    assert (await _snapshot_via_reads(a, ref))["lead"]["name"] == "Lead #901"
    assert a.snapshot_reads(ref)[0] == check(ref) and len(a.snapshot_reads(ref)) == 3
    await redis.hset(*records.at("contact", "900"), pack_record({"id": "900", "name": "Ada"}))  # the contact first
    assert (await _snapshot_via_reads(a, ref))["lead"]["name"] == "Lead #901"
    assert len(a.snapshot_reads(ref)) == 3
    await redis.hset(*records.at("lead", "901"), pack_record({"id": "901", "name": "Written", "pipeline": "Sales",
                                                     "stage": "Incoming", "contacts": ["900"]}))
    assert (await _snapshot_via_reads(a, ref))["lead"]["name"] == "Written"


async def test_new_identities_created_at_once_by_one_process_get_ids_of_their_own(
        redis: Redis, processes: tuple[RedisCrm, RedisCrm]) -> None:
    """Many first messages at once with no ids left: each refill of the block adds to what is left,
    no id is handed out twice (two conversations on one contact)."""
    a, _ = processes
    who = [ChannelIdentity("livechat", "demo", f"crowd-{n}") for n in range(40)]
    refs = await asyncio.gather(*(a.identify(w) for w in who))
    assert len({r.contact_id for r in refs} | {r.lead_id for r in refs}) == 2 * len(refs)
    assert await _records(redis, "contact") == len(refs)
