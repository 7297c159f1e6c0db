"""``/api/products`` and ``/api/orders`` over HTTP: what a seller and an integration do, the roles,
and the OpenAPI document's schemas for every answer."""

from __future__ import annotations

from typing import Any

import jsonschema
from aiohttp import ClientSession
from redis.asyncio import Redis

from crm_bridge import records
from tests.shop.conftest import AS_ADMIN, AS_OPERATOR, AS_SUPPORT, customer, product


async def _doc(api: ClientSession) -> dict[str, Any]:
    doc: dict[str, Any] = await (await api.get("/api/openapi.json")).json()
    return doc


def _valid(doc: dict[str, Any], path: str, method: str, status: int, body: Any) -> None:
    schema = doc["paths"][path][method]["responses"][str(status)]["content"]["application/json"]["schema"]
    jsonschema.validate(body, {**schema, "components": doc["components"]}, cls=jsonschema.Draft202012Validator)


async def test_a_seller_fills_the_catalogue_and_reads_it(api: ClientSession) -> None:
    doc = await _doc(api)
    r = await api.put("/api/products/tea-1", headers=AS_OPERATOR, json={
        "name": {"en": "Black tea", "tr": "Siyah çay"}, "description": "Loose leaf\n250 g",
        "image_url": "https://shop.example/tea.png", "prices": {"TRY": 1200, "EUR": 35.5, "JPY": 4000}})
    assert r.status == 201
    created = await r.json()
    _valid(doc, "/api/products/{sku}", "put", 201, created)
    assert created["prices"] == {"TRY": 1200, "EUR": 35.5, "JPY": 4000}
    assert created["description"] == {"en": "Loose leaf\n250 g"} and created["active"] is True
    r = await api.put("/api/products/tea-1", headers=AS_ADMIN, json={"name": "Tea", "prices": {"EUR": 36},
                                                                      "active": False})
    assert r.status == 200
    await product(api, "cup", prices={"EUR": 9.99})
    r = await api.get("/api/products", headers=AS_SUPPORT)
    listing = await r.json()
    _valid(doc, "/api/products", "get", 200, listing)
    assert [p["sku"] for p in listing["products"]] == ["cup", "tea-1"]
    r = await api.get("/api/products", params={"active": "true"}, headers=AS_SUPPORT)
    assert [p["sku"] for p in (await r.json())["products"]] == ["cup"]
    r = await api.get("/api/products/tea-1", headers=AS_SUPPORT)
    _valid(doc, "/api/products/{sku}", "get", 200, await r.json())
    assert (await r.json())["prices"] == {"EUR": 36}
    assert (await api.delete("/api/products/tea-1", headers=AS_OPERATOR)).status == 204
    r = await api.get("/api/products/tea-1", headers=AS_SUPPORT)
    assert r.status == 404
    _valid(doc, "/api/products/{sku}", "get", 404, await r.json())
    assert (await api.delete("/api/products/tea-1", headers=AS_OPERATOR)).status == 404


async def test_support_reads_the_catalogue_but_may_not_change_it(api: ClientSession) -> None:
    r = await api.put("/api/products/tea", json={"name": "Tea", "prices": {"EUR": 1}}, headers=AS_SUPPORT)
    assert r.status == 403
    assert (await api.delete("/api/products/tea", headers=AS_SUPPORT)).status == 403
    assert (await api.get("/api/products")).status == 401
    assert (await api.get("/api/orders")).status == 401
    assert (await api.post("/api/orders", json={})).status == 401


async def test_an_order_is_made_listed_and_followed_to_delivery_with_its_history(api: ClientSession) -> None:
    doc = await _doc(api)
    await product(api, "tea", prices={"EUR": 3.5, "JPY": 500})
    await product(api, "cup", prices={"EUR": 9.99})
    cid = await customer(api, name="Ayşe", currency="EUR", discount=25)
    r = await api.post("/api/orders", headers=AS_SUPPORT,
                       json={"customer": cid, "items": [{"sku": "cup", "qty": 3}, {"sku": "tea"}]})
    assert r.status == 201, await r.text()
    order = await r.json()
    _valid(doc, "/api/orders", "post", 201, order)
    assert (order["total"], order["status"], order["payment"], order["source"]) == (25.1, "new", "unpaid", "api")
    assert order["history"][0]["by"] == "Sam"
    card = await (await api.get(f"/api/crm/contacts/{cid}", headers=AS_ADMIN)).json()
    assert card["status"] == "current"
    oid = order["id"]
    r = await api.patch(f"/api/orders/{oid}", json={"status": "confirmed", "payment": "paid"}, headers=AS_SUPPORT)
    assert r.status == 200
    _valid(doc, "/api/orders/{id}", "patch", 200, await r.json())
    r = await api.patch(f"/api/orders/{oid}", json={"status": "shipped", "tracking": " TR123 "}, headers=AS_ADMIN)
    changed = await r.json()
    assert (changed["status"], changed["payment"], changed["tracking"]) == ("shipped", "paid", "TR123")
    assert [(h["by"], h["field"], h["from"], h["to"]) for h in changed["history"]] == [
        ("Sam", "status", None, "new"), ("Sam", "status", "new", "confirmed"), ("Sam", "payment", "unpaid", "paid"),
        ("admin", "status", "confirmed", "shipped"), ("admin", "tracking", None, "TR123")]
    r = await api.patch(f"/api/orders/{oid}", json={"status": "new"}, headers=AS_SUPPORT)
    assert r.status == 422 and "cannot become new" in (await r.json())["error"]["message"]
    _valid(doc, "/api/orders/{id}", "patch", 422, await r.json())
    r = await api.get(f"/api/orders/{oid}", headers=AS_OPERATOR)
    _valid(doc, "/api/orders/{id}", "get", 200, await r.json())
    assert (await r.json())["status"] == "shipped"


async def test_the_list_filters_by_status_payment_and_customer_and_pages(api: ClientSession) -> None:
    doc = await _doc(api)
    await product(api, "tea", prices={"EUR": 1})
    one, two = await customer(api, name="One"), await customer(api, name="Two")
    ids = []
    for n in range(5):
        r = await api.post("/api/orders", json={"customer": one if n % 2 else two, "items": [{"sku": "tea"}]},
                           headers=AS_SUPPORT)
        ids.append((await r.json())["id"])
    await api.patch(f"/api/orders/{ids[0]}", json={"payment": "paid"}, headers=AS_SUPPORT)
    await api.patch(f"/api/orders/{ids[3]}", json={"status": "cancelled"}, headers=AS_SUPPORT)
    r = await api.get("/api/orders", headers=AS_SUPPORT)
    listing = await r.json()
    _valid(doc, "/api/orders", "get", 200, listing)
    assert [o["id"] for o in listing["orders"]] == ids[::-1]
    assert listing["customers"] == {two: "Two", one: "One"}  # the rows' names, with the page
    as_operator = await (await api.get("/api/orders", headers=AS_OPERATOR)).json()
    _valid(doc, "/api/orders", "get", 200, as_operator)  # names are the CRM's, closed to operators
    assert [o["id"] for o in as_operator["orders"]] == ids[::-1] and "customers" not in as_operator
    assert (await api.get(f"/api/crm/contacts/{one}", headers=AS_OPERATOR)).status == 403

    async def ids_of(**query: Any) -> list[str]:
        found = await (await api.get("/api/orders", params=query, headers=AS_SUPPORT)).json()
        return [o["id"] for o in found["orders"]]
    assert await ids_of(customer=one) == [ids[3], ids[1]]
    assert await ids_of(status="cancelled") == [ids[3]]
    assert await ids_of(status="new", customer=two) == [ids[4], ids[2], ids[0]]
    assert await ids_of(payment="paid") == [ids[0]]
    assert await ids_of(payment="unpaid", status="new") == [ids[4], ids[2], ids[1]]
    page = await (await api.get("/api/orders", params={"limit": "2"}, headers=AS_SUPPORT)).json()
    assert [o["id"] for o in page["orders"]] == [ids[4], ids[3]]
    rest = await ids_of(limit="2", before=str(page["next_before"]))
    assert rest == [ids[2], ids[1]]


async def test_a_client_cannot_set_a_price(api: ClientSession) -> None:
    await product(api, "tea", prices={"EUR": 3.5})
    cid = await customer(api, currency="EUR")
    for item in ({"sku": "tea", "qty": 1, "unit_price": 0.01}, {"sku": "tea", "price": 0},
                 {"sku": "tea", "total": 0}):
        r = await api.post("/api/orders", json={"customer": cid, "items": [item]}, headers=AS_SUPPORT)
        assert r.status == 422
        assert "prices come from the catalogue" in (await r.json())["error"]["message"]
    r = await api.post("/api/orders", json={"customer": cid, "items": [{"sku": "tea"}], "total": 0},
                       headers=AS_SUPPORT)
    assert r.status == 422
    oid = (await (await api.post("/api/orders", json={"customer": cid, "items": [{"sku": "tea", "qty": 2}]},
                                 headers=AS_SUPPORT)).json())["id"]
    for patch in ({"total": 0}, {"items": []}, {"discount": 100}, {"currency": "JPY"}):
        r = await api.patch(f"/api/orders/{oid}", json=patch, headers=AS_SUPPORT)
        assert r.status == 422
    order = await (await api.get(f"/api/orders/{oid}", headers=AS_SUPPORT)).json()
    assert (order["total"], order["items"][0]["unit_price"]) == (7, 3.5)


async def test_an_order_keeps_the_prices_it_was_made_with(api: ClientSession) -> None:
    await product(api, "tea", prices={"EUR": 3.5})
    cid = await customer(api, currency="EUR", discount=10)
    order = await (await api.post("/api/orders", json={"customer": cid, "items": [{"sku": "tea"}]},
                                  headers=AS_SUPPORT)).json()
    await product(api, "tea", prices={"EUR": 99})
    await api.patch(f"/api/crm/contacts/{cid}", json={"discount": 0}, headers=AS_ADMIN)
    again = await (await api.get(f"/api/orders/{order['id']}", headers=AS_SUPPORT)).json()
    assert (again["items"][0]["base_price"], again["items"][0]["unit_price"], again["total"]) == (3.5, 3.15, 3.15)


async def test_an_idempotency_key_makes_a_retry_return_the_same_order(api: ClientSession) -> None:
    await product(api, "tea", prices={"EUR": 1})
    cid = await customer(api)
    body = {"customer": cid, "items": [{"sku": "tea"}]}
    first = await (await api.post("/api/orders", json=body, headers={**AS_SUPPORT, "Idempotency-Key": "a1"})).json()
    again = await (await api.post("/api/orders", json=body, headers={**AS_SUPPORT, "Idempotency-Key": "a1"})).json()
    assert first["id"] == again["id"]
    listing = await (await api.get("/api/orders", params={"customer": cid}, headers=AS_SUPPORT)).json()
    assert len(listing["orders"]) == 1


async def test_an_order_for_nobody_or_a_strangers_lead_is_refused(api: ClientSession) -> None:
    await product(api, "tea", prices={"EUR": 1})
    cid, other = await customer(api, name="Mine"), await customer(api, name="Other")
    r = await api.post("/api/orders", json={"customer": "98765", "items": [{"sku": "tea"}]}, headers=AS_SUPPORT)
    assert r.status == 404
    lead = await (await api.post("/api/crm/leads", json={"contact_id": other}, headers=AS_ADMIN)).json()
    r = await api.post("/api/orders", json={"customer": cid, "lead": lead["id"], "items": [{"sku": "tea"}]},
                       headers=AS_SUPPORT)
    assert r.status == 422 and "is not a lead of customer" in (await r.json())["error"]["message"]
    r = await api.post("/api/orders", json={"customer": other, "lead": lead["id"], "items": [{"sku": "tea"}]},
                       headers=AS_SUPPORT)
    assert r.status == 201 and (await r.json())["lead"] == str(lead["id"])



async def test_the_list_carries_its_customers_names(api: ClientSession, redis: Redis) -> None:
    """The names of a page's customers come with it (the browser reads no contact per row); a
    customer who is gone has none."""
    await product(api, "tea", prices={"EUR": 1})
    people = [await customer(api, name=f"Buyer {n}") for n in range(3)]
    for cid in people:
        assert (await api.post("/api/orders", json={"customer": cid, "items": [{"sku": "tea"}]},
                               headers=AS_SUPPORT)).status == 201
    await redis.hdel(*records.at("contact", people[0]))  # its record gone (the CRM has no contact delete)
    listing = await (await api.get("/api/orders", params={"limit": "2"}, headers=AS_SUPPORT)).json()
    assert listing["customers"] == {people[2]: "Buyer 2", people[1]: "Buyer 1"}
    everyone = await (await api.get("/api/orders", headers=AS_SUPPORT)).json()
    assert everyone["customers"] == {people[2]: "Buyer 2", people[1]: "Buyer 1", people[0]: None}
