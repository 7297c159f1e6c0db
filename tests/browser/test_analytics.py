"""The analytics view of ``/live`` in a real browser against a real ``salesbot serve``: a bot's
funnel drawn on its flow graph (runs that entered each step, drop-off, runs on each edge), the
step table, the date range, the CSV export, and the split results with the two-proportion z-test
read from the server's own ``GET /api/bots/{id}/splits``; a bot without splits shows "No splits")."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from bot.store.analytics import bot_day_key, day_text
from bot.store.splits import count_field, split_key

from .conftest import ROOT, Server
from .test_pipeline import call

if TYPE_CHECKING:
    from playwright.sync_api import Page
try:
    from playwright.sync_api import expect
except ImportError:  # the conftest skips the tier, or fails it under SALESBOT_REQUIRE_ALL_TIERS=1
    expect = None  # type: ignore[assignment]

ARTIFACTS = ROOT / "test-artifacts" / "analytics"
FLOW: dict[str, Any] = {
    "format": "salesbot.flow/1", "id": "shop", "start": "ask",
    "steps": {
        "ask": {"type": "message", "text": "Sofa or bed?", "buttons": [
            {"title": "Sofa", "next": "offer"}, {"title": "Bed", "next": "bye"}]},
        "offer": {"type": "split", "paths": [{"id": "a", "weight": 50, "next": "bye"},
                                             {"id": "b", "weight": 50, "next": "bye"}]},
        "bye": {"type": "message", "text": "Thanks!", "next": "end"},
        "end": {"type": "stop"},
    },
}


def _confidence(g1: int, n1: int, g2: int, n2: int) -> float:
    p = (g1 + g2) / (n1 + n2)
    z = (g1 / n1 - g2 / n2) / math.sqrt(p * (1 - p) * (1 / n1 + 1 / n2))
    return math.erf(abs(z) / math.sqrt(2))  # = 2 Phi(|z|) - 1


@pytest.fixture(scope="module")
def seeded(salesbot_server: Server, redis_url: str) -> Iterator[int]:
    """The shop bot and its counters as saves would have written them: today, and 40 days ago."""
    import redis as sync_redis

    status, body = call(salesbot_server, "PUT", "/api/bots/shop", FLOW)
    assert status == 201, body
    today = int(time.time() // 86400)
    client = sync_redis.Redis.from_url(redis_url)
    try:
        client.hset(bot_day_key("shop", 1, today), mapping={
            "e|ask": 10, "l|ask|offer": 6, "l|ask|bye": 2, "x|ask": 1, "t|ask|12": 8,
            "e|offer": 6, "l|offer|bye": 6, "e|bye": 8, "l|bye|end": 8, "e|end": 8, "x|end": 8})
        client.hset(bot_day_key("shop", 1, today - 40), mapping={"e|ask": 100, "x|ask": 90})
        # the split's hash as entries and goals would have left it (bot/store/splits.py): a won test
        client.hset(split_key("shop", "offer"), mapping={
            "gen": 0, "started": repr(time.time() - 86400), "winner": "a", "winner_by": "auto",
            "winner_at": repr(time.time()), count_field("entry", 0, "a"): 1000,
            count_field("goal", 0, "a"): 120, count_field("entry", 0, "b"): 1000, count_field("goal", 0, "b"): 90})
    finally:
        client.close()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    yield today


def open_analytics(page: Page, server: Server) -> None:
    """The view of the shop bot."""
    page.set_viewport_size({"width": 1600, "height": 1000})
    page.goto("/live")
    page.locator("#token").fill(server.admin_token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#app")).to_be_visible()
    page.locator("#view-analytics").click()
    expect(page.locator("#analytics")).to_be_visible()
    expect(page.locator(".main")).to_be_hidden()
    expect(page.locator("#an-bot option[value=shop]")).to_have_count(1)
    page.locator("#an-bot").select_option("shop")


def node(page: Page, step: str) -> Any:
    return page.locator(f'#an-svg .an-node[data-step="{step}"]')


def test_the_funnel_is_drawn_on_the_flow_graph_with_counts_on_nodes_and_edges(
        page: Page, salesbot_server: Server, seeded: int) -> None:
    open_analytics(page, salesbot_server)
    expect(node(page, "ask").locator(".an-entered")).to_have_text("10")
    expect(node(page, "ask").locator(".an-drop")).to_have_text("−1 (10 %)")  # ended; the one still there may go on
    expect(node(page, "end").locator(".an-drop")).to_have_text("−8 (100 %)")
    expect(node(page, "offer").locator(".an-drop")).to_have_text("no drop-off")
    expect(page.locator('#an-svg .edge-count[data-source="ask"][data-target="offer"]')).to_have_text("6")
    expect(page.locator('#an-svg .edge-count[data-source="ask"][data-target="bye"]')).to_have_text("2")
    expect(node(page, "ask").locator(".an-median")).to_have_text("76 s")  # bucket 12: 2^6.25 s
    row = page.locator('#an-steps tr[data-step="ask"] td')
    expect(row).to_have_text(["ask", "10", "8", "1", "0", "1", "10 %", "76 s"])
    # the splits: entries, goals, rates, the z-test of the best path against the other, the winner
    split = page.locator('.an-split[data-step="offer"]')
    expect(split.locator('tr[data-path="b"] td')).to_have_text(
        ["b", "1000", "90", "9 %", "2.19", f"{100 * _confidence(120, 1000, 90, 1000):.1f} %"])
    expect(split.locator('tr[data-path="a"] td').first).to_have_text("a ★")
    expect(split.locator(".an-winner")).to_have_text("Winner: a (auto)")
    page.screenshot(path=str(ARTIFACTS / "01-funnel.png"))


def test_a_wider_date_range_adds_older_days_and_their_abandoned_runs(
        page: Page, salesbot_server: Server, seeded: int) -> None:
    open_analytics(page, salesbot_server)
    expect(node(page, "ask").locator(".an-entered")).to_have_text("10")
    page.locator("#an-from").fill(day_text(seeded - 60))
    page.locator("#an-from").dispatch_event("change")
    expect(node(page, "ask").locator(".an-entered")).to_have_text("110")
    expect(page.locator('#an-steps tr[data-step="ask"] td')).to_have_text(  # 10 of the old day abandoned
        ["ask", "110", "8", "91", "10", "1", "91.8 %", "< 1 s"])
    page.locator("#an-from").fill(day_text(seeded + 1))  # after "to": said in the bar, nothing asked
    page.locator("#an-from").dispatch_event("change")
    expect(page.locator("#an-notice")).to_have_text("The range starts after it ends.")


def test_the_csv_export_downloads_the_funnel_per_day(page: Page, salesbot_server: Server, seeded: int) -> None:
    open_analytics(page, salesbot_server)
    expect(node(page, "ask").locator(".an-entered")).to_have_text("10")
    with page.expect_download() as info:
        page.locator("#an-csv").click()
    text = info.value.path().read_text(encoding="utf-8")
    assert text.splitlines()[0] == "day,step,entered,left,ended,abandoned,waiting,median_seconds,left_to"
    assert f"{day_text(seeded)},ask,10,8,1,0,1,76.1,bye=2 offer=6" in text.splitlines()


def test_a_bot_without_splits_says_so(page: Page, salesbot_server: Server, seeded: int) -> None:
    open_analytics(page, salesbot_server)
    expect(page.locator('.an-split[data-step="offer"]')).to_have_count(1)
    page.locator("#an-bot").select_option("demo")
    expect(page.locator("#an-title")).to_contain_text("demo v1")
    expect(page.locator("#an-splits .an-nosplits")).to_have_text("No splits")
    expect(page.locator('#an-svg .an-node[data-step="hello"]')).to_have_count(1)
