"""``CrmDirectory.open_lead``: a contact's newest open lead, else one new lead however many
callers ask at once (the shop's orders, ``POST /api/events``), against a real Redis."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from crm_bridge import RedisCrm
from crm_bridge.directory import CrmDirectory
from crm_bridge.indexes import leads_of


async def test_callers_at_once_share_one_new_lead_and_a_closed_lead_gets_a_new_one(redis: Redis) -> None:
    directory = CrmDirectory(RedisCrm(redis))
    cid = str((await directory.create_contact({"name": "Five at once"}))["id"])
    # Connections open first: on a cold pool the first caller is done before the others connect,
    # and even a read-then-create without any claim would pass.
    await asyncio.gather(*(redis.ping() for _ in range(8)))
    found = await asyncio.gather(*(directory.open_lead(cid) for _ in range(5)))
    assert len(set(found)) == 1
    assert (await leads_of(redis, [cid]))[cid] == [found[0]]
    lead = await directory.get("lead", found[0])
    assert lead is not None and lead["contacts"] == [cid]
    assert await directory.open_lead(cid) == found[0]  # open: kept
    await directory.update_lead(found[0], {"stage": "Won"})  # closed within the claim's minute
    fresh = await directory.open_lead(cid)
    assert fresh != found[0] and (await leads_of(redis, [cid]))[cid] == [found[0], fresh]
    newer = await directory.create_lead({}, contact_id=cid)  # several open: the newest
    assert await directory.open_lead(cid) == str(newer["id"])


async def test_a_claim_whose_lead_was_not_written_is_dropped(redis: Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cluster path claims with SET NX before it writes: a write that fails drops its claim,
    and a claim left by a claimer that died before writing is taken anew once it is stale."""
    monkeypatch.setattr("crm_bridge.directory.is_cluster", lambda _redis: True)
    directory = CrmDirectory(RedisCrm(redis))
    cid = str((await directory.create_contact({"name": "Failing write"}))["id"])
    claim = f"sb:crm:lead_claim:{cid}"

    async def broken_save(*_args: object) -> None:
        raise ConnectionError("the write failed")

    with monkeypatch.context() as patch:
        patch.setattr(directory, "_save", broken_save)
        with pytest.raises(ConnectionError):
            await directory.open_lead(cid)
    assert await redis.exists(claim) == 0
    # A claimer that died between its SET NX and its write: a fresh claim is trusted (its lead is
    # coming), a stale one is dropped and claimed anew.
    await redis.set(claim, "999999", px=60_000)
    assert await directory.open_lead(cid) == "999999"
    await redis.set(claim, "999999", px=50_000)
    lid = await directory.open_lead(cid)
    assert lid != "999999" and (await leads_of(redis, [cid]))[cid] == [lid]
    assert (await directory.get("lead", lid) or {}).get("contacts") == [cid]
