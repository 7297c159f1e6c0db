"""The quick-order page of a large catalogue: the form a browser posts carries a field per product
(empty ones too), so a shop of a thousand products must still take an order from it."""

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
