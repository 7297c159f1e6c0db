"""The quick-order page in a real Chromium at a phone's viewport (390×844): a customer opens the
link, sees their prices (a name with markup shown as text), fills the cart with the + buttons,
orders and sees the order number; the order is in the shop at once. Without JavaScript the page
is still a form that orders. No script error and no CSP violation on the way.

Async Playwright inside an async test, against an in-process server on a loopback port (like
test_form.py); skipped or failed without Chromium through the ``chromium_executable`` fixture.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tests.browser.conftest import CHROMIUM_ARGS, EXPECT_TIMEOUT_MS
from tests.live_app import App, running_app

PHONE = {"width": 390, "height": 844}


async def _shop(app: App) -> tuple[str, str]:
    shop = app.services.shop
    await shop.put_product("tea", {"name": {"en": "Tea", "es": "Té"}, "description": "Black, 250 g",
                                   "prices": {"EUR": 3.5}})
    await shop.put_product("cup", {"name": "<img src=x onerror=alert(1)> Cup", "prices": {"EUR": 9.99}})
    assert app.services.directory is not None
    contact = await app.services.directory.create_contact({"name": "Lucía", "currency": "EUR", "language": "es",
                                                           "discount": 20})
    cid = str(contact["id"])
    made = await app.api("POST", f"/api/customers/{cid}/order-link", 201)
    return cid, str(made["url"])


async def test_a_customer_orders_on_a_phone(chromium_executable: str, artifacts: Path, redis: Any,
                                            redis_url: str) -> None:
    from playwright.async_api import async_playwright, expect

    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    async with running_app(redis_url) as app:
        cid, url = await _shop(app)
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=chromium_executable, headless=True, args=CHROMIUM_ARGS)
            page = None
            try:
                context = await browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
                page = await context.new_page()
                problems: list[str] = []
                page.on("pageerror", lambda exc: problems.append(str(exc)))
                page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
                page.on("dialog", lambda dialog: problems.append("dialog: " + dialog.message))
                page.on("response", lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 else None)
                await page.goto(url)
                await expect(page.get_by_role("heading", name="Pedido")).to_be_visible()
                await expect(page.locator("#discount")).to_contain_text("20")
                await expect(page.get_by_text("<img src=x onerror=alert(1)> Cup")).to_be_visible()  # as text
                await expect(page.get_by_text("Té", exact=True)).to_be_visible()
                assert await page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]

                more_tea = page.get_by_role("button", name="Uno más: Té")
                await more_tea.tap()
                await more_tea.tap()
                await page.get_by_role("button", name=re.compile(r"^Uno más: .*Cup$")).tap()
                await expect(page.locator("#cart-count")).to_have_text("3")
                # 2 × 2.80 + 7.99 (9.99 − 20 %, half up) = 13.59
                await expect(page.locator("#cart-total")).to_have_text(re.compile(r"13,59\s€"))
                place = page.get_by_role("button", name="Hacer el pedido")
                await expect(place).to_be_in_viewport()  # the bar stays on screen
                await place.tap()

                await expect(page.get_by_role("heading", name="¡Gracias!")).to_be_visible()
                await expect(page.locator("#message")).to_contain_text(re.compile(r"Su número de pedido es \d+\."))
                await expect(page.locator("#total")).to_have_text(re.compile(r"13,59\s€"))
                number = re.search(r"(\d+)\.$", await page.locator("#message").inner_text())
                assert number is not None
                order = await app.services.shop.order(number.group(1))
                assert (order["customer"], order["total"], order["source"]) == (cid, 13.59, "order_link")
                assert problems == []
            except BaseException:
                if page is not None:
                    await page.screenshot(path=str(artifacts / "FAILED-test_a_customer_orders_on_a_phone.png"),
                                          full_page=True)
                raise
            finally:
                await browser.close()


async def test_without_javascript_the_page_is_a_form_that_orders(chromium_executable: str, artifacts: Path,
                                                                 redis: Any, redis_url: str) -> None:
    from playwright.async_api import async_playwright, expect

    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    async with running_app(redis_url) as app:
        cid, url = await _shop(app)
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=chromium_executable, headless=True, args=CHROMIUM_ARGS)
            page = None
            try:
                context = await browser.new_context(viewport=PHONE, java_script_enabled=False)
                page = await context.new_page()
                await page.goto(url)
                await expect(page.get_by_role("button", name="Uno más: Té")).to_have_count(0)  # no script ran
                await page.locator("input[name='q:tea']").fill("4")
                await page.get_by_role("button", name="Hacer el pedido").click()
                await expect(page.get_by_role("heading", name="¡Gracias!")).to_be_visible()
                await expect(page.locator("#total")).to_have_text(re.compile(r"11,20\s€"))
                assert await app.services.shop.order_counts([cid]) == {cid: 1}
            except BaseException:
                if page is not None:
                    await page.screenshot(path=str(artifacts / "FAILED-test_without_javascript.png"), full_page=True)
                raise
            finally:
                await browser.close()


async def test_a_price_changed_while_the_page_is_open_is_shown_before_anything_is_ordered(
        chromium_executable: str, artifacts: Path, redis: Any, redis_url: str) -> None:
    from playwright.async_api import async_playwright, expect

    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    async with running_app(redis_url) as app:
        cid, url = await _shop(app)
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=chromium_executable, headless=True, args=CHROMIUM_ARGS)
            page = None
            try:
                context = await browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
                page = await context.new_page()
                await page.goto(url)
                await page.get_by_role("button", name="Uno más: Té").tap()
                await page.get_by_role("button", name="Uno más: Té").tap()
                await expect(page.locator("#cart-total")).to_have_text(re.compile(r"5,60\s€"))  # 2 × 2.80
                await app.services.shop.put_product("tea", {"name": {"en": "Tea", "es": "Té"},
                                                            "prices": {"EUR": 5}})  # the seller raises it
                await page.get_by_role("button", name="Hacer el pedido").tap()
                await expect(page.get_by_role("alert")).to_contain_text("Los precios han cambiado")
                assert await app.services.shop.order_counts([cid]) == {cid: 0}
                await expect(page.locator("input[name='q:tea']")).to_have_value("2")  # the cart is kept
                await expect(page.locator("#cart-total")).to_have_text(re.compile(r"8,00\s€"))  # 2 × 4.00
                await page.get_by_role("button", name="Hacer el pedido").tap()
                await expect(page.get_by_role("heading", name="¡Gracias!")).to_be_visible()
                await expect(page.locator("#total")).to_have_text(re.compile(r"8,00\s€"))
                assert await app.services.shop.order_counts([cid]) == {cid: 1}
            except BaseException:
                if page is not None:
                    await page.screenshot(path=str(artifacts / "FAILED-test_a_price_changed.png"), full_page=True)
                raise
            finally:
                await browser.close()
