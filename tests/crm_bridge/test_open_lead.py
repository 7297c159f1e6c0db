"""``CrmDirectory.open_lead``: a contact's newest open lead, else one new lead however many
callers ask at once (the shop's orders, ``POST /api/events``), against a real Redis."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from crm_bridge import RedisCrm
from crm_bridge.directory import CrmDirectory
from crm_bridge.indexes import leads_of


async def test_callers_at_once_share_one_new_lead_and_a_closed_lead_gets_a_new_one(redis: Redis) -> None:
    directory = CrmDirectory(RedisCrm(redis))
    cid = str((await directory.create_contact({"name": "Five at once"}))["id"])
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
