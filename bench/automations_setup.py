"""The automations bench's fixtures: the 1,000-rule document, the event stream, and leads written
straight into the embedded CRM's store in bulk (the same keys and indexes ``CrmDirectory`` writes,
without the ``lead.created`` events a one-by-one creation would queue)."""

from __future__ import annotations

import random
import time
from typing import Any

STAGES = tuple(f"Stage {i}" for i in range(10))
PIPELINE = "Sales"
DOC_ID = "bench"
FIELDS = 8  # lead.fields.f0 … f7 are watched by field_changed rules
TAGS = 16  # t0 … t15 are watched by tag_added rules
#: The stage of the apply_to_existing part's leads, and its rule.
APPLY_STAGE = STAGES[3]
APPLY_RULE = "apply_all"


def document(*, apply_to_existing: bool = False) -> dict[str, Any]:
    """1,000 rules over 10 stages (100 a stage) of mixed ``on`` kinds, each with an ``if``; most
    ``if`` never hold (``lead.price`` above what any lead has), a tenth hold for the third of the
    leads tagged ``vip``. Acting rules do a cheap action: a tag, or a field set from the event.
    20 triggers and 2 scoring rules on ``custom.*`` events whose ``match`` rarely holds.
    ``apply_to_existing``: one more rule (on ``APPLY_STAGE``) that tags every lead it is applied to."""
    rules: list[dict[str, Any]] = []
    for i in range(1000):
        stage, j = STAGES[i % 10], i // 10
        rule: dict[str, Any] = {"id": f"r{i}", "stage": stage}
        kind = j % 10
        if kind <= 3:
            rule.update(on=["field_changed"], field=f"lead.fields.f{j % FIELDS}")
        elif kind <= 6:
            rule.update(on=["tag_added"], tag=f"t{j % TAGS}")
        else:
            rule["on"] = [("created", "moved_in", "responsible_changed")[kind - 7]]
            if j % 20 == 9:
                rule["on"] = ["chat.message"]
        if kind in (0, 5):  # holds for the vip leads
            rule["if"] = {"all": [{"field": "lead.tags", "op": "has", "value": "vip"}]}
        else:  # never holds
            rule["if"] = {"all": [{"field": "lead.price", "op": "gt", "value": 1_000_000},
                                  {"field": "lead.tags", "op": "has", "value": "vip"}]}
        if j % 2:
            rule["do"] = {"actions": [{"do": "tags", "entity": "lead", "add": ["auto"]}]}
        else:
            rule["do"] = {"actions": [{"do": "set_field", "entity": "lead", "field": "touched",
                                       "value": "{{ event.id }}"}]}
        rules.append(rule)
    if apply_to_existing:
        rules.append({"id": APPLY_RULE, "stage": APPLY_STAGE, "on": ["moved_in"], "apply_to_existing": True,
                      "do": {"actions": [{"do": "tags", "entity": "lead", "add": ["applied"]}]}})
    triggers = [{"id": f"t{i}", "stage": STAGES[1 + i % 9], "on": f"custom.bench_{('viewed', 'clicked')[i % 2]}",
                 "match": {"url": f"https://shop.example/never/{i}"}} for i in range(20)]
    scoring = [{"on": "custom.bench_paid", "add": 5},
               {"on": "custom.bench_clicked", "match": {"url": "https://shop.example/offer"}, "add": 1}]
    return {"format": "salesbot.automations/1", "id": DOC_ID, "pipeline": PIPELINE,
            "settings": {"timezone": "UTC"}, "rules": rules, "triggers": triggers, "scoring": scoring}


def event_bodies(n: int, leads: list[str], rng: random.Random, tag: str) -> list[dict[str, Any]]:
    """``POST /api/events`` bodies: 40 % ``lead.field_changed``, 30 % ``lead.tag_added``, 30 %
    ``custom.bench_*``; each with a unique id, for a random lead."""
    out: list[dict[str, Any]] = []
    for i in range(n):
        r = rng.random()
        if r < 0.4:
            t, data = "lead.field_changed", {"field": f"f{rng.randrange(FIELDS)}", "from": None,
                                              "to": rng.randrange(10_000)}
        elif r < 0.7:
            t, data = "lead.tag_added", {"tag": f"t{rng.randrange(TAGS)}"}
        else:
            t = f"custom.bench_{rng.choice(('viewed', 'clicked', 'paid'))}"
            data = {"url": rng.choice(("https://shop.example/offer", "https://shop.example/sofa"))}
        out.append({"id": f"{tag}-{i}", "type": t, "lead": {"id": rng.choice(leads)}, "data": data})
    return out


async def seed_leads(redis: Any, n: int, *, stage: str | None = None, contacts: bool = False,
                     chunk: int = 2000) -> list[str]:
    """``n`` leads written in pipelines of ``chunk``: each record, its index entries (stage set,
    tags, search terms, recent) and the lead listing, as ``CrmDirectory._save`` writes them.
    ``stage``: all in that stage, else spread over ``STAGES``; a third tagged ``vip``;
    ``contacts``: each with a contact of its own (written the same way)."""
    from crm_bridge import records
    from crm_bridge.codec import pack_record
    from crm_bridge.indexes import CrmIndexes, stamp_stage
    from crm_bridge.memory import MemoryCrm
    from crm_bridge.redis_crm import RedisCrm

    crm = RedisCrm(redis, pipelines={PIPELINE: list(STAGES)})
    lead_ids = await crm._ids(n)
    contact_ids = await crm._ids(n) if contacts else [None] * n
    now = time.time()
    for start in range(0, n, chunk):
        pipe = redis.pipeline(transaction=False)
        for k in range(start, min(n, start + chunk)):
            lid, cid = lead_ids[k], contact_ids[k]
            ws = MemoryCrm(pipelines={PIPELINE: list(STAGES)}, ids=iter([cid, lid] if cid else [lid]).__next__)
            if cid is not None:
                ws.create_contact(name=f"Ann {cid}")
                contact = ws.contacts[cid]
                pipe.execute_command(*records.write("contact", cid, pack_record(contact, cid)))
                CrmIndexes.update(pipe, "contact", cid, None, contact, now)
            ws.create_lead(contact_id=cid, pipeline=PIPELINE, stage=stage or STAGES[k % len(STAGES)],
                           name=f"Bench deal {lid}", price=50 + k % 5000, tags=["vip"] if k % 3 == 0 else [])
            record = ws.leads[lid]
            stamp_stage(None, record, now)
            pipe.execute_command(*records.write("lead", lid, pack_record(record, lid)))
            CrmIndexes.update(pipe, "lead", lid, None, record, now)
        await pipe.execute()
    return lead_ids
