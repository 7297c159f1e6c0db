"""Redis round trips of a lead event in the steady state (the document compiled, the lead seen
before): what a batch reads first travels with the lead queue's push or acquire (the rule
engine's generation token, the CRM snapshot, the lead's conversation), and an effect costs its
done keys with the lead's record, its snapshot, the CRM command and its done key. Real services
on a real Redis; the ``trips`` fixture (``conftest.py``) counts every send."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from bot.config import load_config
from bot.runtime.service import lead_conversation_key
from bot.server.services import Services, open_services
from crm_bridge.versions import VERSIONS
from tests.runtime.roundtrips import RoundTrips

DOC = {"format": "salesbot.automations/1", "id": "sales", "pipeline": "Sales",
       "rules": [{"id": "priced", "stage": "Incoming", "on": "field_changed", "field": "lead.fields.budget",
                  "do": {"actions": [{"do": "tags", "add": ["priced"]}]}}]}


@pytest.fixture
async def svc(redis: Redis, redis_url: str, tmp_path: Path) -> AsyncIterator[Services]:
    (tmp_path / "automations").mkdir()
    (tmp_path / "automations" / "sales.json").write_text(json.dumps(DOC))
    config = load_config(env={}, overrides={"redis_url": redis_url, "flows_dir": str(tmp_path),
                                            "automations_dir": str(tmp_path / "automations"), "admin_token": "t"})
    async with open_services(config, start_hub=False) as services:
        yield services


def _sends(trips: RoundTrips) -> list[str]:
    """Each round trip by its first command (the memory guard's background INFO left out)."""
    fast = [str(call[0][0]) for call in trips.fast]
    slow = [bytes(c if isinstance(c, bytes | bytearray) else b"".join(c))[:40].decode("latin-1")
            for c in trips.redis_py]
    return fast + [s for s in slow if "INFO" not in s]


async def _lead(svc: Services) -> str:
    assert svc.directory is not None
    lead = str((await svc.directory.create_lead({"name": "Deal"}))["id"])
    await svc.leads.idle()
    return lead


async def _event(svc: Services, lead: str, event_id: str, field: str) -> None:
    await svc.leads.deliver(svc.leads.event("lead.field_changed", lead, id_=event_id, source="api",
                                            data={"field": field, "from": None, "to": 1}))
    await svc.leads.idle()  # the CRM's own events of what the effect changed


async def test_an_event_no_rule_acts_on_costs_the_push_and_the_save(svc: Services, trips: RoundTrips) -> None:
    lead = await _lead(svc)
    await _event(svc, lead, "warm", "lead.fields.colour")
    for n in range(3):
        trips.clear()
        await _event(svc, lead, f"e{n}", "lead.fields.colour")
        assert len(trips.fast) == 2 and trips.redis_py == [], _sends(trips)
        push, save = trips.fast
        assert ("GET", "sb:automations:generation") in push  # the versions' token
        assert push[-2][:2] == ("HMGET", VERSIONS)  # the snapshot kept: its records' versions (no GET)
        assert trips.crm_reads() == []  # no record read (a bucket's HGET since crm_bridge/records.py)
        assert ("HGET", lead_conversation_key(lead), lead) in push  # the conversation the event goes to
        assert save[0][0] == "EVALSHA"


async def test_an_event_of_a_lead_with_a_contact_reads_its_processes_with_the_push(
        svc: Services, trips: RoundTrips) -> None:
    """The contact's processes (which hear its lead's events: docs/processes.md) are read along."""
    assert svc.directory is not None
    contact = str((await svc.directory.create_contact({"name": "Ann"}))["id"])
    lead = str((await svc.directory.create_lead({"name": "Deal"}, contact_id=contact))["id"])
    await svc.leads.idle()
    await _event(svc, lead, "warm", "lead.fields.colour")
    for n in range(3):
        trips.clear()
        await _event(svc, lead, f"e{n}", "lead.fields.colour")
        assert len(trips.fast) == 2 and trips.redis_py == [], _sends(trips)
        push, _ = trips.fast
        assert push[-1] == ("HKEYS", f"sb:processes:{{contact:{contact}}}"), push


async def test_an_event_a_rule_acts_on_costs_ten_round_trips(svc: Services, trips: RoundTrips) -> None:
    await _event(svc, await _lead(svc), "warm", "lead.fields.budget")  # every script loaded
    lead = await _lead(svc)
    await _event(svc, lead, "warm", "lead.fields.colour")
    trips.clear()
    await _event(svc, lead, "priced", "lead.fields.budget")
    # push, [done keys + the lead's record], snapshot, [the CRM outbox's queue, the command's records
    # and ids, its write], done key, save; then the CRM's lead.tag_added, queued meanwhile: load, save
    assert len(trips.fast) + len(trips.redis_py) == 10, _sends(trips)
    assert svc.directory is not None
    assert "priced" in (await svc.directory.get("lead", lead) or {}).get("tags", [])


async def test_a_new_version_is_seen_by_the_next_event(svc: Services, redis: Redis) -> None:
    """The cached versions follow a change at once: its token changes in the same MULTI/EXEC."""
    lead = await _lead(svc)
    await _event(svc, lead, "warm", "lead.fields.colour")
    changed = {**DOC, "rules": [{**DOC["rules"][0], "field": "lead.fields.colour"}]}  # type: ignore[dict-item]
    from bot.server.automation_docs import AutomationDocuments
    docs = AutomationDocuments.of(redis, svc.crm, svc.bots)  # as another process would
    await docs.put(changed)
    await _event(svc, lead, "colour", "lead.fields.colour")
    assert svc.directory is not None
    assert "priced" in (await svc.directory.get("lead", lead) or {}).get("tags", [])
