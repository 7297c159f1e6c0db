"""The live chat widget reports the page it opens on (``site.visit``), in a real browser against a
real ``salesbot serve``: nothing for an anonymous visitor, the event on the lead once the visitor
has chatted. Synchronisation is Playwright's auto-waiting ``expect``; nothing sleeps."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from typing import TYPE_CHECKING, Any

from .conftest import Server
from .test_livechat import greet, open_chat, settled

if TYPE_CHECKING:
    from playwright.sync_api import Page

PAGE = "https://shop.example/pricing?plan=pro"


def _api(server: Server, path: str) -> Any:
    request = urllib.request.Request(server.url + path, headers={"Authorization": f"Bearer {server.admin_token}"})
    with urllib.request.urlopen(request, timeout=10) as r:
        return json.loads(r.read())


def test_the_widget_reports_its_page_for_a_visitor_with_a_lead(page: Page, salesbot_server: Server) -> None:
    query = "?page=" + urllib.parse.quote(PAGE, safe="")
    open_chat(page, query)
    assert page.evaluate("() => window.salesbotChat.visited") == {"accepted": True, "events": []}  # anonymous
    greet(page)
    settled(page)
    session = page.evaluate("() => window.salesbotChat.session")
    conversation = _api(salesbot_server, f"/api/conversations/livechat:demo:{session}")
    lead = str(conversation["lead"]["id"])

    page.reload()  # the widget opens again, on the same page, now for a known visitor
    assert page.evaluate("() => window.salesbotChat.visited") == {"accepted": True, "events": ["site.visit"]}
    open_chat(page, "")  # no ?page=: the widget's own address (no referrer when typed in)
    visited = page.evaluate("() => window.salesbotChat.visited")
    assert visited == {"accepted": True, "events": ["site.visit"]}

    def site_visits() -> list[str]:  # the lead handles its events in the background: wait, bounded
        events = _api(salesbot_server, f"/api/leads/{lead}/events")["events"]
        return [e["data"]["url"] for e in events if e.get("type") == "site.visit"]

    deadline = time.monotonic() + 10
    while len(urls := site_visits()) < 2 and time.monotonic() < deadline:
        page.wait_for_timeout(20)  # the poll interval, not a synchronisation
    assert urls == [PAGE, f"{salesbot_server.url}/chat/demo"]
