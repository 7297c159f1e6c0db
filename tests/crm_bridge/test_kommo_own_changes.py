"""Our own changes in Kommo as lead events, end to end (the server, the fake Kommo API, the test
Redis): a rule's ``set_field`` on a Kommo lead emits ``lead.field_changed`` for a real change only,
and a move stays one event when Redis fails while emitting it (Kommo's webhook is the event then)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from bot.runtime.leads import LeadService, lead_cid
from bot.runtime.worker import Worker
from crm_bridge.changes import Change
from crm_bridge.kommo import KommoCrm
from tests.crm_bridge.fakes.kommo import FakeKommo
from tests.crm_bridge.test_kommo_automations import H, Kommo, _config, _item, fake, kommo, serving
from tests.waiting import wait_for

__all__ = ["fake", "kommo"]  # the fixtures of test_kommo_automations


async def _field_events(kommo: Kommo, lead: int) -> list[tuple[str, Any, Any, int]]:
    return [(e["data"]["field"], e["data"]["from"], e["data"]["to"], e["depth"])
            for e in await kommo.history(lead) if e.get("type") == "lead.field_changed"]


async def test_a_rules_set_field_on_a_kommo_lead_runs_the_field_changed_rules_for_real_changes_only(
        kommo: Kommo) -> None:
    fake = kommo.fake
    await kommo.put([
        {"id": "fill", "stage": "New", "on": ["created"], "do": {"actions": [
            {"do": "set_field", "field": "Source", "value": "Ads"},
            {"do": "set_field", "field": "price", "value": "1200"},
            {"do": "set_field", "field": "Budget", "value": "same"}]}},
        {"id": "ads", "stage": "New", "on": ["field_changed"], "field": "lead.fields.source", "do": {"actions": [
            {"do": "tags", "add": ["ads"]},
            {"do": "set_field", "field": "Source", "value": "ads"}]}},  # the same choice: no change, no loop
        {"id": "priced", "stage": "New", "on": ["field_changed"], "field": "lead.price", "do": {"actions": [
            {"do": "add_note", "text": "Priced at {{ lead.price }}"}]}}])
    lead = fake.new_lead("Kitchen", contact="Ada")
    fake.leads[lead]["custom_fields_values"] = [{"field_id": 501, "field_name": "Budget", "field_code": None,
                                                 "field_type": "text", "values": [{"value": "same"}]}]
    await kommo.hook(kommo.added(lead))
    assert fake.field_value("leads", lead, "Source") == "Ads" and fake.leads[lead]["price"] == 1200
    assert fake.tag_names("leads", lead) == ["ads"] and fake.lead_notes(lead) == ["Priced at 1200"]
    assert await _field_events(kommo, lead) == [("source", None, "Ads", 1), ("lead.price", 0, 1200, 1)]
    outcomes = await kommo.outcomes(lead)
    assert outcomes.count(("ads", "acted")) == 1 and outcomes.count(("priced", "acted")) == 1
    assert not [o for o in outcomes if o[1] == "loop"]


class _FailingOnce:
    """The lead queues as the echo's sink, but the next emit fails as a lost Redis connection
    would, before anything is stored (Kommo's write has happened by then)."""

    def __init__(self, leads: LeadService) -> None:
        self.leads = leads
        self.failures = 1

    def commands(self, changes: Sequence[Change]) -> list[tuple[Any, ...]]:
        if self.failures:
            self.failures -= 1
            raise RedisConnectionError("the connection was lost while emitting")
        return self.leads.commands(changes)

    def written(self, changes: Sequence[Change]) -> None:
        self.leads.written(changes)


@pytest.fixture
async def quick(redis_url: str, fake: FakeKommo, tmp_path: Path) -> AsyncIterator[Kommo]:
    """The server of ``kommo`` with a short lock TTL: a failed batch is recovered within a second."""
    async with serving(_config(redis_url, fake, tmp_path).model_copy(update={"lock_ttl": 0.5}), fake) as running:
        yield running


async def test_a_move_whose_event_redis_lost_comes_from_kommos_webhook_instead(quick: Kommo) -> None:
    kommo = quick
    fake = kommo.fake
    crm = kommo.services.crm
    assert isinstance(crm, KommoCrm) and crm.echo is not None
    crm.echo.sink = _FailingOnce(kommo.services.leads)
    await kommo.put(
        [{"id": "thank", "stage": "Won", "on": ["moved_in"], "do": {"actions": [{"do": "tags", "add": ["paid"]}]}}],
        triggers=[{"id": "paid", "stage": "Won", "on": "order.paid"}])
    lead = fake.new_lead("Order", contact="Dee")
    new = fake.status_id("Sales", "New")
    r = await kommo.http.post("/api/events", json={"id": "evt-1", "type": "order.paid", "lead": {"id": str(lead)}},
                              headers=H)
    assert r.status == 202, await r.text()  # stored; handled in the background, where the emit fails
    await kommo.idle()
    assert fake.stage_of(lead) == ("Sales", "Won") and fake.tag_names("leads", lead) == []  # moved, event lost
    # Kommo's webhook about the move: not dropped as an echo, it is the move's event
    webhook = _item("status", fake.leads[lead], old_status_id=new)
    assert await kommo.hook(webhook) == {"ok": True, "events": 1, "delivered": 1}
    # the failed batch is recovered (its move is made: nothing to redo), then the webhook's event acts
    worker = Worker(kommo.services)
    await wait_for(worker.recover, 5.0, what="recovery of the failed batch")
    await kommo.idle()
    assert fake.tag_names("leads", lead) == ["paid"]
    assert [e["source"] for e in await kommo.history(lead) if e.get("type") == "lead.stage_changed"] == ["kommo"]
    assert (await kommo.hook(webhook))["delivered"] == 0  # its redelivery is a duplicate as usual
    assert (await kommo.outcomes(lead)).count(("thank", "acted")) == 1


async def test_a_lead_event_waits_while_kommo_is_away_and_is_never_parked(quick: Kommo) -> None:
    """Kommo answering 503 is an outage, not the lead's fault: the event stays queued with no
    failure counted (five would park the lead), and acts once Kommo answers again."""
    kommo = quick
    fake = kommo.fake
    await kommo.put([{"id": "hello", "stage": "New", "on": ["created"],
                      "do": {"actions": [{"do": "tags", "add": ["hello"]}]}}])
    lead = fake.new_lead("Kitchen", contact="Ada")
    fake.down(503)
    await kommo.hook(kommo.added(lead))  # stored and answered; handling it meets Kommo away
    meta = await kommo.services.store.meta(lead_cid(str(lead)))
    assert not meta.get("failures") and not meta.get("parked"), meta
    fake.up()
    worker = Worker(kommo.services)
    await wait_for(lambda: fake.tag_names("leads", lead) == ["hello"], 10.0, what="the rule once Kommo is back",
                   between=worker.recover)
    assert (await kommo.outcomes(lead)).count(("hello", "acted")) == 1
