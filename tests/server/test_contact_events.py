"""A contact's changes are events of its leads (spec: "every change the embedded CRM makes …
emits its CRM events"): a rule ``field_changed`` on ``contact.fields.*`` or ``contact.score``
acts when a person, the API or scoring changes it, and ``contact.created`` is emitted however
the contact came (the API, ``POST /api/events``), with its first lead. Real HTTP and Redis."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from tests.live_app import App, running_app
from tests.waiting import wait_for

BASE: dict[str, Any] = {"format": "salesbot.automations/1", "id": "sales", "pipeline": "Sales"}


def _tagging(rule_id: str, field: str, tag: str) -> dict[str, Any]:
    return {"id": rule_id, "stage": "Incoming", "on": ["field_changed"], "field": field,
            "do": {"actions": [{"do": "tags", "add": [tag]}]}}


async def _tags(app: App, lead: str) -> list[str]:
    return list((await app.api("GET", f"/api/crm/leads/{lead}"))["tags"])


async def _types(app: App, lead: str) -> list[str]:
    body = await app.api("GET", f"/api/leads/{lead}/events")
    return [str(e["type"]) for e in body["events"] if e.get("role") == "event"]


async def _has(read: Any, item: object) -> bool:
    return item in await read()


async def test_a_contact_field_changed_by_a_person_fires_the_rules_of_its_lead(redis: Redis, redis_url: str) -> None:
    doc = {**BASE, "rules": [_tagging("city", "contact.fields.city", "moved"),
                             _tagging("mail", "contact.email", "new_mail")]}
    async with running_app(redis_url) as app:
        await app.api("PUT", "/api/automations/sales", 201, json=doc)
        contact = (await app.api("POST", "/api/crm/contacts", 201, json={"name": "Ann"}))["id"]
        lead = str((await app.api("POST", "/api/crm/leads", 201, json={"name": "Deal", "contact_id": contact}))["id"])
        await app.api("PATCH", f"/api/crm/contacts/{contact}", 200, json={"fields": {"city": "Izmir"}})
        assert await wait_for(lambda: _has(lambda: _tags(app, lead), "moved"), what="the contact field's rule")
        assert "new_mail" not in await _tags(app, lead)
        await app.api("PATCH", f"/api/crm/contacts/{contact}", 200, json={"email": "ann@example.com"})
        assert await wait_for(lambda: _has(lambda: _tags(app, lead), "new_mail"), what="the e-mail's rule")
        changed = [e for e in (await app.api("GET", f"/api/leads/{lead}/events"))["events"]
                   if e.get("type") == "lead.field_changed"]
        assert [(e["data"]["field"], e["data"]["to"]) for e in changed] == [
            ("contact.fields.city", "Izmir"), ("contact.email", "ann@example.com")]
        # the contact made alone is announced with its first lead
        assert (await _types(app, lead)).count("contact.created") == 1


async def test_a_contact_with_two_leads_announces_a_change_on_its_newest_open_lead_only(
        redis: Redis, redis_url: str) -> None:
    doc = {**BASE, "rules": [_tagging("city", "contact.fields.city", "moved")]}
    async with running_app(redis_url) as app:
        await app.api("PUT", "/api/automations/sales", 201, json=doc)
        contact = (await app.api("POST", "/api/crm/contacts", 201, json={"name": "Cem"}))["id"]
        older = str((await app.api("POST", "/api/crm/leads", 201, json={"name": "Old", "contact_id": contact}))["id"])
        newer = str((await app.api("POST", "/api/crm/leads", 201, json={"name": "New", "contact_id": contact}))["id"])
        await app.api("PATCH", f"/api/crm/contacts/{contact}", 200, json={"fields": {"city": "Bursa"}})
        assert await wait_for(lambda: _has(lambda: _tags(app, newer), "moved"), what="the newest lead's rule")
        await app.services.leads.idle()
        assert "lead.field_changed" not in await _types(app, older) and "moved" not in await _tags(app, older)


async def test_a_score_raised_by_scoring_fires_a_rule_on_contact_score(redis: Redis, redis_url: str) -> None:
    doc = {**BASE, "scoring": [{"on": "custom.ping", "add": 5}],
           "rules": [_tagging("hot", "contact.score", "scored")]}
    async with running_app(redis_url) as app:
        await app.api("PUT", "/api/automations/sales", 201, json=doc)
        contact = (await app.api("POST", "/api/crm/contacts", 201, json={"name": "Bo"}))["id"]
        lead = str((await app.api("POST", "/api/crm/leads", 201, json={"name": "Deal", "contact_id": contact}))["id"])
        await app.api("POST", "/api/events", 202, json={"type": "custom.ping", "lead": {"id": lead}})
        assert await wait_for(lambda: _has(lambda: _tags(app, lead), "scored"), what="the score's rule")


async def test_an_event_for_an_unknown_phone_emits_contact_created(redis: Redis, redis_url: str) -> None:
    doc = {**BASE, "scoring": [{"on": "contact.created", "add": 7}]}
    async with running_app(redis_url) as app:
        await app.api("PUT", "/api/automations/sales", 201, json=doc)
        body = await app.api("POST", "/api/events", 202,
                             json={"type": "custom.hello", "contact": {"phone": "+905551112233"}})
        lead = str(body["lead"])
        assert await wait_for(lambda: _has(lambda: _types(app, lead), "contact.created"), what="contact.created")
        contact = (await app.api("GET", f"/api/crm/leads/{lead}"))["contacts"][0]

        async def score() -> object:
            return (await app.api("GET", f"/api/crm/contacts/{contact['id']}")).get("score")

        assert await wait_for(lambda: _has(lambda: _one(score), 7), what="the new contact scored")
        # a second event of the same contact: no new contact, no second contact.created
        await app.api("POST", "/api/events", 202, json={"type": "custom.hello", "contact": {"phone": "+905551112233"}})
        await app.services.leads.idle()
        assert (await _types(app, lead)).count("contact.created") == 1


async def _one(read: Any) -> list[object]:
    return [await read()]
