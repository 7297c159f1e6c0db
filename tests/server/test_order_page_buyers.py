"""The quick-order page as buyers meet it: a large catalogue (the form a browser posts carries a
field per product, empty ones too, so a shop of a thousand products must still take an order), and
prices that change while the page is open (nothing is ordered at a price the buyer did not see)."""

from __future__ import annotations

import re

from tests.live_app import App
from tests.server.test_order_links import app, customer, link, path_of, submit_key

__all__ = ["app"]


async def test_a_catalogue_of_a_thousand_products_still_takes_an_order(app: App) -> None:
    for n in range(1000):
        await app.services.shop.put_product(f"bulk-{n:04}", {"name": f"Bulk {n}", "prices": {"TRY": 2}})
    cid = await customer(app, currency="TRY")
    page = path_of((await link(app, cid))["url"])
    html = await (await app.http.get(page)).text()
    names = re.findall(r'name="(q:[^"]+)"', html)
    assert len(names) == 1002  # tea, cup and the thousand
    form = [("key", submit_key(html)), *((name, "3" if name == "q:bulk-0500" else "") for name in names)]
    r = await app.http.post(page, data=form)  # as a browser sends it: every field, the empty ones too
    done = await r.text()
    assert r.status == 200, done[:300]
    assert re.search(r"order number is \d+", done) and "6.00</strong>" in done
    assert await app.services.shop.order_counts([cid]) == {cid: 1}


async def test_a_price_or_currency_changed_after_the_page_was_opened_is_not_ordered_unseen(app: App) -> None:
    cid = await customer(app, currency="TRY")
    page = path_of((await link(app, cid))["url"])
    html = await (await app.http.get(page)).text()
    form = {"key": submit_key(html), "shown": re.search(r'name="shown" value="([^"]*)"', html).group(1),  # type: ignore[union-attr]
            "q:tea": "2"}
    await app.services.shop.put_product("tea", {"name": "Tea", "prices": {"TRY": 150, "EUR": 3.5}})  # dearer now
    r = await app.http.post(page, data=form)
    again = await r.text()
    assert r.status == 409 and "Prices have changed" in again and "150.00" in again
    assert 'value="2"' in again  # the cart is kept
    assert await app.services.shop.order_counts([cid]) == {cid: 0}
    form["shown"] = re.search(r'name="shown" value="([^"]*)"', again).group(1)  # type: ignore[union-attr]
    r = await app.http.post(page, data=form)  # seen now: ordered at the new price
    assert r.status == 200 and "300.00" in await r.text()
    assert await app.services.shop.order_counts([cid]) == {cid: 1}
    assert app.services.directory is not None
    await app.services.directory.update_contact(cid, {"currency": "EUR"})  # the card's currency changed
    html = await (await app.http.get(page)).text()
    await app.services.directory.update_contact(cid, {"currency": "TRY"})
    form = {"key": submit_key(html), "shown": re.search(r'name="shown" value="([^"]*)"', html).group(1),  # type: ignore[union-attr]
            "q:tea": "1"}
    r = await app.http.post(page, data=form)
    assert r.status == 409 and "Prices have changed" in await r.text()
    assert await app.services.shop.order_counts([cid]) == {cid: 1}


async def test_a_body_that_is_not_a_form_is_a_400_page_not_an_empty_cart(app: App) -> None:
    cid = await customer(app, currency="TRY")
    page = path_of((await link(app, cid))["url"])
    for body, content_type in [(b'{"q:tea": 1}', "application/json"), (b"q:tea=1", "text/plain")]:
        r = await app.http.post(page, data=body, headers={"Content-Type": content_type})
        assert r.status == 400 and "Quantities are whole numbers" in await r.text(), content_type
    assert await app.services.shop.order_counts([cid]) == {cid: 0}
