"""The support dashboard in a real browser: a customer on the live chat widget and support people
on ``/live``, against real ``salesbot`` processes on the test Redis.

Two deployments run the same story:

* ``one-process``: one ``salesbot serve --role all`` serves the customer and the dashboard;
* ``two-web-processes``: the customer talks to one ``salesbot serve --role web``, support watches
  through another ``--role web`` process, and a ``salesbot worker`` fires the timers — so every
  live update crosses processes through Redis pub/sub.

The story: the new conversation shows up on the dashboard within a second; the person watches the
bot's message arrive, takes over, replies (the customer sees it); the customer's message with
``<script>`` and ``<img onerror>`` shows as text; the bot stays silent while its pause timer falls
due (the run card shows the timer held); a second person sees who has the conversation and cannot
take it; the person hands back at a chosen step and the bot continues there. Screenshots of each
state go to ``test-artifacts/dashboard/`` (git-ignored).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .conftest import ADMIN_TOKEN, EXPECT_TIMEOUT_MS, ROOT, _flush, _free_port, _wait_healthy

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page
try:
    from playwright.sync_api import expect
except ImportError:  # the conftest skips the tier, or fails it under SALESBOT_REQUIRE_ALL_TIERS=1
    expect = None  # type: ignore[assignment]

ARTIFACTS = ROOT / "test-artifacts" / "dashboard"
AYSE = ("support-ayse-token", "Ayşe Kaya")
MERT = ("support-mert-token", "Mert Demir")
PAUSE_SECONDS = 8  # the bot's pause timer: it falls due while Ayşe has the conversation

WELCOME = "Welcome to Lale Home! Let me look up your order"
FOLLOWUP = "Your order is on its way"
OFFER = "Here is 10% off your next order: LALE10"
BYE = "You're welcome, have a lovely day!"
XSS = 'Is it shipped? <script>window.__xss=1</script><img src=x onerror="window.__xss=2"> <b>asap</b>'

FLOW: dict[str, Any] = {
    "format": "salesbot.flow/1", "id": "demo", "name": "Lale Home orders (dashboard test)", "start": "hello",
    "steps": {
        "hello": {"type": "message", "text": WELCOME + " 🔎", "next": "lookup"},
        "lookup": {"type": "pause", "until": [{"on": "message", "next": "noted"},
                                              {"on": "timer", "after": f"{PAUSE_SECONDS}s", "next": "followup"}]},
        "noted": {"type": "message", "text": "Noted, thanks!", "next": "done"},
        "followup": {"type": "message", "text": FOLLOWUP + " 🚚", "next": "done"},
        "offer": {"type": "message", "text": OFFER + " 🎁", "buttons": [{"title": "Thanks!", "next": "bye"}]},
        "bye": {"type": "message", "text": BYE, "next": "done"},
        "done": {"type": "stop"},
    },
}


@dataclass
class Deployment:
    name: str
    customer_url: str  # the web process the customer's widget talks to
    support_url: str  # the web process the support people's dashboards talk to
    logs: list[Path] = field(default_factory=list)

    def output(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}" for p in self.logs)


def _start(args: list[str], *, cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:  # the child keeps its own descriptor
        return subprocess.Popen([sys.executable, "-m", "bot.cli", *args], env=env, cwd=cwd,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)


def _stop(popen: subprocess.Popen[bytes]) -> None:
    if popen.poll() is None:
        popen.send_signal(signal.SIGTERM)
        try:
            popen.wait(timeout=20)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()


def _wait_running(popen: subprocess.Popen[bytes], log: Path) -> None:
    for _ in range(300):
        if popen.poll() is not None:
            raise RuntimeError(f"salesbot worker exited with {popen.returncode}:\n{log.read_text(errors='replace')}")
        if b"salesbot is running" in log.read_bytes():
            return
        time.sleep(0.1)  # readiness probe interval (bounded)
    raise RuntimeError("salesbot worker did not start:\n" + log.read_text(errors="replace"))


# Module scope, as the conftest's server: the processes (a worker among them) are gone before other
# modules use the Redis. One deployment at a time (pytest finishes one parameter before the next).
@pytest.fixture(scope="module", params=["one-process", "two-web-processes"])
def deployment(request: pytest.FixtureRequest, chromium_executable: str, redis_url: str,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    name = str(request.param)
    _flush(redis_url)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path_factory.mktemp(f"dashboard-{name}")
    flows = tmp / "flows"
    flows.mkdir()
    (flows / "demo.json").write_text(json.dumps(FLOW, ensure_ascii=False, indent=2), encoding="utf-8")
    config = tmp / "salesbot.toml"
    config.write_text(
        f'flows_dir = "{flows}"\ntimer_poll_interval = 0.05\n'
        + "".join(f'\n[[tokens]]\ntoken = "{t}"\nrole = "support"\nname = "{n}"\n' for t, n in (AYSE, MERT)),
        encoding="utf-8")
    env = {**os.environ, "SALESBOT_REDIS_URL": redis_url, "SALESBOT_ADMIN_TOKEN": ADMIN_TOKEN,
           "PYTHONUNBUFFERED": "1",
           # the code of this checkout, not whichever one the virtualenv installed (cwd is elsewhere)
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []

    def web(role: str, label: str) -> str:
        port = _free_port()
        log = ARTIFACTS / f"{name}-{label}.log"
        logs.append(log)
        popen = _start(["serve", "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
                        "--role", role, "--data-dir", str(tmp / "data")], cwd=tmp, env=env, log=log)
        procs.append(popen)
        url = f"http://127.0.0.1:{port}"
        _wait_healthy(popen, url, log)
        return url

    try:
        if name == "one-process":
            url = web("all", "serve")
            yield Deployment(name, url, url, logs)
        else:
            customer = web("web", "web-customer")
            support = web("web", "web-support")
            log = ARTIFACTS / f"{name}-worker.log"
            logs.append(log)
            worker = _start(["worker", "--config", str(config)], cwd=tmp, env=env, log=log)
            procs.append(worker)
            _wait_running(worker, log)
            yield Deployment(name, customer, support, logs)
    finally:
        for popen in reversed(procs):
            _stop(popen)
        _flush(redis_url)


class Pages:
    """Browser contexts of one test, closed at the end; uncaught page errors fail the test."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        self.contexts: list[Any] = []
        self.errors: list[str] = []

    def open(self, base_url: str, width: int, height: int) -> Page:
        context = self.browser.new_context(base_url=base_url, viewport={"width": width, "height": height})
        context.set_default_timeout(EXPECT_TIMEOUT_MS)
        self.contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda exc: self.errors.append(f"{base_url}: {exc}"))
        page.on("console", lambda m: self.errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
        page.on("response", lambda r: self.errors.append(f"HTTP {r.status}: {r.request.method} {r.url}")
                if r.status >= 400 else None)
        return page

    def close(self) -> None:
        for c in self.contexts:
            c.close()


@pytest.fixture
def pages(browser: Browser) -> Iterator[Pages]:
    p = Pages(browser)
    try:
        yield p
    finally:
        p.close()


def sign_in(page: Page, token: str, name: str, snap: Any = None) -> None:
    page.goto("/live")
    expect(page.locator("#signin")).to_be_visible()
    expect(page.locator("#app")).to_be_hidden()  # nothing but the form before signing in
    if snap:
        snap(page, "00-sign-in")
    page.locator("#token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#app")).to_be_visible()
    expect(page.locator("#me-name")).to_have_text(name)
    expect(page.locator("#conn")).to_have_attribute("data-state", "live")


def row(page: Page, cid: str) -> Any:
    return page.locator(f'#conversations li.conv[data-cid="{cid}"]')


def widget_bot_texts(customer: Page) -> list[str]:
    return customer.locator("#sb-messages > li.sb-msg.bot").all_inner_texts()


def api(deployment: Deployment, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
    req = urllib.request.Request(deployment.support_url + path, method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_watch_take_over_reply_and_hand_back(deployment: Deployment, pages: Pages) -> None:
    def shot(page: Any, label: str) -> None:
        page.screenshot(path=str(ARTIFACTS / f"{deployment.name}-{label}.png"))

    support = pages.open(deployment.support_url, 1440, 900)
    customer = pages.open(deployment.customer_url, 420, 760)
    try:
        sign_in(support, *AYSE, snap=shot)
        shot(support, "01-signed-in")

        # 1. A customer writes: the conversation appears on the dashboard within a second.
        customer.goto("/chat/demo")
        expect(customer.locator("#sb-chat")).to_have_attribute("data-status", "online")
        customer.locator("#sb-input").fill("Hi, where is my order #1042?")
        sent_at = customer.evaluate(
            "() => { const t = Date.now(); document.querySelector('#sb-send').click(); return t; }")
        session = customer.evaluate("salesbotChat.session")
        cid = f"livechat:demo:{session}"
        new_row = row(support, cid)
        expect(new_row).to_be_visible()
        appeared = int(new_row.get_attribute("data-appeared") or 0)
        delay = appeared - sent_at
        assert 0 <= delay < 1000, f"the conversation appeared {delay} ms after the message"
        print(f"{deployment.name}: the new conversation was on the dashboard {delay} ms after the customer sent")
        expect(new_row.locator(".owner-badge")).to_have_attribute("data-owner", "bot")
        expect(customer.locator("#sb-messages > li.sb-msg.bot").first).to_contain_text(WELCOME)
        greeted = time.monotonic()
        expect(new_row.locator(".botstep")).to_have_text("demo · lookup")
        shot(support, "02-new-conversation")

        # 2. The person opens it and watches the bot at work.
        new_row.click()
        transcript = support.locator("#transcript")
        expect(transcript.locator("li.entry.role-user .text")).to_have_text(["Hi, where is my order #1042?"])
        expect(transcript.locator("li.entry.role-bot .text").first).to_contain_text(WELCOME)
        expect(support.locator("#c-owner")).to_have_attribute("data-owner", "bot")
        expect(support.locator("#run-step")).to_have_text("lookup")
        expect(support.locator("#run-wait")).to_contain_text("pause")
        expect(support.locator("#run-countdown")).to_have_attribute("data-state", "counting")
        expect(support.locator('#graph g.node.current[data-step="lookup"]')).to_have_count(1)
        expect(support.locator("#reply")).to_be_disabled()
        shot(support, "03-watching-the-bot")

        # 3. Take over: the server holds the bot; the person replies and the customer sees it.
        support.locator("#btn-takeover").click()
        expect(support.locator("#c-owner")).to_have_attribute("data-owner", "me")
        expect(support.locator("#c-owner")).to_have_text("You have this conversation")
        expect(row(support, cid).locator(".owner-badge")).to_have_text("You")
        assert time.monotonic() - greeted < PAUSE_SECONDS - 1, "took over too late to see the timer held"
        expect(transcript.locator('li.entry.role-system[data-event="takeover"]')).to_contain_text("Ayşe Kaya took over")
        support.locator("#reply").fill("Hi! I'm Ayşe from Lale Home. Let me check order #1042 for you.")
        support.locator("#reply").press("Enter")
        expect(transcript.locator("li.entry.role-human .text")).to_have_text(
            ["Hi! I'm Ayşe from Lale Home. Let me check order #1042 for you."])
        human = customer.locator("#sb-messages > li.sb-msg.human")
        expect(human).to_have_count(1)
        expect(human).to_contain_text("Let me check order #1042 for you.")
        expect(human.locator(".sb-who")).to_have_text("Support")
        shot(support, "04-taken-over-and-replied")
        shot(customer, "04-customer-sees-the-reply")

        # 4. The customer's markup is text on the dashboard (list and transcript).
        customer.locator("#sb-input").fill(XSS)
        customer.locator("#sb-input").press("Enter")
        expect(transcript.locator("li.entry.role-user .text").last).to_have_text(XSS)
        expect(row(support, cid).locator(".preview")).to_have_text(XSS)
        # unanswered, a person has it: waiting, and for how long
        expect(row(support, cid).locator(".flag")).to_have_text(re.compile(r"^Waiting \d+ s$"))
        assert support.evaluate("typeof window.__xss") == "undefined"
        assert support.locator("#transcript script, #transcript img, #transcript b").count() == 0
        assert support.locator("#conversations script, #conversations img, #conversations b").count() == 0

        # 5. The pause timer falls due: held, and the bot says nothing (not "noted", not the follow-up).
        expect(support.locator("#run-held")).to_be_visible(timeout=(PAUSE_SECONDS + 10) * 1000)
        expect(support.locator("#run-held")).to_contain_text("Timer held")
        expect(support.locator("#run-countdown")).to_have_text("held")
        assert time.monotonic() - greeted >= PAUSE_SECONDS - 0.5
        # the Lead card lists what happened to the lead (its events, what the rules did)
        expect(support.locator("#lead-history li", has_text="lead.created")).to_be_visible()
        assert [t for t in widget_bot_texts(customer) if FOLLOWUP in t or "Noted" in t] == []
        expect(customer.locator("#sb-messages > li.sb-msg.bot")).to_have_count(1)
        status, conv = api(deployment, "GET", f"/api/conversations/{cid}", AYSE[0])
        assert status == 200 and [e["text"] for e in conv["transcript"] if e["role"] == "bot"] == [WELCOME + " 🔎"]
        expect(transcript.locator("li.entry.role-bot")).to_have_count(1)
        shot(support, "05-timer-held-bot-silent")

        # 6. A second person sees who has it and cannot take it.
        mert = pages.open(deployment.support_url, 1440, 900)
        sign_in(mert, *MERT)
        row(mert, cid).click()
        expect(mert.locator("#c-owner")).to_have_attribute("data-owner", "person")
        expect(mert.locator("#c-owner")).to_have_text("Ayşe Kaya has this conversation")
        expect(mert.locator("#btn-takeover")).to_be_disabled()
        expect(mert.locator("#btn-takeover")).to_have_text("Taken by Ayşe Kaya")
        expect(mert.locator("#reply")).to_be_disabled()
        expect(row(mert, cid).locator(".owner-badge")).to_have_text("Ayşe Kaya")
        status, body = api(deployment, "POST", f"/api/conversations/{cid}/takeover", MERT[0])
        assert (status, body["error"]["details"]) == (409, [{"owner": "Ayşe Kaya"}])
        shot(mert, "06-second-person-sees-the-owner")

        # 7. Hand back at a chosen step: the bot continues there.
        support.locator("#release-step").select_option("offer")
        support.locator("#btn-release").click()
        expect(customer.locator("#sb-messages > li.sb-msg.bot").last).to_contain_text(OFFER)
        expect(support.locator("#c-owner")).to_have_attribute("data-owner", "bot")
        expect(support.locator("#run-step")).to_have_text("offer")
        expect(support.locator('#graph g.node.current[data-step="offer"]')).to_have_count(1)
        expect(transcript.locator("li.entry.role-bot .text").last).to_contain_text(OFFER)
        expect(mert.locator("#c-owner")).to_have_attribute("data-owner", "bot")  # live on the other dashboard too
        expect(mert.locator("#btn-takeover")).to_be_enabled()
        shot(support, "07-handed-back-at-offer")
        customer.locator("#sb-messages > li.sb-msg.bot").last.get_by_role("button", name="Thanks!").click()
        expect(customer.locator("#sb-messages > li.sb-msg.bot").last).to_have_text(BYE)
        expect(transcript.locator("li.entry.role-bot .text").last).to_have_text(BYE)
        expect(support.locator("#run-status")).to_have_text("finished")
        assert [t for t in widget_bot_texts(customer) if FOLLOWUP in t or "Noted" in t] == []
        shot(support, "08-bot-continued")
        shot(customer, "08-customer-view")

        # The list's filters see the same state.
        support.locator("#waiting-filter").check()
        expect(row(support, cid)).to_have_count(0)
        support.locator("#waiting-filter").uncheck()
        support.locator("#search").fill("no such person")
        expect(support.locator("#list-empty")).to_be_visible()
        support.locator("#search").fill("")
        expect(row(support, cid)).to_be_visible()
        assert pages.errors == [], f"JavaScript errors: {pages.errors}"
    except BaseException:
        for i, page in enumerate((support, customer)):
            page.screenshot(path=str(ARTIFACTS / f"FAILED-{deployment.name}-{i}.png"), full_page=True)
        print(deployment.output())
        raise


def test_a_parked_conversation_is_shown_with_its_error_and_retried(deployment: Deployment, pages: Pages,
                                                                   redis_url: str) -> None:
    import redis as sync_redis

    from bot.engine import events as ev
    from bot.store import codec

    support = pages.open(deployment.support_url, 1280, 800)
    client = sync_redis.Redis.from_url(redis_url)
    try:
        session = f"parked-{deployment.name}"
        req = urllib.request.Request(f"{deployment.customer_url}/chat/demo/messages", method="POST",
                                     data=json.dumps({"session": session, "text": "hello"}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            cid = json.loads(r.read())["conversation"]
        meta = f"sb:c:{{{cid}}}:meta"
        deadline = time.monotonic() + 10
        while not client.hget(meta, "~") and time.monotonic() < deadline:  # the state saved (statefields.py)
            time.sleep(0.05)  # polling the greeting's save, bounded
        # What a conversation looks like once its processing failed five times in a row.
        client.hset(meta, mapping={"parked": str(time.time()), "failures": "5",
                                   "error": "FormatError: the saved state cannot be read"})
        client.zadd("sb:parked", {cid: time.time()})
        client.rpush(f"sb:c:{{{cid}}}:inbox", codec.encode_event(ev.InboundMessage(text="is anyone there?")))

        sign_in(support, *AYSE)
        support.locator("#parked-filter").check()
        expect(row(support, cid)).to_be_visible()
        expect(row(support, cid).locator(".flag")).to_have_text("Parked")
        row(support, cid).click()
        banner = support.locator("#parked-banner")
        expect(banner).to_be_visible()
        expect(banner).to_contain_text("Parked after 5 failed attempts:")
        expect(banner).to_contain_text("FormatError: the saved state cannot be read")
        support.screenshot(path=str(ARTIFACTS / f"{deployment.name}-09-parked.png"))
        support.locator("#btn-retry").click()
        expect(banner).to_be_hidden()
        expect(support.locator("#notice")).to_contain_text("Retried")
        expect(support.locator("#transcript li.entry.role-user .text").last).to_have_text("is anyone there?")
        assert client.hget(meta, "parked") is None and client.llen(f"sb:c:{{{cid}}}:inbox") == 0
        assert pages.errors == [], f"JavaScript errors: {pages.errors}"
    except BaseException:
        support.screenshot(path=str(ARTIFACTS / f"FAILED-{deployment.name}-parked.png"), full_page=True)
        print(deployment.output())
        raise
    finally:
        client.close()
