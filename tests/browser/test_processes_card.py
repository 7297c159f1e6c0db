"""The lead card of ``/live`` lists the contact's processes and a person stops one, in a real
browser against a real ``salesbot serve`` (the pipeline view's lead panel)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .conftest import Server
from .test_pipeline import ARTIFACTS, call, column, open_pipeline

if TYPE_CHECKING:
    from playwright.sync_api import Page
try:
    from playwright.sync_api import expect
except ImportError:  # the conftest skips the tier, or fails it under SALESBOT_REQUIRE_ALL_TIERS=1
    expect = None  # type: ignore[assignment]


def _process(pid: str) -> dict[str, object]:
    return {"format": "salesbot.flow/1", "id": pid, "start": "wait",
            "steps": {"wait": {"type": "pause", "until": [{"on": "timer", "after": "30d", "next": "bye"}]},
                      "bye": {"type": "stop"}}}


def test_the_lead_card_lists_the_contacts_processes_and_stops_one(page: Page, salesbot_server: Server) -> None:
    for pid in ("nurture", "winback"):
        status, body = call(salesbot_server, "PUT", f"/api/bots/{pid}", _process(pid))
        assert status in (200, 201), body
    status, contact = call(salesbot_server, "POST", "/api/crm/contacts", {"name": "Process <i>Pat</i>"})
    assert status == 201, contact
    status, lead = call(salesbot_server, "POST", "/api/crm/leads",
                        {"name": "Processed lead", "stage": "Qualified", "contact_id": contact["id"]})
    assert status == 201, lead
    for pid in ("nurture", "winback"):
        status, body = call(salesbot_server, "POST", f"/api/processes/{pid}/contacts",
                            {"contact": {"id": contact["id"]}})
        assert status == 202 and body["status"] == "started", body

    open_pipeline(page, salesbot_server)
    column(page, "Qualified").locator(f'.pl-card[data-lead="{lead["id"]}"]').click()
    items = page.locator("#pl-lead-body ul.processes li.process")
    expect(items).to_have_count(2)
    nurture = page.locator('#pl-lead-body li.process[data-process="nurture"]')
    expect(nurture.locator(".chip")).to_have_text("waiting")
    expect(nurture).to_contain_text("at wait")
    nurture.get_by_role("button", name="Stop process nurture").click()
    expect(nurture.locator(".chip")).to_have_text("stopped")
    expect(nurture.get_by_role("button")).to_have_count(0)  # nothing left to stop
    expect(page.locator('#pl-lead-body li.process[data-process="winback"] .chip')).to_have_text("waiting")
    status, body = call(salesbot_server, "GET", f"/api/contacts/{contact['id']}/processes")
    assert {p["process"]: p["status"] for p in body["processes"]} == {"nurture": "stopped", "winback": "waiting"}
    page.screenshot(path=str(ARTIFACTS / "04-processes.png"))
