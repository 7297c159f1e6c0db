"""The contact-stage index (set + count hash of the more) stays exactly what the lead records say
through stage moves, pipeline moves and contact changes, also when the leads of one contact are
changed at once by concurrent writers (each change is one script)."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

from redis.asyncio import Redis

from crm_bridge import RedisCrm, idsets
from crm_bridge.contract import PIPELINES
from crm_bridge.directory import CrmDirectory
from crm_bridge.indexes import contact_stage_key, contact_stage_more_key, stage_value


async def _check(redis: Redis, directory: CrmDirectory, lead_ids: list[str]) -> None:
    leads = await directory.get_many("lead", lead_ids)
    want: dict[str, Counter[str]] = {}
    for lead in leads:
        for c in set(lead.get("contacts") or []):
            want.setdefault(stage_value(lead["pipeline"], lead["stage"]), Counter())[str(c)] += 1
    for pipeline, stages in PIPELINES.items():
        for stage in stages:
            s = stage_value(pipeline, stage)
            counts = want.get(s, Counter())
            members = await idsets.members(redis, contact_stage_key(s))
            more = {k.decode(): int(v) for k, v in (await redis.hgetall(contact_stage_more_key(s))).items()}
            assert members == set(counts), s
            assert more == {c: n - 1 for c, n in counts.items() if n > 1}, s


async def test_stage_counts_follow_the_records_through_random_and_concurrent_changes(redis: Redis) -> None:
    rng = random.Random(14)
    directory = CrmDirectory(RedisCrm(redis, pipelines=PIPELINES))
    contacts = [(await directory.create_contact({"name": f"C{i}"}))["id"] for i in range(4)]
    leads = [(await directory.create_lead({"name": f"L{i}"}, contact_id=contacts[i % 4]))["id"] for i in range(12)]
    stages = [(p, s) for p, ss in PIPELINES.items() for s in ss]
    for _ in range(40):
        batch = rng.sample(leads, 4)  # distinct leads, possibly of one contact: changed at once
        patches = []
        for _lid in batch:
            r = rng.random()
            if r < 0.6:
                p, s = rng.choice(stages)
                patches.append({"pipeline": p, "stage": s})
            else:
                patches.append({"contacts": rng.sample(contacts, rng.randint(1, 2))})
        await asyncio.gather(*(directory.update_lead(lid, patch) for lid, patch in zip(batch, patches, strict=True)))
        await _check(redis, directory, leads)
