"""The support dashboard in Chromium when things go wrong around it: the store paused while a
person reloads the page (a brief Redis outage must not sign her out), a list whose
conversations share one activity paged with "Load more" (each listed once), Enter pressed
again on a slow connection (the reply goes out once), and a restart that ends the streams'
session (both come back)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import redis as redis_sync

from bot.store.indexes import seed

from .conftest import ADMIN_TOKEN, _free_port, _wait_healthy
from .test_dashboard import AYSE, Deployment, Pages, _start, _stop, api, row, sign_in
from .test_dashboard_fixes import FLOW, deployment, pages, say

if TYPE_CHECKING:
    from playwright.sync_api import Page
try:
    from playwright.sync_api import expect
except ImportError:  # the conftest skips the tier, or fails it under SALESBOT_REQUIRE_ALL_TIERS=1
    expect = None  # type: ignore[assignment]

__all__ = ["deployment", "pages"]  # the fixtures, shared with test_dashboard_fixes


@pytest.fixture
def paused_store(redis_url: str) -> Iterator[tuple[int, list[bool]]]:
    """The test Redis' process id, and whether it is paused; it is let go again at the end."""
    client = redis_sync.Redis.from_url(redis_url)
    try:
        pid = int(client.info("server")["process_id"])
    finally:
        client.close()
    state = [False]
    try:
        yield pid, state
    finally:
        if state[0]:
            os.kill(pid, signal.SIGCONT)


def test_load_more_lists_each_of_many_conversations_sharing_one_activity_once(
        deployment: Deployment, pages: Pages, redis_url: str) -> None:
    """120 conversations with one activity (an import): three pages of 50, every row once."""
    client = redis_sync.Redis.from_url(redis_url)
    made = [f"livechat:demo:same-time-{i:03d}" for i in range(120)]
    try:
        pipe = client.pipeline(transaction=False)
        for cid in made:
            seed(pipe, cid, {"channel": "livechat", "account": "demo", "bot": "demo", "status": "idle",
                             "chat_status": "answered", "activity": "1700000000.5", "name": "Same Time"})
        pipe.execute()
    finally:
        client.close()
    page: Page = pages.open(deployment.support_url, 1300, 850)
    sign_in(page, *AYSE)
    expect(page.locator("#conversations li.conv")).to_have_count(50)  # (first in the module: only these)
    for shown in (100, 120):
        page.locator("#load-more").click()
        expect(page.locator("#conversations li.conv")).to_have_count(shown)
    expect(page.locator("#load-more")).to_be_hidden()
    cids = page.locator("#conversations li.conv").evaluate_all("rows => rows.map(r => r.dataset.cid)")
    assert sorted(cids) == made


def test_enter_pressed_again_while_a_reply_is_on_its_way_sends_it_once(
        deployment: Deployment, pages: Pages) -> None:
    """On a slow connection the person presses Enter again (the reply is still in the box): the
    customer used to get the reply twice, as ``requestSubmit`` submits even with Send disabled."""
    cid = say(deployment, f"slow-send-{uuid.uuid4().hex[:8]}", "Is my sofa shipped?", name="Deniz Slow")
    page: Page = pages.open(deployment.support_url, 1300, 850)
    sign_in(page, *AYSE)
    row(page, cid).click()
    page.locator("#btn-takeover").click()
    expect(page.locator("#reply")).to_be_enabled()
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 800,
                                                  "downloadThroughput": -1, "uploadThroughput": -1})
    page.locator("#reply").fill("It ships tomorrow")
    for _ in range(3):
        page.locator("#reply").press("Enter")
    expect(page.locator("#reply")).to_have_value("")  # sent: the box is cleared
    cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 0,
                                                  "downloadThroughput": -1, "uploadThroughput": -1})
    expect(page.locator("#transcript li.entry.role-human")).to_have_count(1)
    status, conv = api(deployment, "GET", f"/api/conversations/{cid}", AYSE[0])
    assert status == 200
    assert [e["text"] for e in conv["transcript"] if e["role"] == "human"] == ["It ships tomorrow"]


def _serve(tmp: Path, redis_url: str, port: int, secret: str, log: Path) -> subprocess.Popen[bytes]:
    """``salesbot serve`` of the fixes' flow on ``port``, signing with ``secret``; healthy."""
    flows = tmp / "flows"
    flows.mkdir(exist_ok=True)
    (flows / "demo.json").write_text(json.dumps(FLOW, ensure_ascii=False), encoding="utf-8")
    config = tmp / "salesbot.toml"
    config.write_text(f'flows_dir = "{flows}"\ntimer_poll_interval = 0.05\n\n[actions]\nsecret = "{secret}"\n'
                      f'\n[[tokens]]\ntoken = "{AYSE[0]}"\nrole = "support"\nname = "{AYSE[1]}"\n', encoding="utf-8")
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "SALESBOT_REDIS_URL": redis_url, "SALESBOT_ADMIN_TOKEN": ADMIN_TOKEN,
           "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH", "")) if p)}
    popen = _start(["serve", "--config", str(config), "--host", "127.0.0.1", "--port", str(port), "--role", "all",
                    "--data-dir", str(tmp / "data")], cwd=tmp, env=env, log=log)
    _wait_healthy(popen, f"http://127.0.0.1:{port}", log)
    return popen


def test_both_streams_come_back_after_a_restart_that_ends_their_session(
        deployment: Deployment, pages: Pages, redis_url: str, tmp_path: Path) -> None:
    """A restart with another signing secret (or a session past its 12 hours) answers both
    streams' reconnects 401: the page signs in again and reopens both. Only the first to close
    was reopened: the list stayed "Reconnecting…" for good, or the open conversation's transcript
    missed every new message."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    popen = _serve(tmp_path, redis_url, port, "the-first-secret-0123456789", log)
    try:
        cid = say(Deployment("restart", url, url), f"restart-{uuid.uuid4().hex[:8]}", "Hello there", name="Deniz R")
        page: Page = pages.open(url, 1300, 850)
        sign_in(page, *AYSE)
        row(page, cid).click()
        expect(page.locator("#transcript li.entry.role-user .text")).to_have_text(["Hello there"])
        _stop(popen)
        popen = _serve(tmp_path, redis_url, port, "the-second-secret-9876543210", log)
        # the list stream is back (after its 401, a new sign-in), and so is the conversation's
        expect(page.locator("#conn")).to_have_attribute("data-state", "live")
        expect(page.locator("#app")).to_be_visible()
        say(Deployment("restart", url, url), cid.rsplit(":", 1)[1], "Are you still there?")
        customer = page.locator("#transcript li.entry.role-user .text")
        expect(customer).to_have_text(["Hello there", "Are you still there?"])
    finally:
        _stop(popen)


# Last in the module: the server's store connections notice the pause later (a resync of every
# open list), which must not reach the other tests' pages.
def test_a_reload_while_the_store_is_down_keeps_the_person_signed_in(
        deployment: Deployment, pages: Pages, paused_store: tuple[int, list[bool]]) -> None:
    """``POST /live/session`` answers 503 while Redis is unreachable: the page used to take that
    for a refused token ("Unknown token."), forget the token and sign the person out."""
    pid, paused = paused_store
    page: Page = pages.open(deployment.support_url, 1300, 850)
    sign_in(page, *AYSE)
    os.kill(pid, signal.SIGSTOP)
    paused[0] = True
    page.reload()
    expect(page.locator("#signin-error")).to_have_text("The server cannot be reached right now; trying again…")
    assert page.evaluate("sessionStorage.getItem('salesbot.live.token')") == AYSE[0]
    os.kill(pid, signal.SIGCONT)
    paused[0] = False
    expect(page.locator("#app")).to_be_visible()  # signed in again by itself, once the store is back
    expect(page.locator("#me-name")).to_have_text(AYSE[1])
    expect(page.locator("#conn")).to_have_attribute("data-state", "live")
