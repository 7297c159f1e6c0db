"""The live chat widget in a real browser against a real ``salesbot serve`` (web + worker roles).

Each test runs in a fresh browser context: a new widget session, hence a new conversation with
the demo greeting bot (three buttons, other_answer, a no-answer reminder after 2 s in this copy).
Synchronisation is Playwright's auto-waiting ``expect``; nothing sleeps.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .conftest import Server

if TYPE_CHECKING:
    from playwright.sync_api import Page
try:
    from playwright.sync_api import expect
except ImportError:  # the conftest skips the tier, or fails it under SALESBOT_REQUIRE_ALL_TIERS=1
    expect = None  # type: ignore[assignment]

GREETING = "Welcome to Lale Home"
CHOICES = ["See our products", "Opening hours", "Talk to a person"]
HOURS = "Our showroom is open"
PRODUCTS = "We make sofas"
REMINDER = "Still there? Just tap a button"
NOT_UNDERSTOOD = "Sorry, I'm just a simple bot"


def messages(page: Page) -> Any:
    return page.locator("#sb-messages > li")


def bot_messages(page: Page) -> Any:
    return page.locator("#sb-messages > li.sb-msg.bot")


def user_messages(page: Page) -> Any:
    return page.locator("#sb-messages > li.sb-msg.user")


def open_chat(page: Page, query: str = "") -> None:
    page.goto("/chat/demo" + query)
    expect(page.locator("#sb-chat")).to_have_attribute("data-status", "online")


def say(page: Page, text: str) -> None:
    page.locator("#sb-input").fill(text)
    page.locator("#sb-input").press("Enter")


def click_choice(page: Page, title: str) -> None:
    """Click a button of the latest bot message (the greeting or, if it came first, the reminder)."""
    bot_messages(page).last.locator(".sb-buttons").get_by_role("button", name=title, exact=True).click()


def settled(page: Page) -> None:
    """Every message the customer sent has been echoed by the server (none left pending), and
    the typing dots went away with the bot's reply."""
    expect(page.locator("#sb-messages > li.pending")).to_have_count(0)
    expect(page.locator("#sb-typing")).to_be_hidden()


def shown(page: Page) -> list[dict[str, Any]]:
    """The transcript as the widget shows it: number, role and the message's own text."""
    return page.evaluate("""() => Array.from(document.querySelectorAll('#sb-messages > li')).map(li => ({
        n: li.hasAttribute('data-n') ? Number(li.getAttribute('data-n')) : null,
        role: ['user', 'bot', 'human'].find(r => li.classList.contains(r)) || null,
        text: Array.from(li.childNodes).filter(c => c.nodeType === Node.TEXT_NODE).map(c => c.textContent).join(''),
        buttons: Array.from(li.querySelectorAll(':scope > .sb-buttons > button')).map(b => b.textContent),
    }))""")


def snap(page: Page, artifacts: Path, name: str) -> None:
    page.screenshot(path=str(artifacts / f"{name}.png"))


def greet(page: Page) -> None:
    say(page, "hi")
    expect(bot_messages(page).first).to_contain_text(GREETING)
    expect(bot_messages(page).first.locator(".sb-buttons button")).to_have_text(CHOICES)


# a ---------------------------------------------------------------------------------------------


def test_greeting_buttons_and_a_click(page: Page, artifacts: Path) -> None:
    open_chat(page)
    expect(page.locator("#sb-input")).to_be_visible()
    snap(page, artifacts, "01-empty")
    greet(page)
    expect(user_messages(page).first).to_have_text("hi")
    snap(page, artifacts, "02-greeting")
    click_choice(page, "Opening hours")
    expect(bot_messages(page).last).to_contain_text(HOURS)
    expect(user_messages(page)).to_have_text(["hi", "Opening hours"])
    settled(page)
    # The answered question's buttons can no longer be clicked.
    for button in page.locator(".sb-buttons button").all():
        expect(button).to_be_disabled()
    snap(page, artifacts, "03-clicked")


# b ---------------------------------------------------------------------------------------------


def test_reload_shows_the_whole_history_with_old_buttons_disabled(page: Page, artifacts: Path) -> None:
    open_chat(page)
    greet(page)
    click_choice(page, "See our products")
    expect(bot_messages(page).last).to_contain_text(PRODUCTS)
    settled(page)
    before = shown(page)
    assert [m["role"] for m in before][:2] == ["user", "bot"]
    assert before[0]["text"] == "hi" and GREETING in before[1]["text"]
    assert before[-2:][0]["role"] == "user" and before[-2]["text"] == "See our products"
    assert PRODUCTS in before[-1]["text"]

    page.reload()
    expect(page.locator("#sb-chat")).to_have_attribute("data-status", "online")
    expect(messages(page)).to_have_count(len(before))
    after = shown(page)
    assert after == before  # same messages, same order, same numbers, same buttons
    assert [m["n"] for m in after] == sorted({m["n"] for m in after})
    buttons = page.locator(".sb-buttons button")
    expect(buttons.first).to_be_visible()
    assert buttons.count() >= len(CHOICES)
    for button in buttons.all():
        expect(button).to_be_disabled()
    snap(page, artifacts, "04-reloaded")


# c ---------------------------------------------------------------------------------------------


def test_no_answer_reminder_arrives_without_user_action(page: Page, artifacts: Path) -> None:
    open_chat(page)
    greet(page)
    started = time.monotonic()
    reminder = bot_messages(page).nth(1)
    expect(reminder).to_contain_text(REMINDER, timeout=10_000)
    assert time.monotonic() - started > 1.0, "the reminder came before its 2 s timer could fire"
    expect(reminder.locator(".sb-buttons button")).to_have_text(CHOICES)
    for button in reminder.locator(".sb-buttons button").all():
        expect(button).to_be_enabled()
    for button in bot_messages(page).first.locator(".sb-buttons button").all():
        expect(button).to_be_disabled()
    expect(user_messages(page)).to_have_count(1)
    snap(page, artifacts, "05-reminder")


# d ---------------------------------------------------------------------------------------------

XSS = '<script>window.__xss=1</script> <img src=x onerror="window.__xss=2"> <b>bold</b>'


def test_markup_from_the_customer_is_shown_as_text(page: Page, artifacts: Path) -> None:
    open_chat(page)
    say(page, XSS)
    expect(user_messages(page).first).to_have_text(XSS)
    expect(bot_messages(page).first).to_contain_text(GREETING)
    settled(page)

    def check() -> None:
        assert page.evaluate("typeof window.__xss") == "undefined"
        # textContent, not innerHTML: no element was made of the text (the page's CSP would also
        # stop inline handlers, so the absence of elements is what proves the widget escapes).
        assert page.locator("#sb-messages script, #sb-messages img, #sb-messages b").count() == 0
        assert shown(page)[0]["text"] == XSS

    check()
    snap(page, artifacts, "06-markup-as-text")
    page.reload()  # the history replayed from the server takes the same path
    expect(user_messages(page).first).to_have_text(XSS)
    expect(bot_messages(page).first).to_contain_text(GREETING)
    check()


# e ---------------------------------------------------------------------------------------------


def test_long_poll_fallback(page: Page, artifacts: Path) -> None:
    sockets: list[str] = []
    polls: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    urls: list[str] = []
    page.on("request", lambda r: urls.append(r.url))
    page.on("request", lambda r: polls.append(r.url) if re.search(r"/chat/demo/messages\?.*wait=", r.url) else None)
    open_chat(page, "?transport=poll")
    assert page.evaluate("salesbotChat.transport()") == "poll"
    greet(page)
    click_choice(page, "See our products")
    expect(bot_messages(page).last).to_contain_text(PRODUCTS)
    expect(user_messages(page)).to_have_text(["hi", "See our products"])
    settled(page)
    snap(page, artifacts, "07-long-poll")
    assert sockets == [], "the poll transport opened a WebSocket"
    assert polls, "no long-poll request was made"
    session = page.evaluate("salesbotChat.session")  # sent in X-Salesbot-Session, never in a URL
    assert not [u for u in urls if session in u], urls


# f ---------------------------------------------------------------------------------------------


def test_websocket_resume_loses_and_duplicates_nothing(page: Page, salesbot_server: Server,
                                                        artifacts: Path) -> None:
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    open_chat(page)
    session = page.evaluate("salesbotChat.session")
    greet(page)
    settled(page)
    last = page.evaluate("salesbotChat.last()")
    assert last >= 2

    # 1. A message sent over the socket, which drops before the server's ack: the widget resends it
    #    by POST (same client_msg_id) and resumes on a new socket from the last number it saw.
    page.evaluate("""() => {
        document.querySelector('#sb-input').value = 'tell me a joke';
        document.querySelector('#sb-send').click();
        salesbotChat.reconnect();
    }""")
    expect(page.locator("#sb-chat")).to_have_attribute("data-status", "online")
    expect(bot_messages(page).last).to_contain_text(NOT_UNDERSTOOD)
    settled(page)
    assert len(sockets) == 2 and sockets[1].endswith(f"after={last}"), sockets
    assert [m["text"] for m in shown(page) if m["role"] == "user"] == ["hi", "tell me a joke"]

    # 2. Offline: the click goes by POST; the reply is stored while no socket is open ...
    page.evaluate("salesbotChat.disconnect()")
    expect(page.locator("#sb-chat")).to_have_attribute("data-status", "offline")
    seen = page.evaluate("salesbotChat.last()")
    click_choice(page, "Opening hours")
    deadline = time.monotonic() + 10
    stored: list[dict[str, Any]] = []
    while not any(HOURS in m["text"] for m in stored) and time.monotonic() < deadline:
        stored += salesbot_server.history(session, after=max([seen] + [m["n"] for m in stored]), wait=5)
    assert any(HOURS in m["text"] for m in stored), stored
    expect(bot_messages(page).filter(has_text=HOURS)).to_have_count(0)  # not shown yet: offline
    snap(page, artifacts, "08-offline")

    # ... and arrives once the socket resumes.
    page.evaluate("salesbotChat.connect()")
    expect(page.locator("#sb-chat")).to_have_attribute("data-status", "online")
    expect(bot_messages(page).last).to_contain_text(HOURS)
    settled(page)
    assert len(sockets) == 3 and sockets[2].endswith(f"after={seen}"), sockets

    assert not [u for u in sockets if session in u], sockets  # in a subprotocol, not the URL

    # Nothing lost, nothing twice: the page shows exactly the server's transcript, in order.
    server = salesbot_server.history(session)
    page_view = shown(page)
    assert [(m["n"], m["role"]) for m in page_view] == [(m["n"], m["role"]) for m in server]
    assert [m["text"] for m in page_view] == [m["text"] for m in server]
    assert [m["text"] for m in server if m["role"] == "user"] == ["hi", "tell me a joke", "Opening hours"]
    expect(bot_messages(page).filter(has_text=HOURS)).to_have_count(1)
    snap(page, artifacts, "09-resumed")
