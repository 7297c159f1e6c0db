"""The customers list's **More** button in a real Chromium against a real ``salesbot serve``:
customers sharing one time (an import gives its records one) past the page of 50 are each shown
once, the next page asked from the last row's time and id (``before``, ``before_id``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import redis as sync_redis

from bot.store import recency
from crm_bridge.indexes import recent_key

from .conftest import Server
from .test_customers import _ok, sign_in
from .test_pipeline import call

if TYPE_CHECKING:
    from playwright.sync_api import Page
try:
    from playwright.sync_api import expect
except ImportError:  # the conftest skips the tier, or fails it under SALESBOT_REQUIRE_ALL_TIERS=1
    expect = None  # type: ignore[assignment]


def test_more_lists_every_customer_of_one_time_once(page: Page, salesbot_server: Server, redis_url: str) -> None:
    names = [f"Imported {n:02d}" for n in range(62)]
    ids = [str(_ok(call(salesbot_server, "POST", "/api/crm/contacts", {"name": name}))["id"]) for name in names]
    client = sync_redis.Redis.from_url(redis_url)
    try:  # as an import leaves them: one time for all
        pipe = client.pipeline(transaction=False)
        for cid in ids:
            recency.add(pipe, recent_key("contact"), cid, 1_700_000_000.25)
        pipe.execute()
    finally:
        client.close()
    sign_in(page, salesbot_server, "customers")
    rows = page.locator("#cu-list-potential .cu-row .cu-name")
    expect(rows).to_have_count(50)
    expect(page.locator("#cu-count-potential")).to_have_text("62")
    page.locator("#cu-more-potential").click()
    expect(rows).to_have_count(62)
    expect(page.locator("#cu-more-potential")).to_be_hidden()
    # one time: the later id first, so the names come newest first
    assert rows.all_inner_texts() == list(reversed(names))
