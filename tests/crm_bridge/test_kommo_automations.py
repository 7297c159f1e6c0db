"""Automations with ``[crm] backend = "kommo"``, end to end, as with the embedded CRM.

The real server runs against the fake Kommo API on loopback (7 requests/second, Bearer token)
and the test Redis. Kommo's account webhooks (form-encoded, as Kommo posts them) report a lead
added, moved or handed over; the stage rules of the document act, and what they do arrives at
the fake Kommo API. A trigger's move is made in Kommo and emitted as a lead event at once;
Kommo's webhook about that move is its echo and is dropped, so the rule on the move runs once.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis

from bot.config import load_config
from bot.server.app import create_app
from bot.server.keys import SERVICES
from tests.crm_bridge.fakes.kommo import TOKEN, FakeKommo
from tests.waiting import wait_for

SECRET = "kommo-hook-secret"
ADMIN = "admin"
H = {"Authorization": f"Bearer {ADMIN}"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture
async def fake() -> AsyncIterator[FakeKommo]:
    # The fake keeps no rate limit here: our client paces itself at Kommo's 7 requests per 1.15 s
    # all the same, but a loaded machine can deliver 8 of them within a second of arrivals (seen
    # at load 20: a 429, the lead's events then wait the 30 s lock TTL for recovery). Keeping to
    # the limit is what test_kommo.py, test_contract_kommo.py and test_kommo_shared_limit.py prove.
    async with FakeKommo(rate_limit=None) as fake:
        yield fake


def _config(redis_url: str, fake: FakeKommo, automations: Path, timeout: float = 5.0) -> Any:
    return load_config(env={}, overrides={
        "redis_url": redis_url, "flows_dir": "/nonexistent", "automations_dir": str(automations),
        "admin_token": ADMIN, "timer_poll_interval": 0.05,
        "crm": {"backend": "kommo", "base_url": fake.url, "token": TOKEN, "account": "acme",
                "webhook_secret": SECRET, "timeout": timeout, "retry_base": 0.2, "retry_max": 1.0}})


class Kommo:
    """The server under test, its client, and the fake Kommo account behind it."""

    def __init__(self, server: TestServer, http: ClientSession, fake: FakeKommo) -> None:
        self.server, self.http, self.fake = server, http, fake
        self.services = server.app[SERVICES]

    async def put(self, rules: list[dict[str, Any]], **extra: Any) -> int:
        doc = {"format": "salesbot.automations/1", "id": "sales", "pipeline": "Sales", "rules": rules, **extra}
        r = await self.http.put("/api/automations/sales", json=doc, headers=H)
        assert r.status in (200, 201), await r.text()
        version: int = (await r.json())["version"]
        return version

    async def hook(self, body: str) -> dict[str, Any]:
        """Kommo posts a webhook; the lead events it queued are handled before this returns."""
        r = await self.http.post(f"/webhooks/kommo/acme?secret={SECRET}", data=body, headers=FORM)
        assert r.status == 200, await r.text()
        answer: dict[str, Any] = await r.json()
        await self.idle()
        return answer

    async def idle(self) -> None:
        await self.services.leads.idle()

    async def outcomes(self, lead: int) -> list[tuple[str, str]]:
        r = await self.http.get(f"/api/leads/{lead}/events", headers=H)
        assert r.status == 200
        return [(e["rule"], e["outcome"]) for e in (await r.json())["events"] if e["role"] == "automation"]

    async def history(self, lead: int) -> list[dict[str, Any]]:
        r = await self.http.get(f"/api/leads/{lead}/events", headers=H)
        assert r.status == 200
        events: list[dict[str, Any]] = (await r.json())["events"]
        return events

    def added(self, lead: int) -> str:
        """``leads[add]`` of a lead as it is in the fake Kommo now."""
        return _item("add", self.fake.leads[lead])

    def moved(self, lead: int, stage: str, pipeline: str = "Sales") -> str:
        """A person moves the lead in Kommo: the record changes, and Kommo posts ``leads[status]``."""
        record = self.fake.leads[lead]
        old = record["status_id"]
        record["status_id"] = self.fake.status_id(pipeline, stage)
        record["updated_at"] = record["updated_at"] + 1
        return _item("status", record, old_status_id=old)


def _item(action: str, lead: dict[str, Any], **extra: Any) -> str:
    fields = {"id": lead["id"], "name": lead["name"], "status_id": lead["status_id"],
              "pipeline_id": lead["pipeline_id"], "responsible_user_id": lead["responsible_user_id"],
              "price": lead.get("price") or 0, "last_modified": lead["updated_at"], "account_id": 1, **extra}
    return "&".join(f"leads[{action}][0][{k}]={v}" for k, v in fields.items()) + "&account[subdomain]=acme"


@pytest.fixture
async def kommo(redis: Redis, redis_url: str, fake: FakeKommo, tmp_path: Path) -> AsyncIterator[Kommo]:
    async with serving(_config(redis_url, fake, tmp_path), fake) as running:
        yield running


def _writes(fake: FakeKommo, method: str, path: str) -> list[Any]:
    return [body for m, p, body in fake.writes if m == method and p == path]


# ---------------------------------------------------------------------- one test per webhook kind
async def test_a_lead_added_in_kommo_runs_the_created_rule_of_its_stage(kommo: Kommo) -> None:
    fake = kommo.fake
    await kommo.put([{"id": "welcome", "stage": "New", "on": ["created"], "do": {"actions": [
        {"do": "tags", "add": ["welcomed"]},
        {"do": "add_note", "text": "Hello {{ lead.name }}"},
        {"do": "add_task", "text": "Call about {{ lead.name }}", "due": "in_1_day"},
        {"do": "set_field", "field": "Budget", "value": "5000"}]}}])
    lead = fake.new_lead("Kitchen")  # made by a person in Kommo, without a contact (as Kommo leads often are)
    added = kommo.added(lead)
    assert await kommo.hook(added) == {"ok": True, "events": 1, "delivered": 1}
    assert fake.tag_names("leads", lead) == ["welcomed"]
    assert fake.lead_notes(lead) == ["Hello Kitchen"]
    [task] = fake.lead_tasks(lead)
    assert task["text"] == "Call about Kitchen" and abs(task["complete_till"] - (time.time() + 86400)) < 120
    assert fake.field_value("leads", lead, "Budget") == "5000"
    assert (await kommo.outcomes(lead)).count(("welcome", "acted")) == 1
    events = [e for e in await kommo.history(lead) if e["role"] == "event"]
    assert [(e["type"], e["source"]) for e in events] == [("lead.created", "kommo"), ("lead.tag_added", "crm"),
                                                          ("lead.field_changed", "crm")]
    assert (events[0]["data"]["pipeline"], events[0]["data"]["stage"]) == ("Sales", "New")
    # Kommo redelivers the webhook (it did not hear our answer): nothing acts twice
    assert (await kommo.hook(added))["delivered"] == 0
    assert len(_writes(fake, "PATCH", "/api/v4/leads")) == 1 and len(fake.lead_notes(lead)) == 1


async def test_a_tag_added_by_a_rule_in_kommo_runs_the_tag_added_rule_once(kommo: Kommo) -> None:
    fake = kommo.fake
    await kommo.put([
        {"id": "heat", "stage": "New", "on": ["created"], "do": {"actions": [{"do": "tags", "add": ["hot", "web"]}]}},
        {"id": "hot", "stage": "New", "on": ["tag_added"], "tag": "hot",
         "do": {"actions": [{"do": "add_note", "text": "Hot lead"}, {"do": "tags", "add": ["hot"]}]}}])
    lead = fake.new_lead("Warm", contact="Ivy")
    await kommo.hook(kommo.added(lead))
    assert sorted(fake.tag_names("leads", lead)) == ["hot", "web"]
    assert fake.lead_notes(lead) == ["Hot lead"]  # once: the rule's own "hot" again is no new tag
    tagged = [(e["data"]["tag"], e["depth"]) for e in await kommo.history(lead) if e.get("type") == "lead.tag_added"]
    assert tagged == [("hot", 1), ("web", 1)]


async def test_a_rule_acts_on_the_leads_main_contact_or_fails_clearly_without_one(kommo: Kommo) -> None:
    fake = kommo.fake
    await kommo.put([{"id": "city", "stage": "New", "on": ["created"], "do": {"actions": [
        {"do": "set_field", "entity": "contact", "field": "City", "value": "Paris"},
        {"do": "tags", "add": ["seen"]}]}}])
    with_contact = fake.new_lead("A", contact="Ada Lovelace")
    without = fake.new_lead("B")
    await kommo.hook(kommo.added(with_contact))
    await kommo.hook(kommo.added(without))
    contact = fake.leads[with_contact]["_contacts"][0]
    assert fake.field_value("contacts", contact, "City") == "Paris"  # the lead's main contact
    assert fake.tag_names("leads", with_contact) == ["seen"] and fake.tag_names("leads", without) == ["seen"]
    assert ("city", "acted") in await kommo.outcomes(with_contact)
    failed = [e for e in await kommo.history(without) if e.get("outcome") == "failed"]
    assert [(e["rule"], e["detail"]) for e in failed] == [("city", f"set_field: kommo: lead {without} has no contact")]
    assert not any(r.path == "/api/v4/contacts/" for r in fake.requests)


async def test_a_status_change_in_kommo_runs_moved_in_and_cancels_the_old_stages_delay(kommo: Kommo) -> None:
    fake = kommo.fake
    await kommo.put([
        {"id": "nudge", "stage": "New", "on": ["created"], "delay": "1h",
         "do": {"actions": [{"do": "tags", "add": ["nudged"]}]}},
        {"id": "qualified", "stage": "Qualified", "on": ["moved_in"],
         "do": {"actions": [{"do": "add_note", "text": "Qualified: {{ lead.stage }}"}]}}])
    lead = fake.new_lead("Bath", contact="Bob")
    await kommo.hook(kommo.added(lead))
    assert ("nudge", "delayed") in await kommo.outcomes(lead)
    assert await kommo.hook(kommo.moved(lead, "Qualified")) == {"ok": True, "events": 1, "delivered": 1}
    outcomes = await kommo.outcomes(lead)
    assert ("qualified", "acted") in outcomes and ("nudge", "cancelled") in outcomes
    assert fake.lead_notes(lead) == ["Qualified: Qualified"]
    moved = [e for e in await kommo.history(lead) if e.get("type") == "lead.stage_changed"]
    assert [(e["data"]["from"], e["data"]["to"]) for e in moved] == [
        ({"pipeline": "Sales", "stage": "New"}, {"pipeline": "Sales", "stage": "Qualified"})]
    assert fake.tag_names("leads", lead) == []  # the delay never acted


async def test_a_responsible_change_in_kommo_runs_responsible_changed(kommo: Kommo) -> None:
    fake = kommo.fake
    await kommo.put([{"id": "handover", "stage": "New", "on": ["responsible_changed"], "do": {"actions": [
        {"do": "add_note", "text": "Now with {{ lead.responsible }}"}]}}])
    lead = fake.new_lead("Roof", contact="Cy")
    await kommo.hook(kommo.added(lead))
    fake.leads[lead]["responsible_user_id"] = 8  # a person hands the lead to Bob in Kommo
    body = _item("responsible", fake.leads[lead], old_responsible_user_id=7)
    assert (await kommo.hook(body))["delivered"] == 1
    assert fake.lead_notes(lead) == ["Now with 8"]
    [event] = [e for e in await kommo.history(lead) if e.get("type") == "lead.responsible_changed"]
    assert (event["data"]["from"], event["data"]["to"]) == ("7", "8")
    assert (await kommo.outcomes(lead)).count(("handover", "acted")) == 1


async def test_a_trigger_moves_the_lead_in_kommo_and_the_rule_on_the_move_runs_once(kommo: Kommo) -> None:
    fake = kommo.fake
    await kommo.put(
        [{"id": "thank", "stage": "Won", "on": ["moved_in"], "do": {"actions": [{"do": "tags", "add": ["paid"]}]}},
         {"id": "back", "stage": "New", "on": ["moved_in"], "do": {"actions": [{"do": "tags", "add": ["again"]}]}}],
        triggers=[{"id": "paid", "stage": "Won", "on": "order.paid"}])
    lead = fake.new_lead("Order", contact="Dee")
    new = fake.status_id("Sales", "New")
    r = await kommo.http.post("/api/events", json={"id": "evt-1", "type": "order.paid", "lead": {"id": str(lead)}},
                              headers=H)
    assert r.status == 202, await r.text()
    await kommo.idle()
    assert fake.stage_of(lead) == ("Sales", "Won")
    assert _writes(fake, "PATCH", f"/api/v4/leads/{lead}") == [{"pipeline_id": 1001, "status_id": 142}]
    assert fake.tag_names("leads", lead) == ["paid"]  # the move was emitted at once, with depth 1
    moved = [e for e in await kommo.history(lead) if e.get("type") == "lead.stage_changed"]
    assert [(e["source"], e["depth"], e["data"]["to"]["stage"]) for e in moved] == [("crm", 1, "Won")]

    # Kommo's own webhook about that move comes back (and is redelivered): an echo, dropped
    echo = _item("status", fake.leads[lead], old_status_id=new)
    assert await kommo.hook(echo) == {"ok": True, "events": 1, "delivered": 0}
    assert (await kommo.hook(echo))["delivered"] == 0
    assert (await kommo.outcomes(lead)).count(("thank", "acted")) == 1
    assert len(_writes(fake, "PATCH", "/api/v4/leads")) == 1  # one tag write

    # a person moves it back in Kommo: not an echo, the rule of New runs
    assert (await kommo.hook(kommo.moved(lead, "New")))["delivered"] == 1
    assert sorted(fake.tag_names("leads", lead)) == ["again", "paid"]


# ---------------------------------------------------------------------- stage names from status ids
async def test_a_cold_catalogue_and_a_slow_kommo_still_name_the_stage_and_the_webhook_is_answered_at_once(
        redis: Redis, redis_url: str, fake: FakeKommo, tmp_path: Path) -> None:
    rules = [{"id": "qualified", "stage": "Qualified", "on": ["moved_in"],
              "do": {"actions": [{"do": "tags", "add": ["hot"]}]}}]
    lead = fake.new_lead("Cold", contact="Eve")
    async with serving(_config(redis_url, fake, tmp_path), fake) as first:
        await first.put(rules)  # stored in Redis; this process had the catalogue
    # Kommo lists no pipeline until the webhook is answered, and our client would wait for it
    # longer than the test may run (pytest-timeout): a route that waited for Kommo never answers.
    fake.hold("/api/v4/leads/pipelines")
    slow_kommo = _config(redis_url, fake, tmp_path, timeout=600)
    async with serving(slow_kommo, fake) as kommo:  # a new process: its catalogue is cold
        r = await kommo.http.post(f"/webhooks/kommo/acme?secret={SECRET}", data=kommo.moved(lead, "Qualified"),
                                  headers=FORM)
        assert r.status == 200  # Kommo waits 2 s at most
        fake.release()
        await kommo.idle()
        assert fake.tag_names("leads", lead) == ["hot"]
        [moved] = [e for e in await kommo.history(lead) if e.get("type") == "lead.stage_changed"]
        assert moved["data"]["to"] == {"pipeline": "Sales", "stage": "Qualified"}


async def test_a_trigger_never_moves_a_kommo_lead_backwards_even_with_a_cold_catalogue(
        redis: Redis, redis_url: str, fake: FakeKommo, tmp_path: Path) -> None:
    lead = fake.new_lead("Ahead", stage=("Sales", "Qualified"), contact="Hal")
    async with serving(_config(redis_url, fake, tmp_path), fake) as first:
        await first.put([], triggers=[{"id": "reopen", "stage": "Contacted", "on": "custom.reopen"}])
    # a new process: the stage order is not loaded yet
    async with serving(_config(redis_url, fake, tmp_path), fake) as kommo:
        r = await kommo.http.post("/api/events", json={"id": "e1", "type": "custom.reopen", "lead": {"id": str(lead)}},
                                  headers=H)
        assert r.status == 202, await r.text()
        await kommo.idle()
        assert fake.stage_of(lead) == ("Sales", "Qualified")
        assert ("reopen", "skipped_if") in await kommo.outcomes(lead)
        assert not _writes(fake, "PATCH", f"/api/v4/leads/{lead}")


async def test_a_stage_added_in_kommo_is_known_to_the_next_document_and_to_its_webhooks(kommo: Kommo) -> None:
    fake = kommo.fake
    tag = {"actions": [{"do": "tags", "add": ["a"]}]}
    await kommo.put([{"id": "hi", "stage": "New", "on": ["created"], "do": tag}])
    negotiation = fake.add_status("Sales", "Negotiation", sort=45)  # added in Kommo's settings just now
    await kommo.put([{"id": "talk", "stage": "Negotiation", "on": ["moved_in"],
                      "do": {"actions": [{"do": "add_note", "text": "Negotiating"}]}}])
    lead = fake.new_lead("Late", contact="Flo")
    await kommo.hook(kommo.moved(lead, "Negotiation"))
    assert fake.leads[lead]["status_id"] == negotiation
    assert fake.lead_notes(lead) == ["Negotiating"]


async def test_an_unknown_status_id_is_acknowledged_logged_and_kept_as_an_id(
        kommo: Kommo, caplog: pytest.LogCaptureFixture) -> None:
    fake = kommo.fake
    tag = {"actions": [{"do": "tags", "add": ["x"]}]}
    await kommo.put([{"id": "any", "stage": "New", "on": ["moved_in"], "do": tag}])
    lead = fake.new_lead("Odd", contact="Gil")
    body = _item("status", fake.leads[lead] | {"status_id": 999999}, old_status_id=fake.leads[lead]["status_id"])
    with caplog.at_level(logging.WARNING, logger="salesbot.crm.kommo"):
        assert (await kommo.hook(body))["delivered"] == 1  # acknowledged: Kommo disables failing webhooks
    assert any(r.message == "kommo.unknown_stage" and r.__dict__.get("status_id") == "999999" for r in caplog.records)
    [moved] = [e for e in await kommo.history(lead) if e.get("type") == "lead.stage_changed"]
    assert moved["data"]["to"] == {"pipeline": "Sales", "stage": "999999"}
    assert fake.tag_names("leads", lead) == [] and await kommo.outcomes(lead) == []


async def test_odd_webhook_bodies_are_acknowledged_without_events(kommo: Kommo) -> None:
    for body in (b"\xff\xfe\x00garbage", b"leads[status][0][id]=abc&leads[status][0][status_id]=1",
                 b"contacts[add][0][id]=5&contacts[add][0][type]=company", b""):
        r = await kommo.http.post(f"/webhooks/kommo/acme?secret={SECRET}", data=body, headers=FORM)
        assert r.status == 200 and await r.json() == {"ok": True, "events": 0, "delivered": 0}, body
    r = await kommo.http.post("/webhooks/kommo/acme?secret=wrong", data=b"leads[add][0][id]=1", headers=FORM)
    assert r.status == 401 and (await r.json())["error"]["code"] == "bad_secret"
    r = await kommo.http.post(f"/webhooks/kommo/acme?secret={SECRET}", data=b"[1]",
                              headers={"Content-Type": "application/json"})
    assert r.status == 400


# ---------------------------------------------------------------------- apply_to_existing over Kommo
async def test_apply_to_existing_pages_the_stage_through_kommos_api(kommo: Kommo) -> None:
    fake = kommo.fake
    jobs = kommo.services.jobs
    assert jobs is not None
    jobs.page = 2  # two leads a page: three pages for five leads
    there = [fake.new_lead(f"Q{i}", stage=("Sales", "Qualified"), contact=f"C{i}" if i % 2 else None)
             for i in range(5)]
    elsewhere = fake.new_lead("N", stage=("Sales", "New"))
    await kommo.put([{"id": "tag_all", "stage": "Qualified", "on": ["moved_in"], "apply_to_existing": True,
                      "do": {"actions": [{"do": "tags", "add": ["existing"]}]}}])
    await jobs.idle()
    await kommo.idle()
    assert all(fake.tag_names("leads", lead) == ["existing"] for lead in there)
    assert fake.tag_names("leads", elsewhere) == []
    r = await kommo.http.get("/api/automations/sales/jobs", headers=H)
    [job] = (await r.json())["jobs"]
    assert (job["rule"], job["state"], job["done"], job["total"]) == ("tag_all", "finished", 5, 5)
    listed = [r for r in fake.requests if r.method == "GET" and r.path == "/api/v4/leads"
              and "filter[statuses][0][status_id]" in r.query]
    assert [r.query["page"] for r in listed] == [["1"], ["2"], ["3"]]
    assert listed[0].query["filter[statuses][0][status_id]"] == [str(fake.status_id("Sales", "Qualified"))]
    assert listed[0].query["filter[statuses][0][pipeline_id]"] == ["1001"] and listed[0].query["limit"] == ["2"]
    assert not await kommo.services.redis.keys("sb:automations:{sales}:job:*:leads")  # its list is gone


async def test_an_apply_job_waits_while_kommo_is_away_and_fails_clearly_on_a_stage_kommo_lacks(
        kommo: Kommo) -> None:
    fake = kommo.fake
    jobs = kommo.services.jobs
    assert jobs is not None
    fake.down(503)  # the document cannot be checked against Kommo's stages: stored unchecked
    await kommo.put([{"id": "gone", "stage": "Nowhere", "on": ["moved_in"], "apply_to_existing": True,
                      "do": {"actions": [{"do": "tags", "add": ["x"]}]}}])
    await jobs.idle()

    async def job() -> dict[str, Any]:
        r = await kommo.http.get("/api/automations/sales/jobs", headers=H)
        found: dict[str, Any] = (await r.json())["jobs"][0]
        return found
    assert (await job())["state"] == "running"  # waiting for Kommo, resumable
    fake.up()

    async def failed() -> bool:
        await jobs.resume()
        await jobs.idle()
        return (await job())["state"] == "failed"
    await wait_for(failed, what="the resumed job to fail on the unknown stage")
    assert 'unknown stage "Nowhere"' in (await job())["error"]
    assert not await kommo.services.redis.sismember("sb:automations:jobs:unfinished", "sales|v1-gone")


async def test_apply_to_existing_is_refused_where_the_crm_cannot_list_a_stage(
        redis: Redis, redis_url: str, tmp_path: Path) -> None:
    config = load_config(env={}, overrides={
        "redis_url": redis_url, "flows_dir": "/nonexistent", "automations_dir": str(tmp_path), "admin_token": ADMIN,
        "crm": {"backend": "webhook", "base_url": "http://127.0.0.1:9", "secret": "s"}})
    server = TestServer(create_app(config))
    await server.start_server()
    try:
        async with ClientSession(base_url=str(server.make_url(""))) as http:
            doc = {"format": "salesbot.automations/1", "id": "sales", "pipeline": "Sales", "rules": [
                {"id": "all", "stage": "New", "on": ["moved_in"], "apply_to_existing": True,
                 "do": {"actions": [{"do": "tags", "add": ["x"]}]}}]}
            r = await http.put("/api/automations/sales", json=doc, headers=H)
            assert r.status == 422, await r.text()
            assert "apply_to_existing needs a CRM" in await r.text()
            doc["rules"][0]["apply_to_existing"] = False  # type: ignore[index]
            r = await http.put("/api/automations/sales", json=doc, headers=H)
            assert r.status in (200, 201), await r.text()
    finally:
        await server.close()


@contextlib.asynccontextmanager
async def serving(config: Any, fake: FakeKommo) -> AsyncIterator[Kommo]:
    """The server of ``config`` on loopback, with its client, in front of ``fake``."""
    server = TestServer(create_app(config))
    await server.start_server()
    try:
        async with ClientSession(base_url=str(server.make_url(""))) as http:
            yield Kommo(server, http, fake)
    finally:
        await server.close()
