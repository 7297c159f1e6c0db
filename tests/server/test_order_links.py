"""Quick-order links over real HTTP: the API that makes, lists and revokes them, the public page
``/order/<token>`` (the customer's language and prices, the order placed once per submit key,
a clear page for a bad, expired or revoked link), its limits, and the flow action end to end."""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import pytest
from redis.asyncio import Redis

from crm_bridge import records
from tests.live_app import AUTH, App, running_app

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
SUPPORT = {"Authorization": "Bearer support-token-1"}
TOKENS = [{"token": "support-token-1", "role": "support", "name": "sue"}]
#: The page's own limits out of the way of the tests that are not about them.
ROOMY = {name: {"per_minute": 6000, "burst": 1000}
         for name in ("order_views_per_link", "order_submits_per_ip", "order_submits_per_link")}


@contextlib.asynccontextmanager
async def shop_app(redis_url: str, **config: Any) -> AsyncIterator[App]:
    async with running_app(redis_url, tokens=TOKENS, **config) as running:
        shop = running.services.shop
        await shop.put_product("tea", {"name": {"en": "Tea", "tr": "Çay"}, "prices": {"TRY": 120, "EUR": 3.5}})
        await shop.put_product("cup", {"name": "<b>Cup</b> & saucer", "prices": {"TRY": 300}})
        await shop.put_product("old", {"name": "Old", "prices": {"TRY": 1}, "active": False})
        yield running


@pytest.fixture
async def app(redis: Redis, redis_url: str) -> AsyncIterator[App]:
    async with shop_app(redis_url, limits=ROOMY) as running:
        yield running


async def customer(app: App, **card: Any) -> str:
    assert app.services.directory is not None
    contact = await app.services.directory.create_contact({"name": "Ayşe", **card})
    return str(contact["id"])


async def link(app: App, cid: str, body: Any = None) -> dict[str, Any]:
    made: dict[str, Any] = await app.api("POST", f"/api/customers/{cid}/order-link", 201,
                                         **({} if body is None else {"json": body}))
    return made


def path_of(url: str) -> str:
    found = re.match(r"^http://127\.0\.0\.1:\d+(/order/[A-Za-z0-9_.=-]+)$", url)
    assert found, url
    return found.group(1)


def submit_key(html: str) -> str:
    found = re.search(r'name="key" value="([A-Za-z0-9_-]+)"', html)
    assert found, html
    return found.group(1)


# ---------------------------------------------------------------------- the API
async def test_support_makes_lists_and_revokes_a_customers_links(app: App) -> None:
    cid = await customer(app)
    r = await app.http.post(f"/api/customers/{cid}/order-link", json={"expires": "7d"}, headers=SUPPORT)
    assert r.status == 201
    made = await r.json()
    assert set(made) == {"id", "url", "expires_at"}
    assert made["expires_at"] - time.time() == pytest.approx(7 * 86400, abs=5)
    second = await link(app, cid)
    assert second["expires_at"] - time.time() == pytest.approx(30 * 86400, abs=5)  # the default
    listed = (await app.api("GET", f"/api/customers/{cid}/order-links"))["links"]
    assert {x["id"] for x in listed} == {made["id"], second["id"]} and {x["status"] for x in listed} == {"active"}
    assert {x["by"] for x in listed} == {"sue", "admin"}
    r = await app.http.delete(f"/api/customers/{cid}/order-links/{made['id']}", headers=SUPPORT)
    assert r.status == 200 and (await r.json())["status"] == "revoked"
    assert (await app.http.get(path_of(made["url"]))).status == 410
    assert (await app.http.get(path_of(second["url"]))).status == 200
    await app.api("DELETE", f"/api/customers/{cid}/order-links/nope", 404)


@pytest.mark.parametrize("body", [
    b"[]", b'{"expires": "soon"}', b'{"expires": 60}', b'{"expires": NaN}', b'{"expires": 1.5}',
    b'{"expires": "400d"}', b'{"expires": true}', b'{"url": "x"}', b"[" * 5000 + b"]" * 5000, b"{",
    '{"expires": "7d\u0000"}'.encode(),
])
async def test_a_bad_body_is_a_400_or_422_never_a_link(app: App, body: bytes) -> None:
    cid = await customer(app)
    r = await app.http.post(f"/api/customers/{cid}/order-link", data=body,
                            headers={**AUTH, "Content-Type": "application/json"})
    assert r.status in (400, 422), await r.text()
    assert "error" in await r.json()
    assert (await app.api("GET", f"/api/customers/{cid}/order-links"))["links"] == []


async def test_unknown_customers_bad_ids_and_roles_are_refused(app: App) -> None:
    cid = await customer(app)
    for bad in ("999999", "a%00b", "%E2%80%AE", "x" * 300):
        r = await app.http.post(f"/api/customers/{bad}/order-link", headers=AUTH)
        assert r.status == 404, bad
        r = await app.http.get(f"/api/customers/{bad}/order-links", headers=AUTH)
        assert r.status == 404, bad
    assert (await app.http.post(f"/api/customers/{cid}/order-link")).status == 401
    r = await app.http.post(f"/api/customers/{cid}/order-link", headers={"Authorization": "Bearer wrong-token"})
    assert r.status == 401
    r = await app.http.get(f"/api/customers/{cid}/order-links")
    assert r.status == 401


# ---------------------------------------------------------------------- the page
async def test_the_page_shows_the_customers_prices_in_their_language_and_places_one_order(app: App) -> None:
    cid = await customer(app, currency="TRY", language="tr-TR", discount=10)
    page = path_of((await link(app, cid))["url"])
    r = await app.http.get(page)
    html = await r.text()
    assert r.status == 200 and '<html lang="tr">' in html
    assert r.headers["Content-Security-Policy"].startswith("default-src 'none'; script-src 'self'")
    assert "Çay" in html and "Old" not in html  # translated; inactive left out
    assert "&lt;b&gt;Cup&lt;/b&gt; &amp; saucer" in html and "<b>Cup" not in html  # markup shown as text
    assert "%10 indiriminiz" in html
    assert "₺120,00" in html and "₺108,00" in html  # base struck through, the customer's price
    key = submit_key(html)
    form = {"key": key, "q:tea": "2", "q:cup": "0"}
    r = await app.http.post(page, data=form)
    done = await r.text()
    assert r.status == 200, done
    assert "Teşekkürler!" in done
    number = re.search(r"Sipariş numaranız: (\d+)", done)
    assert number, done
    assert "₺216,00" in done  # 2 × 108 on the server
    again = await app.http.post(page, data=form)  # a retry of the same submit: the same order
    assert again.status == 200 and f"Sipariş numaranız: {number.group(1)}." in await again.text()
    assert await app.services.shop.order_counts([cid]) == {cid: 1}
    order = await app.services.shop.order(number.group(1))
    assert (order["source"], order["customer"], order["total"]) == ("order_link", cid, 216)


async def test_taps_of_one_form_at_the_same_moment_place_one_order(app: App) -> None:
    cid = await customer(app, currency="TRY")
    page = path_of((await link(app, cid))["url"])
    form = {"key": submit_key(await (await app.http.get(page)).text()), "q:tea": "1"}
    answers = await asyncio.gather(*(app.http.post(page, data=form) for _ in range(3)))
    numbers = {re.search(r"order number is (\d+)", await r.text()).group(1) for r in answers}  # type: ignore[union-attr]
    assert [r.status for r in answers] == [200, 200, 200] and len(numbers) == 1
    assert await app.services.shop.order_counts([cid]) == {cid: 1}


async def test_a_customer_whose_currency_nothing_is_priced_in_sees_nothing_to_order(app: App) -> None:
    cid = await customer(app, currency="JPY")
    r = await app.http.get(path_of((await link(app, cid))["url"]))
    html = await r.text()
    assert r.status == 200 and "There is nothing to order right now." in html and "Tea" not in html
    assert (await app.http.post(path_of((await link(app, cid))["url"]), data={"q:tea": "1"})).status == 422


async def test_a_client_cannot_set_prices_or_order_what_is_not_on_sale(app: App) -> None:
    cid = await customer(app, currency="TRY", language="de")
    page = path_of((await link(app, cid))["url"])
    key = submit_key(await (await app.http.get(page)).text())
    for form, status, text in [
        ({"key": key}, 422, "mindestens ein Produkt"),
        ({"key": key, "q:tea": "0"}, 422, "mindestens ein Produkt"),
        ({"key": key, "q:tea": "-1"}, 422, "0 bis 999"),
        ({"key": key, "q:tea": "1000"}, 422, "0 bis 999"),
        ({"key": key, "q:tea": "1e3"}, 422, "0 bis 999"),
        ({"key": key, "q:tea": "NaN"}, 422, "0 bis 999"),
        ({"key": key, "q:tea": "１"}, 422, "0 bis 999"),  # a full-width digit
        ({"key": key, "q:old": "1"}, 422, "Wir konnten diese Bestellung nicht annehmen"),
        ({"key": key, "q:nope\u0000": "1"}, 422, "Wir konnten diese Bestellung nicht annehmen"),
    ]:
        r = await app.http.post(page, data=urlencode(form), headers=FORM)
        assert r.status == status and text in await r.text(), form
    assert await app.services.shop.order_counts([cid]) == {cid: 0}
    r = await app.http.post(page, data={"key": key, "q:tea": "1", "unit_price": "0.01", "price:tea": "0"})
    assert r.status == 200
    assert (await app.services.shop.order_counts([cid])) == {cid: 1}
    orders, _ = await app.services.shop.list_orders(customer=cid)
    assert orders[0]["total"] == 120


async def test_bad_expired_and_revoked_links_get_a_clear_page_and_no_data(app: App) -> None:
    cid = await customer(app, currency="TRY")
    made = await link(app, cid, {"expires": "1h"})
    page = path_of(made["url"])
    for bad in ("/order/nope", "/order/" + "A" * 600, page[:-3] + "xyz", "/order/%E2%80%AE"):
        r = await app.http.get(bad, headers={"Accept-Language": "fr-FR,fr;q=0.9"})
        html = await r.text()
        assert r.status == 404 and "Lien non valide" in html and "Çay" not in html and "Tea" not in html
        assert (await app.http.post(bad, data={"q:tea": "1"})).status == 404
    links = app.services.order_links
    assert links is not None
    links.clock = lambda: time.time() + 2 * 3600
    r = await app.http.get(page)
    assert r.status == 410 and "expired" in await r.text()
    assert (await app.http.post(page, data={"key": "k" * 10, "q:tea": "1"})).status == 410
    links.clock = time.time
    await app.api("DELETE", f"/api/customers/{cid}/order-links/{made['id']}")
    r = await app.http.get(page, headers={"Accept-Language": "ru"})
    assert r.status == 410 and "отозвана" in await r.text()
    assert await app.services.shop.order_counts([cid]) == {cid: 0}


async def test_a_link_of_a_deleted_customer_is_not_valid(app: App) -> None:
    cid = await customer(app, currency="TRY")
    page = path_of((await link(app, cid))["url"])
    await app.services.redis.hdel(*records.at("contact", cid))  # gone from the CRM
    assert (await app.http.get(page)).status == 404


async def test_views_and_submits_are_limited_per_link(redis: Redis, redis_url: str) -> None:
    async with shop_app(redis_url) as app:
        await _limited(app)


async def _limited(app: App) -> None:
    cid = await customer(app, currency="TRY")
    page = path_of((await link(app, cid))["url"])
    statuses = [(await app.http.post(page, data={"q:tea": "0"})).status for _ in range(5)]
    assert statuses[:3] == [422, 422, 422] and statuses[3:] == [429, 429]  # burst 3 per link
    r = await app.http.post(page, data={"q:tea": "0"})
    assert r.status == 429 and int(r.headers["Retry-After"]) >= 1
    statuses = [(await app.http.get(page)).status for _ in range(25)]
    assert statuses.count(200) == 20 and statuses[-1] == 429  # burst 20 views per link


# ---------------------------------------------------------------------- the flow action
async def test_a_flow_sends_a_working_order_link(redis: Redis, redis_url: str) -> None:
    async with running_app(redis_url) as app:
        await app.services.shop.put_product("tea", {"name": "Tea", "prices": {"EUR": 3.5}})
        await app.put_flow({
            "link": {"type": "action", "actions": [{"do": "order_link", "expires": "2d"}], "next": "say",
                     "failed": "sorry"},
            "say": {"type": "message", "text": "Order here: {{ vars.order_url }}"},
            "sorry": {"type": "message", "text": "no link"},
        }, "link")
        cid, texts = await app.say("order-link-1", "hello")
        found = re.search(r"Order here: (http://\S+)", texts[0])
        assert found, texts
        lead = await app.api("GET", f"/api/crm/leads/{(await app.conversation(cid))['lead_id']}")
        contact = lead["contacts"][0]["id"]
        listed = (await app.api("GET", f"/api/customers/{contact}/order-links"))["links"]
        assert [(x["source"], x["by"], x["url"]) for x in listed] == [("flow", "demo", found.group(1))]
        assert listed[0]["expires_at"] - time.time() == pytest.approx(2 * 86400, abs=10)
        r = await app.http.get(path_of(found.group(1)))
        assert r.status == 200 and "Tea" in await r.text()


async def test_hostile_submits_are_4xx_pages_never_a_5xx_or_an_order(app: App) -> None:
    cid = await customer(app, currency="TRY")
    page = path_of((await link(app, cid))["url"])
    many = "&".join(f"q:x{i}=1" for i in range(1500))
    for body, content_type in [
        (b'{"q:tea": 1}', "application/json"),
        (b"\xff\xfe\x00garbage", "application/x-www-form-urlencoded"),
        (many.encode(), "application/x-www-form-urlencoded"),
        (b"q%3Atea=" + b"9" * 100_000, "application/x-www-form-urlencoded"),
        (b"q:tea=1&key=" + b"k" * 3_000_000, "application/x-www-form-urlencoded"),
        (b"--b\r\nContent-Disposition: form-data; name=\"q:tea\"\r\n\r\n1\r\n", "multipart/form-data; boundary=b"),
    ]:
        r = await app.http.post(page, data=io.BytesIO(body), headers={"Content-Type": content_type})
        assert 400 <= r.status < 500, (content_type, r.status, await r.text())
    assert await app.services.shop.order_counts([cid]) == {cid: 0}


async def test_a_large_order_placed_on_the_page_shows_its_confirmation(app: App) -> None:
    """review15: the confirmation turned the total back into minor units with a unit price's bound."""
    await app.services.shop.put_product("car", {"name": "Car", "prices": {"EUR": 900_000_000}})
    cid = await customer(app, currency="EUR")
    page = path_of((await link(app, cid))["url"])
    form = {"key": submit_key(await (await app.http.get(page)).text()), "q:car": "2"}
    r = await app.http.post(page, data=form)
    assert r.status == 200, await r.text()
    assert "€1,800,000,000.00" in await r.text()
