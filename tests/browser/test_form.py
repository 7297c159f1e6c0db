"""The hosted form of ``create_form`` in a real Chromium: a flow sends the link, the customer
fills the form in (a mistake first, then right), and the lead is updated, as the CRM API shows.

Async Playwright inside an async test, against an in-process server on a loopback port; the
tier is skipped (or failed, with ``SALESBOT_REQUIRE_ALL_TIERS=1``) without Chromium, through
the ``chromium_executable`` fixture of ``conftest.py``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tests.browser.conftest import CHROMIUM_ARGS, EXPECT_TIMEOUT_MS
from tests.live_app import running_app

FLOW: dict[str, Any] = {
    "form": {"type": "action", "actions": [
        {"do": "create_form", "form": "individual", "fields": ["name", "email", "phone", "budget", "comment"],
         "tags": ["web-form"], "stage": "Qualified"}], "next": "link"},
    "link": {"type": "message", "text": "Please fill in our form: {{ vars.form_url }}"},
}


async def test_customer_fills_in_the_hosted_form(chromium_executable: str, artifacts: Path, redis: Any,
                                                 redis_url: str) -> None:
    from playwright.async_api import async_playwright, expect

    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    async with running_app(redis_url, embedded_crm={"pipelines": {"Sales": ["Incoming", "Qualified", "Won"]}}) as app:
        await app.put_flow(FLOW, "form")
        cid, texts = await app.say("browser-form-1", "hello")
        found = re.search(r"http://\S+/forms/[A-Za-z0-9_-]+", texts[0])
        assert found, texts
        url = found.group(0)

        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=chromium_executable, headless=True, args=CHROMIUM_ARGS)
            page = None
            try:
                context = await browser.new_context(viewport={"width": 420, "height": 800})
                page = await context.new_page()
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                await page.goto(url)
                await expect(page.get_by_role("heading", name="Your details")).to_be_visible()
                await page.get_by_label("Name").fill("Ayşe <Yılmaz>")
                await page.get_by_label("E-mail").fill("not an address")
                await page.get_by_label("Phone").fill("+90 555 111 22 33")
                await page.get_by_label("Budget").fill("5000 TL")
                await page.get_by_label("Comment").fill("Call after 6 pm, please.")
                await page.get_by_role("button", name="Send").click()

                await expect(page.get_by_role("alert")).to_have_count(1)
                await expect(page.get_by_role("alert")).to_contain_text("email address")
                await expect(page.get_by_label("Name")).to_have_value("Ayşe <Yılmaz>")  # kept, as text
                await page.get_by_label("E-mail").fill("ayse@example.com")
                await page.get_by_role("button", name="Send").click()
                await expect(page.get_by_role("heading", name="Thank you!")).to_be_visible()
                await expect(page.locator("#message")).to_have_text("We have received your details.")

                await page.goto(url)  # the link worked once
                await expect(page.get_by_role("heading", name="Thank you!")).to_be_visible()
                await expect(page.locator("#message")).to_contain_text("sent already")
                assert errors == []
            except BaseException:
                if page is not None:
                    await page.screenshot(path=str(artifacts / "FAILED-test_customer_fills_in_the_hosted_form.png"),
                                          full_page=True)
                raise
            finally:
                await browser.close()

        lead_id = (await app.conversation(cid))["lead_id"]
        lead = await app.api("GET", f"/api/crm/leads/{lead_id}")
        assert lead["stage"] == "Qualified" and "web-form" in lead["tags"]
        assert lead["fields"] == {"budget": "5000 TL", "comment": "Call after 6 pm, please."}
        contact = lead["contacts"][0]
        assert (contact["name"], contact["email"], contact["phone"]) == \
            ("Ayşe <Yılmaz>", "ayse@example.com", "+90 555 111 22 33")
        found_by_phone = await app.api("GET", "/api/crm/contacts", params={"q": "5551112233"})
        assert [c["id"] for c in found_by_phone["contacts"]] == [contact["id"]]
