"""The Kommo backend beyond the contract: the wire format it sends (checked on the fake Kommo
API over loopback), the 7 requests/second limit, error mapping, identity lookup, caching,
Kommo's webhooks and the widget_request JWT."""

from __future__ import annotations

import time
import warnings
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import jwt
import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis

from bot.config import CrmConfig, load_config
from bot.errors import CrmRateLimited, CrmRejected, CrmUnavailable
from bot.server.app import create_app
from bot.store.ratelimit import LocalLimiter
from crm_bridge import ChannelIdentity, CrmRef
from crm_bridge._http import CircuitOpen, retry_after_of
from crm_bridge.factory import kommo_account
from crm_bridge.kommo import (
    InvalidWidgetToken,
    KommoCrm,
    as_lead_event,
    name_stages,
    parse_webhook_form,
    verify_widget_jwt,
    webhook_events,
)
from crm_bridge.kommo import account as kommo_account_cache
from tests.crm_bridge.fakes.kommo import TOKEN, FakeKommo
from tests.server.conftest import NO_AUTOMATIONS
from tests.waiting import wait_for


@pytest.fixture
async def fake() -> AsyncIterator[FakeKommo]:
    async with FakeKommo(rate_limit=None) as fake:
        yield fake


@pytest.fixture
async def crm(fake: FakeKommo) -> AsyncIterator[KommoCrm]:
    crm = KommoCrm(fake.url, TOKEN, rate=1000)
    try:
        yield crm
    finally:
        await crm.aclose()


async def _ref(crm: KommoCrm, external_id: str = "u1", **extra: Any) -> CrmRef:
    return await crm.identify(ChannelIdentity("telegram", "shop", external_id, **extra))


def _writes(fake: FakeKommo, method: str, path: str) -> list[Any]:
    return [body for m, p, body in fake.writes if m == method and p == path]


def _gets(fake: FakeKommo, path: str) -> int:
    return sum(1 for r in fake.requests if r.method == "GET" and r.path == path)


# ---------------------------------------------------------------------- the rate limit
async def test_the_clients_limit_allows_at_most_rate_requests_in_any_window_with_margin() -> None:
    now = [0.0]

    async def sleep(seconds: float) -> None:  # an injected clock: no real waiting
        now[0] += seconds
    crm = KommoCrm("https://acme.kommo.com", TOKEN, limiter=LocalLimiter(clock=lambda: now[0], sleep=sleep))
    stamps = []
    for _ in range(30):
        await crm.limiter.acquire(crm.limit, max_wait=60)
        stamps.append(now[0])
    assert crm.limit.name == "kommo:acme.kommo.com"
    # 7 in any 1.15 s (Kommo counts 7 a second; 150 ms of room for a late arrival), no more, no less
    assert all(stamps[i + 7] - stamps[i] >= 1.15 - 1e-9 for i in range(len(stamps) - 7))
    assert stamps[-1] == pytest.approx(29 * 1.15 / 7)


async def test_requests_keep_to_seven_per_second_over_http() -> None:
    async with FakeKommo(rate_limit=7) as fake:  # the fake answers 429 beyond 7 in any second
        crm = KommoCrm(fake.url, TOKEN)  # rate 7 by default
        try:
            ref = await _ref(crm)
            start = len(fake.requests)
            import asyncio
            await asyncio.gather(*(crm.snapshot(ref) for _ in range(8)))  # 16 reads at once
        finally:
            await crm.aclose()
        assert fake.rate_limited == 0
        stamps = [r.at for r in fake.requests[start:]]
        assert len(stamps) == 16
        assert max(sum(1 for t in stamps if s <= t < s + 1.0) for s in stamps) <= 7
        assert stamps[-1] - stamps[0] >= 2.0  # 16 requests need three windows


# ---------------------------------------------------------------------- errors
async def test_429_is_rate_limited_with_kommos_retry_after(fake: FakeKommo, crm: KommoCrm) -> None:
    ref = await _ref(crm)
    fake.retry_after = 5
    fake.fail_next(429)
    with pytest.raises(CrmRateLimited) as caught:
        await crm.execute(ref, {"do": "add_note", "text": "x"})
    assert caught.value.retry_after == 5.0


def test_retry_after_comes_from_the_header_the_body_or_one_second() -> None:
    assert retry_after_of({"Retry-After": "2"}, {"retry_after": 300}) == 2.0
    assert retry_after_of({}, {"retry_after": 300}) == 300.0
    assert retry_after_of({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, None) == 1.0
    assert retry_after_of({}, None) == 1.0


@pytest.mark.parametrize("status", [401, 402, 403])
async def test_auth_and_plan_failures_are_temporary(fake: FakeKommo, crm: KommoCrm, status: int) -> None:
    ref = await _ref(crm)
    fake.fail_next(status)
    with pytest.raises(CrmUnavailable, match=str(status)):
        await crm.execute(ref, {"do": "add_note", "text": "x"})


async def test_a_wrong_token_is_unavailable_not_rejected(fake: FakeKommo) -> None:
    crm = KommoCrm(fake.url, "not-the-token", rate=1000)
    try:
        with pytest.raises(CrmUnavailable, match="Invalid user name or password"):
            await _ref(crm)
    finally:
        await crm.aclose()


async def test_validation_errors_are_rejected_with_kommos_message(fake: FakeKommo, crm: KommoCrm) -> None:
    ref = await _ref(crm)
    with pytest.raises(CrmRejected,
                       match=r"custom_fields_values\.0\.values\.0\.value: This value should be of type numeric"):
        await crm.execute(ref, {"do": "set_field", "entity": "lead", "field": "Score", "value": "lots"})
    with pytest.raises(CrmRejected, match="responsible_user_id"):
        await crm.execute(ref, {"do": "change_responsible", "user": "99", "entities": ["lead"]})


async def test_server_errors_and_refused_connections_are_unavailable(fake: FakeKommo, crm: KommoCrm) -> None:
    ref = await _ref(crm)
    fake.fail_next(502)
    with pytest.raises(CrmUnavailable, match="502"):
        await crm.snapshot(ref)
    await crm.snapshot(ref)  # a 5xx is answered at once: it does not hold the next request back
    now = [0.0]
    crm.breaker.clock = lambda: now[0]
    await fake.stop_listening()
    with pytest.raises(CrmUnavailable) as refused:
        await crm.execute(ref, {"do": "add_note", "text": "x"})
    assert not isinstance(refused.value, CircuitOpen)
    await fake.start_listening()
    seen = len(fake.requests)
    with pytest.raises(CircuitOpen) as held:  # fails fast: nobody waits for a CRM that just failed
        await crm.snapshot(ref)
    assert len(fake.requests) == seen and held.value.retry_after == pytest.approx(5.0)
    now[0] += 5.0  # the cool-down is over: the next request is tried
    await crm.execute(ref, {"do": "add_note", "text": "back"})
    assert fake.lead_notes(ref.lead_id) == ["back"]


async def test_a_429_holds_requests_back_for_retry_after(fake: FakeKommo, crm: KommoCrm) -> None:
    ref = await _ref(crm)
    now = [0.0]
    crm.breaker.clock = lambda: now[0]
    fake.retry_after = 3
    fake.fail_next(429)
    with pytest.raises(CrmRateLimited):
        await crm.snapshot(ref)
    with pytest.raises(CircuitOpen):
        await crm.execute(ref, {"do": "add_note", "text": "too soon"})
    now[0] += 3.0
    await crm.execute(ref, {"do": "add_note", "text": "later"})
    assert fake.lead_notes(ref.lead_id) == ["later"]


async def test_a_deleted_lead_is_rejected(fake: FakeKommo, crm: KommoCrm) -> None:
    ref = await _ref(crm)
    del fake.leads[int(ref.lead_id)]
    with pytest.raises(CrmRejected, match="not found"):
        await crm.snapshot(ref)


# ---------------------------------------------------------------------- custom fields
async def test_custom_fields_by_id_or_name_in_every_type_resolved_once(fake: FakeKommo, crm: KommoCrm) -> None:
    ref = await _ref(crm)
    due = "2030-01-02T10:00:00+00:00"
    for field, value in (("Source", "ads"), ("503", "Site"), ("products", "Kitchen, Bath"), ("Hot", "yes"),
                         ("Call back", due), ("502", "42"), ("Budget", 1200)):
        await crm.execute(ref, {"do": "set_field", "entity": "lead", "field": field, "value": value})
    assert _gets(fake, "/api/v4/leads/custom_fields") == 1
    lead = (await crm.snapshot(ref))["lead"]
    stamp = int(datetime.fromisoformat(due).timestamp())
    assert lead["fields"] == {"Source": "Site", "Products": ["Kitchen", "Bath"], "Hot": True, "Call back": stamp,
                              "Score": "42", "Budget": "1200",
                              # the same, as flows written for the embedded CRM name them
                              "source": "Site", "products": ["Kitchen", "Bath"], "hot": True, "call_back": stamp,
                              "score": "42", "budget": "1200"}
    assert lead["cf"]["503"] == "Site" and lead["cf"]["502"] == "42"
    sent = _writes(fake, "PATCH", f"/api/v4/leads/{ref.lead_id}")
    assert sent[0] == {"custom_fields_values": [{"field_id": 503, "values": [{"enum_id": 602}]}]}
    assert sent[2]["custom_fields_values"][0]["values"] == [{"enum_id": 611}, {"enum_id": 612}]
    await crm.execute(ref, {"do": "set_field", "entity": "lead", "field": "call_back", "value": "2031-01-01"})
    assert (await crm.snapshot(ref))["lead"]["cf"]["505"] == int(datetime(2031, 1, 1, tzinfo=UTC).timestamp())
    await crm.execute(ref, {"do": "set_field", "entity": "lead", "field": "Budget", "value": ""})
    assert "Budget" not in (await crm.snapshot(ref))["lead"]["fields"]  # an empty value clears the field


async def test_a_choice_that_does_not_exist_is_rejected_before_calling_kommo(fake: FakeKommo, crm: KommoCrm) -> None:
    ref = await _ref(crm)
    writes = len(fake.writes)
    with pytest.raises(CrmRejected, match=r'"Radio" is not a choice of "Source" \(Site, Ads\)'):
        await crm.execute(ref, {"do": "set_field", "entity": "lead", "field": "Source", "value": "Radio"})
    with pytest.raises(CrmRejected, match='no custom field "Colour"'):
        await crm.execute(ref, {"do": "set_field", "entity": "lead", "field": "Colour", "value": "red"})
    assert len(fake.writes) == writes


async def test_a_field_added_in_kommo_later_is_found_after_one_reload(
        fake: FakeKommo, crm: KommoCrm, monkeypatch: pytest.MonkeyPatch) -> None:
    ref = await _ref(crm)
    await crm.execute(ref, {"do": "set_field", "entity": "lead", "field": "Budget", "value": "1"})
    fake.fields["leads"].append({"id": 777, "name": "Colour", "type": "text", "code": None})
    monkeypatch.setattr(kommo_account_cache, "REFRESH_INTERVAL", 0.0)
    await crm.execute(ref, {"do": "set_field", "entity": "lead", "field": "Colour", "value": "red"})
    assert (await crm.snapshot(ref))["lead"]["fields"]["Colour"] == "red"
    assert _gets(fake, "/api/v4/leads/custom_fields") == 2


async def test_contact_standard_fields_use_kommos_phone_and_email_fields(fake: FakeKommo, crm: KommoCrm) -> None:
    ref = await _ref(crm)
    await crm.execute(ref, {"do": "set_field", "entity": "contact", "field": "phone", "value": "+15550001111"})
    await crm.execute(ref, {"do": "set_field", "entity": "contact", "field": "name", "value": "Ann Mary Lee"})
    sent = _writes(fake, "PATCH", f"/api/v4/contacts/{ref.contact_id}")
    assert sent[0] == {"custom_fields_values": [
        {"field_code": "PHONE", "values": [{"value": "+15550001111", "enum_code": "WORK"}]}]}
    assert sent[1] == {"name": "Ann Mary Lee", "first_name": "Ann", "last_name": "Mary Lee"}
    contact = (await crm.snapshot(ref))["contact"]
    assert (contact["phone"], contact["first_name"], contact["last_name"]) == ("+15550001111", "Ann", "Mary Lee")
    assert "Phone" not in contact["fields"] and "Salesbot ID" not in contact["fields"]


# ---------------------------------------------------------------------- commands on the wire
async def test_tags_use_tags_to_add_and_tags_to_delete(fake: FakeKommo, crm: KommoCrm) -> None:
    ref = await _ref(crm)
    await crm.execute(ref, {"do": "tags", "entity": "lead", "add": ["vip", "new"], "remove": ["cold"]})
    await crm.execute(ref, {"do": "tags", "entity": "contact", "add": ["x"]})
    await crm.execute(ref, {"do": "tags", "entity": "lead", "add": [], "remove": []})  # nothing to send
    assert _writes(fake, "PATCH", "/api/v4/leads") == [[{"id": int(ref.lead_id),
                                                         "tags_to_add": [{"name": "vip"}, {"name": "new"}],
                                                         "tags_to_delete": [{"name": "cold"}]}]]
    assert _writes(fake, "PATCH", "/api/v4/contacts") == [[{"id": int(ref.contact_id), "tags_to_add": [{"name": "x"}]}]]


async def test_tasks_are_posted_with_complete_till_and_type_ids(fake: FakeKommo, crm: KommoCrm) -> None:
    ref = await _ref(crm)
    due = "2030-05-06T07:08:09+03:00"
    for text, kind, responsible in (("Call", "follow_up", "current"), ("Meet", "meeting", "Bob Sales"),
                                    ("Demo", "demo", "bob@acme.test")):
        await crm.execute(ref, {"do": "add_task", "text": text, "due_at": due, "task_type": kind,
                                "responsible": responsible})
    posted = [body[0] for body in _writes(fake, "POST", "/api/v4/tasks")]
    epoch = int(datetime.fromisoformat(due).timestamp())
    lead = int(ref.lead_id)
    assert [(t["task_type_id"], t["complete_till"], t["entity_type"], t["entity_id"], t["responsible_user_id"])
            for t in posted] == [(1, epoch, "leads", lead, 7), (2, epoch, "leads", lead, 8),
                                 (3, epoch, "leads", lead, 8)]
    with pytest.raises(CrmRejected, match='no task type "dinner"'):
        await crm.execute(ref, {"do": "add_task", "text": "x", "due_at": due, "task_type": "dinner"})
    with pytest.raises(CrmRejected, match='no user "Zed"'):
        await crm.execute(ref, {"do": "add_task", "text": "x", "due_at": due, "responsible": "Zed"})


async def test_complete_tasks_is_one_batched_patch(fake: FakeKommo, crm: KommoCrm) -> None:
    ref = await _ref(crm)
    for i in range(3):
        await crm.execute(ref, {"do": "add_task", "text": f"t{i}", "due_at": "2030-01-01T00:00:00+00:00"})
    assert (await crm.execute(ref, {"do": "complete_tasks", "task_type": "all", "comment": "done"})).value == 3
    [batch] = _writes(fake, "PATCH", "/api/v4/tasks")
    assert [(t["is_completed"], t["result"]) for t in batch] == [(True, {"text": "done"})] * 3
    assert all(t["is_completed"] and t["result"] == {"text": "done"} for t in fake.lead_tasks(ref.lead_id))


async def test_notes_are_common_notes_of_the_entity(fake: FakeKommo, crm: KommoCrm) -> None:
    ref = await _ref(crm)
    await crm.execute(ref, {"do": "add_note", "text": "hello", "entity": "contact"})
    assert _writes(fake, "POST", f"/api/v4/contacts/{ref.contact_id}/notes") == [
        [{"note_type": "common", "params": {"text": "hello"}}]]


async def test_stages_are_resolved_by_name_or_id(fake: FakeKommo, crm: KommoCrm) -> None:
    ref = await _ref(crm)
    partners = next(p for p in fake.pipelines if p["name"] == "Partners")
    signed = next(s for s in partners["_embedded"]["statuses"] if s["name"] == "Signed")
    await crm.execute(ref, {"do": "change_stage", "pipeline": "partners", "stage": "SIGNED"})
    await crm.execute(ref, {"do": "change_stage", "pipeline": str(partners["id"]), "stage": 142})
    assert _writes(fake, "PATCH", f"/api/v4/leads/{ref.lead_id}") == [
        {"pipeline_id": partners["id"], "status_id": signed["id"]}, {"pipeline_id": partners["id"], "status_id": 142}]
    lead = (await crm.snapshot(ref))["lead"]
    assert (lead["pipeline"], lead["stage"]) == ("Partners", "Closed - won")
    with pytest.raises(CrmRejected, match='unknown stage "Incoming"'):
        await crm.execute(ref, {"do": "change_stage", "pipeline": "Sales", "stage": "Incoming"})


async def test_responsible_of_all_contacts_and_the_company_in_batches(fake: FakeKommo, crm: KommoCrm) -> None:
    ref = await _ref(crm)
    second = await _ref(crm, "u2")
    await crm.request("POST", f"/api/v4/leads/{ref.lead_id}/link",
                      json=[{"to_entity_id": int(second.contact_id), "to_entity_type": "contacts"}])
    await crm.execute(ref, {"do": "set_field", "entity": "company", "field": "name", "value": "Acme Ltd"})
    await crm.execute(ref, {"do": "change_responsible", "user": "Bob Sales", "entities": ["all_contacts", "company"]})
    [contacts] = _writes(fake, "PATCH", "/api/v4/contacts")
    assert sorted(c["id"] for c in contacts) == sorted([int(ref.contact_id), int(second.contact_id)])
    snap = await crm.snapshot(ref)
    assert snap["company"]["name"] == "Acme Ltd" and snap["company"]["responsible"] == "8"
    assert snap["contact"]["responsible"] == "8" and snap["lead"]["responsible"] == "7"


async def test_subscribers_cannot_be_changed_through_the_api(crm: KommoCrm) -> None:
    ref = await _ref(crm)
    with pytest.raises(CrmRejected, match="subscribers"):
        await crm.execute(ref, {"do": "subscribers", "add": ["7"]})


# ---------------------------------------------------------------------- identify and snapshot
async def test_identify_creates_the_identity_field_once_then_finds_by_it(fake: FakeKommo, crm: KommoCrm) -> None:
    assert not any(f["name"] == "Salesbot ID" for f in fake.fields["contacts"])
    ref = await _ref(crm, "u1", name="Bo Ek")
    assert len(_writes(fake, "POST", "/api/v4/contacts/custom_fields")) == 1
    [complex_] = _writes(fake, "POST", "/api/v4/leads/complex")
    assert complex_[0]["_embedded"]["contacts"][0]["name"] == "Bo Ek"
    again = KommoCrm(fake.url, TOKEN, rate=1000)  # another process: finds the field by name
    try:
        assert await again.identify(ChannelIdentity("telegram", "shop", "u1")) == ref
    finally:
        await again.aclose()
    assert len(_writes(fake, "POST", "/api/v4/contacts/custom_fields")) == 1
    assert len(fake.contacts) == 1 and len(fake.leads) == 1


async def test_the_identity_field_is_created_once_by_concurrent_identifies_and_processes(fake: FakeKommo) -> None:
    import asyncio
    first, second = KommoCrm(fake.url, TOKEN, rate=1000), KommoCrm(fake.url, TOKEN, rate=1000)
    try:
        await second.account.fields("contacts")  # the second process read the fields before the field existed
        await asyncio.gather(*(first.identify(ChannelIdentity("t", "a", str(i))) for i in range(3)))
        await second.identify(ChannelIdentity("t", "a", "9"))
    finally:
        await first.aclose()
        await second.aclose()
    assert len(_writes(fake, "POST", "/api/v4/contacts/custom_fields")) == 1
    assert sum(f["name"] == "Salesbot ID" for f in fake.fields["contacts"]) == 1


async def test_identify_finds_a_known_contact_by_phone_and_remembers_the_channel(
        fake: FakeKommo, crm: KommoCrm) -> None:
    existing = await crm.request("POST", "/api/v4/contacts", json=[{"name": "Ann", "custom_fields_values": [
        {"field_code": "PHONE", "values": [{"value": "+90 555 111 22 33", "enum_code": "MOB"}]}]}])
    contact_id = existing["_embedded"]["contacts"][0]["id"]
    made = await crm.request("POST", "/api/v4/leads",
                             json=[{"name": "Old deal", "_embedded": {"contacts": [{"id": contact_id}]}}])
    lead_id = made["_embedded"]["leads"][0]["id"]
    ref = await crm.identify(ChannelIdentity("whatsapp", "wa", "905551112233", phone="+905551112233"))
    assert ref == CrmRef(str(contact_id), str(lead_id))
    tg = await crm.identify(ChannelIdentity("telegram", "tg", "42", phone="+90 555 111 2233"))
    assert tg == ref  # the same person on another channel
    assert await crm.identify(ChannelIdentity("whatsapp", "wa", "905551112233")) == ref  # by the field now
    assert fake.field_value("contacts", contact_id, "Salesbot ID") == "whatsapp:wa:905551112233\ntelegram:tg:42"


async def test_a_closed_lead_gives_a_new_lead_in_the_first_stage(fake: FakeKommo, crm: KommoCrm) -> None:
    ref = await _ref(crm)
    fake.leads[int(ref.lead_id)]["status_id"] = 143
    again = await _ref(crm)
    assert again.contact_id == ref.contact_id and again.lead_id != ref.lead_id
    assert fake.stage_of(again.lead_id) == ("Sales", "New")
    assert fake.leads[int(again.lead_id)]["_contacts"] == [int(ref.contact_id)]


async def test_without_the_identity_field_people_are_found_by_phone_or_email_only(fake: FakeKommo) -> None:
    crm = KommoCrm(fake.url, TOKEN, rate=1000, identity_field=None)
    try:
        ref = await crm.identify(ChannelIdentity("telegram", "t", "1", email="Bo@Example.com"))
        assert await crm.identify(ChannelIdentity("telegram", "t", "2", email="bo@example.com")) == ref
        assert await crm.identify(ChannelIdentity("telegram", "t", "3")) != ref
    finally:
        await crm.aclose()
    assert not any(f["name"] == "Salesbot ID" for f in fake.fields["contacts"])


async def test_a_snapshot_is_two_parallel_reads_plus_the_company(fake: FakeKommo, crm: KommoCrm) -> None:
    ref = await _ref(crm)
    await crm.snapshot(ref)  # warms the pipelines cache
    start = len(fake.requests)
    await crm.snapshot(ref)
    assert sorted((r.path, r.query.get("with")) for r in fake.requests[start:]) == sorted([
        (f"/api/v4/leads/{ref.lead_id}", ["contacts"]), (f"/api/v4/contacts/{ref.contact_id}", None)])
    await crm.execute(ref, {"do": "set_field", "entity": "company", "field": "name", "value": "Acme"})
    start = len(fake.requests)
    snap = await crm.snapshot(ref)
    assert len(fake.requests) - start == 3 and snap["company"]["name"] == "Acme"


async def test_lead_tasks_and_notes_for_the_dashboard(crm: KommoCrm) -> None:
    ref = await _ref(crm)
    await crm.execute(ref, {"do": "add_task", "text": "Call", "due_at": "2030-01-01T00:00:00+00:00",
                            "task_type": "meeting"})
    await crm.execute(ref, {"do": "add_note", "text": "n1"})
    [task] = await crm.lead_tasks(ref)
    assert (task["text"], task["type"], task["due"], task["completed"]) == (
        "Call", "meeting", "2030-01-01T00:00:00+00:00", False)
    assert [(n["entity"], n["text"]) for n in await crm.lead_notes(ref)] == [("lead", "n1")]


# ---------------------------------------------------------------------- webhooks
WEBHOOK_BODY = (
    "leads[status][0][id]=101&leads[status][0][status_id]=142&leads[status][0][old_status_id]={new}"
    "&leads[status][0][pipeline_id]=1001&leads[status][0][last_modified]=1700000001"
    "&leads[status][0][custom_fields][0][id]=66339&leads[status][0][custom_fields][0][values][0][value]=Site"
    "&leads[status][1][id]=102&leads[status][1][status_id]={signed}&leads[status][1][pipeline_id]=1002"
    "&leads[status][1][old_pipeline_id]=1001&leads[status][1][old_status_id]={new}"
    "&leads[responsible][0][id]=101&leads[responsible][0][responsible_user_id]=8&leads[responsible][0][old_responsible_user_id]=7"
    "&leads[note][0][note][text]=Called&leads[note][0][note][note_type]=4&leads[note][0][note][element_id]=101"
    "&leads[note][0][note][element_type]=2&leads[note][0][note][id]=555"
    "&task[add][0][id]=9&task[add][0][element_id]=101&task[add][0][element_type]=2&task[add][0][text]=Call%20back"
    "&task[add][0][status]=0&account[subdomain]=acme&account[id]=1"
)


def _stage_id(fake: FakeKommo, pipeline: str, stage: str) -> int:
    p = next(p for p in fake.pipelines if p["name"] == pipeline)
    return next(s["id"] for s in p["_embedded"]["statuses"] if s["name"] == stage)


async def test_form_encoded_webhooks_become_named_lead_events(fake: FakeKommo, crm: KommoCrm) -> None:
    body = WEBHOOK_BODY.format(new=_stage_id(fake, "Sales", "New"), signed=_stage_id(fake, "Partners", "Signed"))
    payload = parse_webhook_form(body.encode())
    assert payload["account"] == {"subdomain": "acme", "id": "1"}
    assert payload["leads"]["status"][0]["custom_fields"][0]["values"][0]["value"] == "Site"
    events = webhook_events(payload)
    assert [(e.type, e.lead_id) for e in events] == [
        ("lead.stage_changed", "101"), ("lead.stage_changed", "102"), ("lead.responsible_changed", "101"),
        ("lead.note_added", "101"), ("task.added", "101")]
    await name_stages(crm, events)
    won, moved, responsible, note, task = events
    assert (won.data["pipeline"], won.data["stage"], won.data["old_stage"]) == ("Sales", "Won", "New")
    assert (moved.data["pipeline"], moved.data["stage"], moved.data["old_pipeline"], moved.data["old_stage"]) == (
        "Partners", "Signed", "Sales", "New")
    assert (responsible.data["responsible"], responsible.data["old_responsible"]) == ("8", "7")
    assert (note.data["text"], task.data["text"]) == ("Called", "Call back")
    assert len({e.dedupe_id for e in events}) == 5
    assert webhook_events(parse_webhook_form(body.encode()))[0].dedupe_id == won.dedupe_id  # stable on redelivery


def test_odd_webhook_bodies_give_no_events() -> None:
    assert webhook_events(parse_webhook_form(b"")) == []
    assert webhook_events(parse_webhook_form(b"leads=1&foo[bar]=2")) == []
    assert webhook_events(parse_webhook_form(b"leads[status][0][name]=no id")) == []


def test_the_webhook_account_is_the_configured_one_or_the_subdomain() -> None:
    assert kommo_account(CrmConfig(backend="kommo", base_url="https://acme.kommo.com", token="t")) == "acme"  # type: ignore[arg-type]
    assert kommo_account(CrmConfig(backend="kommo", base_url="http://127.0.0.1:9", token="t", account="x")) == "x"  # type: ignore[arg-type]


@pytest.fixture
async def kommo_server(redis: Redis, redis_url: str, fake: FakeKommo,
                       request: pytest.FixtureRequest) -> AsyncIterator[ClientSession]:
    crm = {"backend": "kommo", "base_url": fake.url, "token": TOKEN, "account": "acme", **getattr(request, "param", {})}
    config = load_config(env={}, overrides={"redis_url": redis_url, "flows_dir": "/nonexistent", "admin_token": "a",
                                            "automations_dir": str(NO_AUTOMATIONS), "crm": crm})
    srv = TestServer(create_app(config))
    await srv.start_server()
    try:
        async with ClientSession(base_url=str(srv.make_url(""))) as session:
            yield session
    finally:
        await srv.close()


async def test_the_webhook_route_refuses_without_a_configured_secret(kommo_server: ClientSession) -> None:
    r = await kommo_server.post("/webhooks/kommo/acme?secret=x", data="leads[add][0][id]=1")
    assert r.status == 403
    r = await kommo_server.post("/webhooks/kommo/other?secret=x", data="leads[add][0][id]=1")
    assert r.status == 404


@pytest.mark.parametrize("kommo_server", [{"webhook_secret": "s3"}], indirect=True)
async def test_the_webhook_route_checks_the_secret_and_queues_every_lead_once(kommo_server: ClientSession) -> None:
    r = await kommo_server.post("/webhooks/kommo/acme", data="leads[add][0][id]=1")
    assert r.status == 401
    for delivered in (1, 0):  # a lead nobody knows has a queue too; a redelivery is a duplicate
        r = await kommo_server.post("/webhooks/kommo/acme?secret=s3",
                                    data="leads[add][0][id]=1&leads[add][0][status_id]=5",
                                    headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert r.status == 200 and await r.json() == {"ok": True, "events": 1, "delivered": delivered}

    async def queued() -> list[tuple[str, str, str]]:  # handled in the background: Kommo wants a fast answer
        r = await kommo_server.get("/api/leads/1/events", headers={"Authorization": "Bearer a"})
        return [(e["type"], e["source"], e["data"]["stage"]) for e in (await r.json())["events"]
                if e["role"] == "event"]
    assert await wait_for(queued, what="the webhook's event on the lead's queue") == [("lead.created", "kommo", "5")]
    r = await kommo_server.post("/webhooks/kommo/acme?secret=s3", data="[1, 2]",
                                headers={"Content-Type": "application/json"})
    assert r.status == 400


# ---------------------------------------------------------------------- widget_request JWT
SECRET = "kommo-client-secret-" + "0123456789abcdef" * 3  # Kommo's client secrets are 64 characters


def _token(secret: str = SECRET, alg: str = "HS512", **claims: Any) -> str:
    body = {"iss": "https://acme.kommo.com", "account_id": 1, "subdomain": "acme", "entity_id": 101,
            "entity_type": 2, "bot_type": "salesbot", "client_uuid": "u", "aud": "https://bot.example.com",
            "exp": int(time.time()) + 60, **claims}
    return jwt.encode(body, secret, algorithm=alg)


def test_a_widget_token_signed_with_the_client_secret_is_accepted() -> None:
    claims = verify_widget_jwt(_token(), SECRET, audience="https://bot.example.com")
    assert (claims["entity_id"], claims["entity_type"], claims["subdomain"]) == (101, 2, "acme")
    assert verify_widget_jwt(_token(), SECRET)["account_id"] == 1  # audience not checked unless given


@pytest.mark.parametrize("token", [
    _token(secret="someone-else-" + "x" * 64),
    _token(exp=int(time.time()) - 3600),
    _token(alg="HS256"),
    _token(aud="https://evil.example.com"),
    "not.a.jwt",
    "",
])
def test_a_forged_expired_or_misdirected_widget_token_is_refused(token: str) -> None:
    with pytest.raises(InvalidWidgetToken):
        verify_widget_jwt(token, SECRET, audience="https://bot.example.com")


def test_a_short_client_secret_still_verifies() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        token = _token(secret="short")
    assert verify_widget_jwt(token, "short")["entity_id"] == 101


def test_a_widget_token_without_exp_is_refused() -> None:
    token = jwt.encode({"account_id": 1, "when": datetime.now(UTC).isoformat()}, SECRET, algorithm="HS512")
    with pytest.raises(InvalidWidgetToken, match="exp"):
        verify_widget_jwt(token, SECRET)


def test_kommo_webhook_events_map_to_the_lead_event_types_of_the_spec() -> None:
    body = ("leads[status][0][id]=7&leads[status][0][status_id]=142&leads[status][0][pipeline_id]=1"
            "&leads[status][0][old_status_id]=5&leads[responsible][0][id]=7&leads[responsible][0][responsible_user_id]=9"
            "&leads[responsible][0][old_responsible_user_id]=3&task[update][0][id]=11&task[update][0][element_type]=2"
            "&task[update][0][element_id]=7&task[update][0][status]=1&leads[note][0][note][element_id]=7"
            "&leads[note][0][note][id]=4&leads[note][0][note][text]=hi")
    payload = parse_webhook_form(body)
    assert isinstance(payload, dict)
    mapped = [as_lead_event(e) for e in webhook_events(payload)]
    assert [t for t, _ in mapped] == ["lead.stage_changed", "lead.responsible_changed", "lead.note_added",
                                      "task.completed"]
    assert (mapped[0][1]["from"], mapped[0][1]["to"]) == ({"pipeline": "1", "stage": "5"},
                                                          {"pipeline": "1", "stage": "142"})
    assert (mapped[1][1]["from"], mapped[1][1]["to"]) == ("3", "9")
    assert mapped[3][1]["task"] == "11"
