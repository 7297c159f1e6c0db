"""``stage_since``: when a lead of the embedded CRM entered its stage (the pipeline view's "in
this stage since"), set by every write path — a new lead, a conversation's new lead, a flow's
``change_stage``, ``PATCH /api/crm/leads/{id}`` — and kept by changes that do not move it."""

from __future__ import annotations

from redis.asyncio import Redis

from crm_bridge import ChannelIdentity, RedisCrm
from crm_bridge.directory import CrmDirectory


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_every_write_path_stamps_the_stage_and_only_a_move_changes_it(redis: Redis) -> None:
    clock = Clock()
    crm = RedisCrm(redis, clock=clock)
    directory = CrmDirectory(crm)
    ref = await crm.identify(ChannelIdentity("livechat", "demo", "s-1", name="Deniz Ak"))
    lead = await directory.get("lead", ref.lead_id)
    assert lead is not None and lead["stage_since"] == 1000.0
    clock.now = 1100.0
    await crm.execute(ref, {"do": "tags", "entity": "lead", "add": ["vip"]})
    assert (await directory.get("lead", ref.lead_id) or {})["stage_since"] == 1000.0
    clock.now = 1200.0
    await crm.execute(ref, {"do": "change_stage", "stage": "Qualified"})
    assert (await directory.get("lead", ref.lead_id) or {})["stage_since"] == 1200.0

    clock.now = 2000.0
    created = await directory.create_lead({"name": "Sofa"})
    assert created["stage_since"] == 2000.0
    clock.now = 2100.0
    assert (await directory.update_lead(created["id"], {"price": 5}) or {})["stage_since"] == 2000.0
    clock.now = 2200.0
    assert (await directory.update_lead(created["id"], {"stage": "Won"}) or {})["stage_since"] == 2200.0
