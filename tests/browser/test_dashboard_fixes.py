"""The support dashboard's fixes of issue 15 §5 in a real Chromium against a real ``salesbot serve``:
the flow graph readable at the card's width (fit, zoom, pan) and full size on demand with labels
that do not overlap; "the bot is back" says who; a customer message that came while a person had
the chat is shown and, at hand-back, the person chooses whether the bot answers it; run
boundaries in the transcript; "Start bot…" needs a chosen bot and a confirm; "Stop bot" is
disabled while someone else holds the chat; since when a customer waits (row and header); the
conversation id behind a copy button; the lead card's name, phone and responsible person.
Screenshots go to ``test-artifacts/dashboard/`` (git-ignored).
"""

from __future__ import annotations

import json
import os
import re
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .conftest import ADMIN_TOKEN, _flush, _free_port, _wait_healthy
from .test_dashboard import AYSE, MERT, Deployment, Pages, _start, _stop, api, row, sign_in

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page
try:
    from playwright.sync_api import expect
except ImportError:  # the conftest skips the tier, or fails it under SALESBOT_REQUIRE_ALL_TIERS=1
    expect = None  # type: ignore[assignment]

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "dashboard"
TITLES = ["See our products please", "Opening hours and address", "Talk to a person now", "Track my order #"]
HOURS = "We are open Mon–Fri 09:00–18:00."
FLOW: dict[str, Any] = {
    "format": "salesbot.flow/1", "id": "demo", "name": "Lale Home menu (dashboard fixes)", "start": "menu",
    "steps": {
        "menu": {"type": "message", "text": "Hi! What can I do for you?",
                 "buttons": [{"title": TITLES[0], "next": "products"}, {"title": TITLES[1], "next": "hours"},
                             {"title": TITLES[2], "next": "person"}, {"title": TITLES[3], "next": "track"}]},
        "products": {"type": "message", "text": "Sofas, beds and tables.", "next": "done"},
        "hours": {"type": "message", "text": HOURS, "next": "done"},
        "person": {"type": "message", "text": "A person will answer soon.", "next": "done"},
        "track": {"type": "message", "text": "Your order is on its way.", "next": "done"},
        "done": {"type": "stop"},
    },
}
SURVEY: dict[str, Any] = {
    "format": "salesbot.flow/1", "id": "survey", "name": "After-sale survey", "start": "ask",
    "steps": {"ask": {"type": "message", "text": "How did we do, 1 to 5?", "next": "end"}, "end": {"type": "stop"}},
}


@pytest.fixture(scope="module")
def deployment(chromium_executable: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[Deployment]:
    _flush(redis_url)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path_factory.mktemp("dashboard-fixes")
    flows = tmp / "flows"
    flows.mkdir()
    for doc in (FLOW, SURVEY):
        (flows / f"{doc['id']}.json").write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    config = tmp / "salesbot.toml"
    config.write_text(
        f'flows_dir = "{flows}"\ntimer_poll_interval = 0.05\n'
        + "".join(f'\n[[tokens]]\ntoken = "{t}"\nrole = "support"\nname = "{n}"\n' for t, n in (AYSE, MERT)),
        encoding="utf-8")
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "SALESBOT_REDIS_URL": redis_url, "SALESBOT_ADMIN_TOKEN": ADMIN_TOKEN,
           "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH", "")) if p)}
    port = _free_port()
    log = ARTIFACTS / "fixes-serve.log"
    popen = _start(["serve", "--config", str(config), "--host", "127.0.0.1", "--port", str(port), "--role", "all",
                    "--data-dir", str(tmp / "data")], cwd=tmp, env=env, log=log)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_healthy(popen, url, log)
        yield Deployment("fixes", url, url, [log])
    finally:
        _stop(popen)
        _flush(redis_url)


@pytest.fixture
def pages(browser: Browser) -> Iterator[Pages]:
    p = Pages(browser)
    try:
        yield p
    finally:
        p.close()


def say(deployment: Deployment, session: str, text: str, name: str | None = None) -> str:
    """A customer's message through the live chat's public API; the conversation's id."""
    body: dict[str, Any] = {"session": session, "text": text, "client_msg_id": uuid.uuid4().hex}
    if name:
        body["name"] = name
    req = urllib.request.Request(f"{deployment.customer_url}/chat/demo/messages", method="POST",
                                 data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return str(json.loads(r.read())["conversation"])


def shot(page: Page, label: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"fixes-{label}.png"))


def open_conversation(page: Page, cid: str) -> None:
    row(page, cid).click()
    expect(page.locator("#conversation")).to_have_attribute("data-cid", cid)


def label_overlaps(page: Page, scope: str) -> list[Any]:
    """Pairs of edge-label boxes (as drawn) that overlap, and labels drawn over a step."""
    return list(page.evaluate("""scope => {
      const boxes = [...document.querySelectorAll(scope + ' .edge-label-box rect')].map(r => r.getBBox());
      const nodes = [...document.querySelectorAll(scope + ' g.node')].map(g => {
        const b = g.querySelector('rect').getBBox(), m = g.transform.baseVal.consolidate().matrix;
        return {x: b.x + m.e, y: b.y + m.f, width: b.width, height: b.height};
      });
      const hit = (a, b) => a.x < b.x + b.width && b.x < a.x + a.width && a.y < b.y + b.height && b.y < a.y + a.height;
      const out = [];
      boxes.forEach((a, i) => boxes.slice(i + 1).forEach(b => {
        if (hit(a, b)) out.push(['labels', a.x, a.y, b.x, b.y]);
      }));
      boxes.forEach(a => nodes.forEach(n => { if (hit(a, n)) out.push(['node', a.x, a.y, n.x, n.y]); }));
      return out;
    }""", scope))


def test_the_flow_graph_fits_the_card_zooms_pans_and_opens_full_size(deployment: Deployment, pages: Pages) -> None:
    support = pages.open(deployment.support_url, 1280, 800)
    cid = say(deployment, f"graph-{uuid.uuid4().hex[:8]}", "hi", name="Deniz")
    sign_in(support, *AYSE)
    open_conversation(support, cid)
    graph = support.locator("#graph")
    expect(graph.locator('g.node.current[data-step="menu"]')).to_have_count(1)
    expect(graph.locator(".edge-label")).to_have_count(4)
    expect(graph).to_have_attribute("data-fit", "1")
    box_width = graph.evaluate("g => g.clientWidth")
    svg_width = graph.locator("svg").evaluate("s => s.getBoundingClientRect().width")
    full_width = int(graph.locator("svg").get_attribute("data-width") or 0)
    assert full_width > box_width, "the test flow must be wider than the card"
    assert svg_width <= box_width, f"fit: the graph ({svg_width}px) is wider than its card ({box_width}px)"
    assert graph.evaluate("g => g.scrollWidth <= g.clientWidth"), "fit: nothing is clipped sideways"
    assert label_overlaps(support, "#graph") == []
    support.locator("#graph-card").screenshot(path=str(ARTIFACTS / "fixes-01-graph-fit.png"))

    # Zoom in: larger than the card, which now scrolls; a drag pans it.
    fit_scale = float(graph.get_attribute("data-scale") or 0)
    support.locator("#graph-in").click()
    support.locator("#graph-in").click()
    zoomed = float(graph.get_attribute("data-scale") or 0)
    assert zoomed == pytest.approx(fit_scale * 1.5625, rel=0.01)
    expect(graph).to_have_attribute("data-fit", "")
    assert graph.evaluate("g => g.scrollWidth > g.clientWidth")
    left = graph.evaluate("g => g.scrollLeft")
    b = graph.bounding_box()
    assert b is not None
    support.mouse.move(b["x"] + b["width"] / 2, b["y"] + 30)
    support.mouse.down()
    support.mouse.move(b["x"] + b["width"] / 2 - 120, b["y"] + 30, steps=6)
    support.mouse.up()
    assert graph.evaluate("g => g.scrollLeft") != left, "a drag pans the graph"
    expect(support.locator("#release-step")).to_be_disabled()  # a pan is not a click on a step
    support.locator("#graph-card").screenshot(path=str(ARTIFACTS / "fixes-02-graph-zoomed.png"))
    support.locator("#graph-out").click()
    assert float(graph.get_attribute("data-scale") or 0) == pytest.approx(zoomed * 0.8, rel=0.01)
    support.locator("#graph-fit").click()
    expect(graph).to_have_attribute("data-fit", "1")
    assert float(graph.get_attribute("data-scale") or 0) == pytest.approx(fit_scale, rel=0.01)

    # Full size: 1:1 in an overlay, the current step marked, labels apart; Escape closes it.
    support.locator("#graph-full").click()
    overlay = support.locator("#graph-overlay")
    expect(overlay).to_be_visible()
    big = support.locator("#graph-big svg")
    assert big.evaluate("s => s.getBoundingClientRect().width") == pytest.approx(full_width, abs=1)
    expect(support.locator('#graph-big g.node.current[data-step="menu"]')).to_have_count(1)
    assert label_overlaps(support, "#graph-big") == []
    expect(support.locator("#graph-big .edge-label")).to_have_text(TITLES)
    shot(support, "03-graph-full-size")
    support.keyboard.press("Escape")
    expect(overlay).to_be_hidden()
    assert pages.errors == [], f"JavaScript errors: {pages.errors}"


def test_a_message_held_during_a_takeover_is_shown_and_the_person_chooses_at_hand_back(
        deployment: Deployment, pages: Pages) -> None:
    support = pages.open(deployment.support_url, 1440, 900)
    sign_in(support, *AYSE)
    transcript = support.locator("#transcript")
    for choice in ("answer", "keep"):
        session = f"held-{choice}-{uuid.uuid4().hex[:8]}"
        cid = say(deployment, session, "hi", name="Deniz")
        open_conversation(support, cid)
        support.locator("#btn-takeover").click()
        expect(support.locator("#c-owner")).to_have_attribute("data-owner", "me")
        say(deployment, session, TITLES[1])  # would take the bot to "hours"
        expect(transcript.locator("li.entry.role-user .text").last).to_have_text(TITLES[1])
        held = support.locator("#held")
        expect(held).to_be_visible()
        expect(held).to_contain_text(f"Not answered by the bot: “{TITLES[1]}”")
        expect(support.locator("#c-waiting")).to_contain_text("Waiting since")
        support.locator("#btn-release").click()
        confirm = support.locator("#confirm")
        expect(confirm).to_be_visible()
        expect(confirm).to_contain_text(f"Deniz wrote “{TITLES[1]}” while you had the chat. Should the bot answer it?")
        shot(support, f"04-hand-back-choice-{choice}")
        if choice == "answer":
            confirm.get_by_role("button", name="Hand back, the bot answers it").click()
            expect(transcript.locator("li.entry.role-bot .text").last).to_have_text(HOURS)
            expect(transcript.locator('li.entry.role-system[data-event="release"]')).to_have_text(re.compile(
                f"the bot is back, handed back by Ayşe Kaya; the bot answers the customer's message “{TITLES[1]}”"))
        else:
            confirm.get_by_role("button", name="Hand back, no answer from the bot").click()
            expect(transcript.locator('li.entry.role-system[data-event="release"]')).to_contain_text(
                f"the bot is back, handed back by Ayşe Kaya; the bot leaves the customer's message “{TITLES[1]}” "
                "unanswered")
            expect(support.locator("#run-step")).to_have_text("menu")
            expect(transcript.locator("li.entry.role-bot")).to_have_count(1)  # the greeting only
        # answered: the bot went on to "hours" and its run ended; kept: it still waits at "menu"
        expect(support.locator("#c-owner")).to_have_attribute("data-owner", "idle" if choice == "answer" else "bot")
        expect(held).to_be_hidden()
        expect(confirm).to_be_hidden()
    shot(support, "05-handed-back")
    assert pages.errors == [], f"JavaScript errors: {pages.errors}"


def test_start_needs_a_choice_and_a_confirm_and_stop_waits_for_the_holder(deployment: Deployment,
                                                                          pages: Pages) -> None:
    ayse = pages.open(deployment.support_url, 1440, 900)
    mert = pages.open(deployment.support_url, 1440, 900)
    cid = say(deployment, f"start-{uuid.uuid4().hex[:8]}", "hi", name="Selin")
    sign_in(ayse, *AYSE)
    sign_in(mert, *MERT)
    open_conversation(ayse, cid)
    open_conversation(mert, cid)
    expect(mert.locator("#btn-stop")).to_be_enabled()  # the bot waits at "menu"
    ayse.locator("#btn-takeover").click()
    expect(mert.locator("#c-owner")).to_have_attribute("data-owner", "person")
    expect(mert.locator("#btn-stop")).to_be_disabled()
    expect(mert.locator("#btn-stop")).to_have_attribute("title", "Ayşe Kaya has this conversation")
    expect(mert.locator("#start-bot")).to_be_disabled()
    expect(mert.locator("#btn-start")).to_be_disabled()
    expect(ayse.locator("#btn-stop")).to_be_enabled()  # the holder may
    shot(mert, "06-stop-disabled-for-another")
    ayse.locator("#btn-release").click()
    expect(mert.locator("#c-owner")).to_have_attribute("data-owner", "bot")
    expect(mert.locator("#btn-stop")).to_be_enabled()

    # Nothing is preselected: the button waits for a choice, then asks before it starts.
    start = mert.locator("#start-bot")
    expect(start).to_have_value("")
    expect(mert.locator("#btn-start")).to_be_disabled()
    start.select_option("survey")
    expect(mert.locator("#btn-start")).to_be_enabled()
    mert.locator("#btn-start").click()
    confirm = mert.locator("#confirm")
    expect(confirm).to_contain_text(
        "Start After-sale survey (survey) for Selin? The bot running now (demo) is replaced.")
    confirm.get_by_role("button", name="Cancel").click()
    expect(confirm).to_be_hidden()
    expect(mert.locator("#run-bot")).to_contain_text("demo")  # nothing started
    mert.locator("#btn-start").click()
    confirm.get_by_role("button", name="Start survey").click()
    transcript = mert.locator("#transcript")
    expect(transcript.locator("li.entry.role-bot .text").last).to_have_text("How did we do, 1 to 5?")
    expect(start).to_have_value("")  # the next start is a new choice

    # Where one run ends and the next starts.
    marks = transcript.locator("li.entry.run-mark")
    expect(marks).to_have_text([re.compile(r"run of demo v1 ended \(replaced\)"),
                                re.compile(r"run of survey v1 started"),
                                re.compile(r"run of survey v1 ended \(finished\)")])
    entries = transcript.locator("li.entry")
    kinds = entries.evaluate_all("es => es.map(e => e.dataset.event || e.className.replace('entry role-', ''))")
    start_at = kinds.index("run_start")
    assert kinds[start_at - 1] == "run_end" and kinds[start_at + 1] == "bot", kinds
    assert kinds[-1] == "run_end", kinds
    shot(mert, "07-run-marks")
    assert pages.errors == [], f"JavaScript errors: {pages.errors}"


def test_waiting_since_copy_id_and_the_lead_card(deployment: Deployment, pages: Pages) -> None:
    support = pages.open(deployment.support_url, 1440, 900)
    support.context.grant_permissions(["clipboard-read", "clipboard-write"])
    session = f"wait-{uuid.uuid4().hex[:8]}"
    cid = say(deployment, session, "hi", name="Elif <b>Yılmaz</b>")
    sign_in(support, *AYSE)
    open_conversation(support, cid)
    support.locator("#btn-takeover").click()
    expect(support.locator("#c-owner")).to_have_attribute("data-owner", "me")
    say(deployment, session, "hello? anyone?")
    flag = row(support, cid).locator(".flag")
    expect(flag).to_have_text(re.compile(r"^Waiting \d+ s$"))
    since = float(flag.get_attribute("data-since") or 0)
    expect(support.locator("#c-waiting")).to_have_text(
        re.compile(r"^Waiting since \d\d:\d\d(:\d\d)?( [AP]M)? \(\d+ s\)$"))
    say(deployment, session, "still there?")  # the wait counts from the first unanswered message
    expect(row(support, cid).locator(".preview")).to_have_text("still there?")
    assert float(flag.get_attribute("data-since") or 0) == since
    shot(support, "08-waiting-since")
    support.locator("#reply").fill("Here, sorry!")
    support.locator("#reply").press("Enter")
    expect(support.locator("#c-waiting")).to_be_hidden()
    expect(flag).to_have_text("")

    # The raw id: not in the header's text, behind a copy button.
    expect(support.locator("#c-sub")).not_to_contain_text(cid)
    expect(support.locator("#c-copy-id")).to_have_attribute("title", cid)
    support.locator("#c-copy-id").click()
    expect(support.locator("#notice")).to_have_text("Conversation id copied.")
    assert support.evaluate("navigator.clipboard.readText()") == cid

    # The lead card: the contact's name, phone and responsible person (markup stays text).
    status, conv = api(deployment, "GET", f"/api/conversations/{cid}", AYSE[0])
    contact_id = conv["contact"]["contact_id"]
    assert status == 200 and contact_id
    expect(support.locator("#lead-contact-name")).to_have_text("Elif <b>Yılmaz</b>")
    expect(support.locator("#lead-contact-phone")).to_have_text("—")
    status, _ = api(deployment, "PATCH", f"/api/crm/contacts/{contact_id}", ADMIN_TOKEN,
                    {"phone": "+90 532 111 22 33", "responsible": "Mert Demir"})
    assert status == 200
    open_conversation(support, cid)
    expect(support.locator("#lead-contact-phone")).to_have_text("+90 532 111 22 33")
    expect(support.locator("#lead-contact-responsible")).to_have_text("Mert Demir")
    expect(support.locator("#lead-contact-name")).to_have_text("Elif <b>Yılmaz</b>")
    assert support.locator("#lead-body b").count() == 0
    shot(support, "09-lead-card")
    assert pages.errors == [], f"JavaScript errors: {pages.errors}"
