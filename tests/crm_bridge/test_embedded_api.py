"""The embedded CRM over HTTP (``/api/crm``), against a real Redis: roles, listing, search,
filters, edits of the customer card, priority-ordered notes, and the indexes kept up to date by
the flows' own commands."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import jsonschema
import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis

from bot.server.app import create_app
from bot.server.keys import SERVICES
from crm_bridge import ChannelIdentity, CrmRef
from tests.server.conftest import ADMIN, make_config

ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN}"}
SUPPORT = {"Authorization": "Bearer support-token"}
OPERATOR = {"Authorization": "Bearer operator-token"}
PIPELINES = {"Sales": ["Incoming", "Qualified", "Won", "Lost"], "Wholesale": ["New", "Offer"]}


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


@pytest.fixture
async def server(redis: Redis, redis_url: str) -> AsyncIterator[TestServer]:
    config = make_config(
        redis_url,
        tokens=[{"token": "support-token", "role": "support", "name": "Sam"},
                {"token": "operator-token", "role": "operator"}],
        embedded_crm={"pipelines": PIPELINES,
                      "users": [{"id": "7", "name": "Ayla", "email": "ayla@shop.example", "teams": ["sales"]},
                                {"id": "8", "name": "Berk"}],
                      "teams": [{"id": "sales", "name": "Sales team"}]},
    )
    srv = TestServer(create_app(config))  # type: ignore[arg-type]
    await srv.start_server()
    srv.app[SERVICES].crm.clock = Clock()  # notes and recency in a known order
    try:
        yield srv
    finally:
        await srv.close()


@pytest.fixture
async def http(server: TestServer) -> AsyncIterator[ClientSession]:
    async with ClientSession(base_url=str(server.make_url(""))) as session:
        yield session


async def _ok(response: Any, status: int = 200) -> Any:
    body = await response.json()
    assert response.status == status, body
    return body


async def _contact(http: ClientSession, **data: Any) -> dict[str, Any]:
    return await _ok(await http.post("/api/crm/contacts", json=data, headers=SUPPORT), 201)  # type: ignore[no-any-return]


async def _names(http: ClientSession, path: str = "/api/crm/contacts", **params: Any) -> list[str]:
    body = await _ok(await http.get(path, params=params, headers=SUPPORT))
    key = "contacts" if "contacts" in body else "leads"
    return [item["name"] for item in body[key]]


def _validate(doc: dict[str, Any], path: str, method: str, status: int, body: Any) -> None:
    schema = doc["paths"][path][method]["responses"][str(status)]["content"]["application/json"]["schema"]
    jsonschema.validate(body, {**schema, "components": doc["components"]}, cls=jsonschema.Draft202012Validator)


async def test_roles_support_and_admin_only(http: ClientSession) -> None:
    assert (await http.get("/api/crm/contacts")).status == 401
    r = await http.get("/api/crm/contacts", headers=OPERATOR)
    assert r.status == 403 and (await r.json())["error"]["code"] == "forbidden"
    assert (await http.patch("/api/crm/contacts/1", json={"name": "x"}, headers=OPERATOR)).status == 403
    assert (await http.post("/api/crm/contacts/1/notes", json={"text": "x"}, headers=OPERATOR)).status == 403
    assert (await http.get("/api/crm/contacts", headers=SUPPORT)).status == 200
    assert (await http.get("/api/crm/contacts", headers=ADMIN_AUTH)).status == 200
    users = await _ok(await http.get("/api/crm/users", headers=SUPPORT))
    assert [u["id"] for u in users["users"]] == ["7", "8"]
    assert users["teams"] == [{"id": "sales", "name": "Sales team", "members": ["7"]}]
    pipelines = await _ok(await http.get("/api/crm/pipelines", headers=SUPPORT))
    assert pipelines["pipelines"][0] == {"name": "Sales", "stages": PIPELINES["Sales"]}


async def test_list_newest_first_with_pages_and_search(http: ClientSession) -> None:
    await _contact(http, name="Ayşe Yılmaz", phone="+90 555 111 22 33", email="ayse@example.com")
    await _contact(http, name="Can Demir", phone="+905559998877", email="can@shop.example")
    await _contact(http, name="Ayla Kaya", email="ayla.k@example.org")
    assert await _names(http) == ["Ayla Kaya", "Can Demir", "Ayşe Yılmaz"]
    page1 = await _ok(await http.get("/api/crm/contacts", params={"limit": 2}, headers=SUPPORT))
    assert [c["name"] for c in page1["contacts"]] == ["Ayla Kaya", "Can Demir"]
    assert page1["total"] == 3 and page1["next_offset"] == 2
    page2 = await _ok(await http.get("/api/crm/contacts", params={"limit": 2, "offset": 2}, headers=SUPPORT))
    assert [c["name"] for c in page2["contacts"]] == ["Ayşe Yılmaz"] and page2["next_offset"] is None

    assert await _names(http, q="ayse") == ["Ayşe Yılmaz"]  # accents and case folded
    assert await _names(http, q="YIL") == ["Ayşe Yılmaz"]  # prefix of any word
    assert await _names(http, q="ay") == ["Ayla Kaya", "Ayşe Yılmaz"]
    assert await _names(http, q="ay kay") == ["Ayla Kaya"]  # every word must match
    assert await _names(http, q="can@shop.example") == ["Can Demir"]
    assert await _names(http, q="example.com") == ["Ayşe Yılmaz"]  # the e-mail's domain
    assert await _names(http, q="+90 555 999") == ["Can Demir"]  # phone digits, however written
    assert await _names(http, q="555 111 2233") == ["Ayşe Yılmaz"]  # the national number
    assert await _names(http, q="nobody") == []


async def test_card_fields_edit_filter_and_reject(http: ClientSession) -> None:
    ann = await _contact(http, name="Ann Lee", email="ann@example.com")
    assert (ann["status"], ann["temperature"], ann["discount"], ann["currency"], ann["language"]) == \
        ("potential", None, 0, None, None)
    bob = await _contact(http, name="Bob Stone", status="current", temperature="warm", tags=["vip"])
    doc = await (await http.get("/api/openapi.json")).json()

    r = await http.patch(f"/api/crm/contacts/{ann['id']}", headers=SUPPORT, json={
        "status": "current", "temperature": "Hot", "discount": "12.5%", "currency": "eur", "language": "pt_br",
        "tags_add": ["vip", "b2b"], "fields": {"city": "Izmir"}})
    edited = await _ok(r)
    _validate(doc, "/api/crm/contacts/{id}", "patch", 200, edited)
    assert (edited["status"], edited["temperature"], edited["discount"], edited["currency"], edited["language"]) == \
        ("current", "hot", 12.5, "EUR", "pt-BR")
    assert edited["tags"] == ["vip", "b2b"] and edited["fields"] == {"city": "Izmir"}

    for bad, message in [({"temperature": "lukewarm"}, "temperature is one of"),
                         ({"discount": 120}, "discount is a percent"),
                         ({"status": "former"}, "status is one of"),
                         ({"currency": "euro"}, "currency is a three-letter"),
                         ({"email": "not-an-address"}, "email"),
                         ({"phone": "call me"}, "not a phone number"),
                         ({"responsible": "99"}, "unknown user"),
                         ({"shoe_size": 42}, "unknown contact field")]:
        r = await http.patch(f"/api/crm/contacts/{ann['id']}", json=bad, headers=SUPPORT)
        body = await r.json()
        assert r.status == 422 and message in body["error"]["message"], (bad, body)

    assert await _names(http, status="current") == ["Ann Lee", "Bob Stone"]
    assert await _names(http, temperature="hot") == ["Ann Lee"]
    assert await _names(http, temperature="warm") == ["Bob Stone"]
    assert await _names(http, tag="vip") == ["Ann Lee", "Bob Stone"]
    assert await _names(http, tag=["vip", "b2b"]) == ["Ann Lee"]
    assert await _names(http, status="current", temperature="warm", tag="vip") == ["Bob Stone"]
    assert await _names(http, q="ann", tag="vip") == ["Ann Lee"]
    assert await _names(http, q="bob", temperature="hot") == []
    # a change moves the contact between the filter indexes
    await _ok(await http.patch(f"/api/crm/contacts/{bob['id']}", json={"temperature": "cold", "tags_remove": ["vip"]},
                               headers=SUPPORT))
    assert await _names(http, temperature="warm") == []
    assert await _names(http, temperature="cold") == ["Bob Stone"]
    assert await _names(http, tag="vip") == ["Ann Lee"]
    tags = await _ok(await http.get("/api/crm/tags", params={"entity": "contact"}, headers=SUPPORT))
    assert {t["tag"]: t["count"] for t in tags["tags"]} == {"vip": 1, "b2b": 1}

    r = await http.get("/api/crm/contacts", params={"mood": "happy"}, headers=SUPPORT)
    assert r.status == 400 and "unknown filter" in (await r.json())["error"]["message"]
    r = await http.get("/api/crm/contacts", params={"temperature": "lukewarm"}, headers=SUPPORT)
    assert r.status == 400
    assert (await http.get("/api/crm/contacts/999", headers=SUPPORT)).status == 404
    assert (await http.patch("/api/crm/contacts/999", json={"name": "x"}, headers=SUPPORT)).status == 404
    listing = await _ok(await http.get("/api/crm/contacts", headers=SUPPORT))
    _validate(doc, "/api/crm/contacts", "get", 200, listing)


async def test_leads_stage_changes_filters_and_search_through_contacts(http: ClientSession) -> None:
    ann = await _contact(http, name="Ann Lee", phone="+905551112233")
    bob = await _contact(http, name="Bob Stone")
    lead_a = await _ok(await http.post("/api/crm/leads", json={"name": "Ann's order", "price": 100,
                                                               "contact_id": ann["id"], "tags": ["web"]},
                                       headers=SUPPORT), 201)
    lead_b = await _ok(await http.post("/api/crm/leads", json={"name": "Bob's order", "contact_id": bob["id"]},
                                       headers=SUPPORT), 201)
    assert (lead_a["pipeline"], lead_a["stage"]) == ("Sales", "Incoming")
    r = await http.patch(f"/api/crm/leads/{lead_a['id']}",
                         json={"stage": "Qualified", "responsible": "7", "price": "250.5"}, headers=SUPPORT)
    moved = await _ok(r)
    assert (moved["stage"], moved["responsible"], moved["price"]) == ("Qualified", "7", 250.5)
    r = await http.patch(f"/api/crm/leads/{lead_b['id']}", json={"stage": "Nowhere"}, headers=SUPPORT)
    assert r.status == 422 and 'unknown stage "Nowhere"' in (await r.json())["error"]["message"]
    r = await http.patch(f"/api/crm/leads/{lead_b['id']}", json={"pipeline": "Wholesale"}, headers=SUPPORT)
    assert (await _ok(r))["stage"] == "New"  # another pipeline without a stage: its first stage

    assert await _names(http, "/api/crm/leads", stage="Qualified") == ["Ann's order"]
    assert await _names(http, "/api/crm/leads", stage="Incoming") == []
    assert await _names(http, "/api/crm/leads", stage="New", pipeline="Wholesale") == ["Bob's order"]
    assert await _names(http, "/api/crm/leads", responsible="7") == ["Ann's order"]
    assert await _names(http, "/api/crm/leads", tag="web") == ["Ann's order"]
    assert await _names(http, stage="Qualified") == ["Ann Lee"]  # contacts by their leads' stage
    assert await _names(http, stage="New", pipeline="Wholesale") == ["Bob Stone"]
    assert await _names(http, "/api/crm/leads", q="5551112233") == ["Ann's order"]  # by the contact's phone
    assert await _names(http, "/api/crm/leads", q="order") == ["Bob's order", "Ann's order"]

    detail = await _ok(await http.get(f"/api/crm/leads/{lead_a['id']}", headers=SUPPORT))
    assert [c["name"] for c in detail["contacts"]] == ["Ann Lee"] and detail["tasks"] == []
    contact = await _ok(await http.get(f"/api/crm/contacts/{ann['id']}", headers=SUPPORT))
    assert [lead["name"] for lead in contact["leads"]] == ["Ann's order"]
    doc = await (await http.get("/api/openapi.json")).json()
    _validate(doc, "/api/crm/leads/{id}", "get", 200, detail)
    _validate(doc, "/api/crm/contacts/{id}", "get", 200, contact)


async def test_notes_are_listed_by_priority_then_newest(http: ClientSession) -> None:
    ann = await _contact(http, name="Ann Lee")
    path = f"/api/crm/contacts/{ann['id']}/notes"
    made = {}
    for text, priority in [("old plain", None), ("old medium", "medium"), ("old high", "high"),
                           ("new plain", "none"), ("new high", "high"), ("new medium", "medium")]:
        body = {"text": text} if priority is None else {"text": text, "priority": priority}
        made[text] = await _ok(await http.post(path, json=body, headers=SUPPORT), 201)
    assert made["old plain"]["priority"] == "none" and made["old plain"]["author"] == "Sam"
    notes = await _ok(await http.get(path, headers=SUPPORT))
    assert [n["text"] for n in notes["notes"]] == ["new high", "old high", "new medium", "old medium", "new plain",
                                                   "old plain"]
    page = await _ok(await http.get(path, params={"limit": 2, "offset": 2}, headers=SUPPORT))
    assert [n["text"] for n in page["notes"]] == ["new medium", "old medium"] and page["next_offset"] == 4

    r = await http.patch(f"{path}/{made['old plain']['id']}", json={"priority": "high"}, headers=SUPPORT)
    assert (await _ok(r))["priority"] == "high"
    r = await http.patch(f"{path}/{made['new high']['id']}", json={"priority": "urgent"}, headers=SUPPORT)
    assert r.status == 422 and "priority is one of high, medium, none" in (await r.json())["error"]["message"]
    assert (await http.delete(f"{path}/{made['old medium']['id']}", headers=SUPPORT)).status == 200
    assert (await http.delete(f"{path}/{made['old medium']['id']}", headers=SUPPORT)).status == 404
    detail = await _ok(await http.get(f"/api/crm/contacts/{ann['id']}", headers=SUPPORT))
    assert [n["text"] for n in detail["notes"]] == ["new high", "old high", "old plain", "new medium", "new plain"]
    assert detail["notes_total"] == 5
    assert (await http.post(path, json={"text": "  "}, headers=SUPPORT)).status == 422
    assert (await http.post("/api/crm/contacts/999/notes", json={"text": "x"}, headers=SUPPORT)).status == 404

    lead = await _ok(await http.post("/api/crm/leads", json={"name": "Order"}, headers=SUPPORT), 201)
    lead_notes = f"/api/crm/leads/{lead['id']}/notes"
    await _ok(await http.post(lead_notes, json={"text": "call back", "priority": "medium"}, headers=SUPPORT), 201)
    await _ok(await http.post(lead_notes, json={"text": "urgent", "priority": "high"}, headers=SUPPORT), 201)
    listing = await _ok(await http.get(lead_notes, headers=SUPPORT))
    assert [n["text"] for n in listing["notes"]] == ["urgent", "call back"]
    doc = await (await http.get("/api/openapi.json")).json()
    _validate(doc, "/api/crm/leads/{id}/notes", "get", 200, listing)


async def test_flow_commands_keep_the_indexes_and_notes(server: TestServer, http: ClientSession) -> None:
    crm = server.app[SERVICES].crm
    ref = await crm.identify(ChannelIdentity("livechat", "demo", "s-1", name="Deniz Ak", email="deniz@example.com"))
    assert await _names(http, q="deniz") == ["Deniz Ak"]
    assert await _names(http, "/api/crm/leads", stage="Incoming") == ["Deniz Ak"]
    await crm.execute(ref, {"do": "set_field", "entity": "contact", "field": "temperature", "value": "warm"})
    await crm.execute(ref, {"do": "set_field", "entity": "contact", "field": "name", "value": "Deniz Aksoy"})
    await crm.execute(ref, {"do": "tags", "entity": "lead", "add": ["bot"]})
    await crm.execute(ref, {"do": "change_stage", "stage": "Won"})
    await crm.execute(ref, {"do": "add_note", "entity": "contact", "text": "from the bot"})
    assert await _names(http, temperature="warm") == ["Deniz Aksoy"]
    assert await _names(http, q="aksoy") == ["Deniz Aksoy"]
    assert await _names(http, "/api/crm/leads", stage="Won", tag="bot") == ["Deniz Ak"]
    assert await _names(http, "/api/crm/leads", stage="Incoming") == []
    assert await _names(http, stage="Won") == ["Deniz Aksoy"]
    notes = await _ok(await http.get(f"/api/crm/contacts/{ref.contact_id}/notes", headers=SUPPORT))
    assert [(n["text"], n["priority"]) for n in notes["notes"]] == [("from the bot", "none")]
    assert [n["text"] for n in await crm.lead_notes(CrmRef(ref.contact_id, ref.lead_id))] == ["from the bot"]
    # a card value a flow may not set is the step's failure, as for any rejected command
    from bot.errors import CrmRejected

    with pytest.raises(CrmRejected, match="temperature is one of"):
        await crm.execute(ref, {"do": "set_field", "entity": "contact", "field": "temperature", "value": "boiling"})


async def test_wrong_types_and_control_characters_are_refused_naming_the_field(http: ClientSession) -> None:
    ann = await _contact(http, name="Ann Lee")
    path = f"/api/crm/contacts/{ann['id']}"
    for bad, message in [({"name": -1e308}, "name is text"), ({"name": ["Ann"]}, "name is text"),
                         ({"name": True}, "name is text"), ({"name": "x\u001fy"}, "name holds a control character"),
                         ({"name": "a\x00b"}, "name holds a control character"),
                         ({"first_name": "z\u2028y"}, "first_name holds a control character"),
                         ({"tags": ["a\u001fb"]}, "a tag holds a control character"),
                         ({"tags": [True]}, "tags is a list")]:
        r = await http.patch(path, json=bad, headers=SUPPORT)
        body = await r.json()
        assert r.status == 422 and message in body["error"]["message"], (bad, body)
    r = await http.post("/api/crm/contacts", json={"name": "a\x00b"}, headers=SUPPORT)
    assert r.status == 422
    notes = f"/api/crm/contacts/{ann['id']}/notes"
    for text in (["n"], {"x": "n"}, True, 5, "esc\x1bape"):
        r = await http.post(notes, json={"text": text}, headers=SUPPORT)
        assert r.status == 422, text
    note = await _ok(await http.post(notes, json={"text": "two\nlines\tand a tab"}, headers=SUPPORT), 201)
    assert note["text"] == "two\nlines\tand a tab"  # line breaks and tabs are text
    r = await http.patch(f"{notes}/{note['id']}", json={"text": ["n"]}, headers=SUPPORT)
    assert r.status == 422
    r = await http.patch(f"{notes}/{note['id']}", json={"priority": "high"}, headers=SUPPORT)
    assert (await _ok(r))["text"] == "two\nlines\tand a tab"  # a priority change keeps the text
    assert (await _ok(await http.get(path, headers=SUPPORT)))["name"] == "Ann Lee"  # nothing was stored


async def test_an_older_notes_priority_can_change_whatever_its_text(server: TestServer, http: ClientSession) -> None:
    ann = await _contact(http, name="Ann Lee")
    old = {"id": "n-old", "entity": "contact", "entity_id": str(ann["id"]), "text": "from a flow \x1b[1m",
           "priority": "none", "created_at": 1.0, "updated_at": 1.0, "author": None}
    await server.app[SERVICES].crm.notes.put(old)  # stored before the text checks, or by a flow's add_note
    r = await http.patch(f"/api/crm/contacts/{ann['id']}/notes/n-old", json={"priority": "high"}, headers=SUPPORT)
    assert (await _ok(r))["priority"] == "high"
