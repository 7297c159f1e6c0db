"""E-mail tracking end to end: a rule's ``send_email`` goes to a local SMTP server (aiosmtpd) with
an open pixel and rewritten links; fetching them over real HTTP queues ``email.opened`` /
``email.link_clicked`` on the lead (once), which the automation document's scoring and trigger
act on; forged tokens are a 404 and queue nothing."""

from __future__ import annotations

import asyncio
import email
import email.policy
import logging
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.outward.email import SignedTokens, UnsubscribeTokens
from bot.outward.tracking import EmailTracking
from tests.live_app import App, running_app
from tests.outward.smtp import Inbox
from tests.waiting import wait_for

OFFER = "https://shop.example/offer?id=7&x=1"
HTML = ('<html><body><p>Hello {{ contact.name }}</p>'
        '<p><a href="https://shop.example/offer?id=7&amp;x=1">See the offer</a> '
        '<a href="mailto:sales@shop.example">write</a> <a href="tel:+905551112233">call</a> '
        '<a href="#top">top</a> <a href="{{ unsubscribe_url }}">stop these</a></p></body></html>')




def _config(port: int, **actions: Any) -> dict[str, Any]:
    return {"smtp": {"host": "127.0.0.1", "port": port, "from": "bot@shop.example", "starttls": False, "timeout": 10},
            "actions": {"email_templates": {"offer": {"subject": "Our offer", "html": HTML,
                                                      "text": f"See {OFFER}\n{{{{ unsubscribe_url }}}}"}},
                        **actions}}


DOC = {"format": "salesbot.automations/1", "id": "sales", "pipeline": "Sales",
       "rules": [{"id": "offer", "stage": "Incoming", "on": ["created"],
                  "do": {"actions": [{"do": "send_email", "template": "offer"}]}}],
       "triggers": [{"id": "clicked", "stage": "Won", "on": "email.link_clicked"}],
       "scoring": [{"on": "email.opened", "add": 1}, {"on": "email.link_clicked", "add": 5}]}


async def _new_lead(app: App) -> tuple[str, str]:
    contact = await app.api("POST", "/api/crm/contacts", 201, json={"name": "Ann", "email": "ann@example.com"})
    lead = await app.api("POST", "/api/crm/leads", 201, json={"name": "Deal", "contact_id": contact["id"]})
    return str(lead["id"]), str(contact["id"])


async def _events(app: App, lead: str, kind: str) -> list[dict[str, Any]]:
    await app.services.leads.idle()
    body = await app.api("GET", f"/api/leads/{lead}/events")
    return [e for e in body["events"] if e.get("role") == "event" and e.get("type") == kind]


def _html(msg: email.message.EmailMessage) -> str:
    part = msg.get_body(preferencelist=("html",))
    assert part is not None
    return str(part.get_content())


async def test_a_rules_email_is_tracked_and_its_opens_and_clicks_reach_the_rules(
        redis: Any, redis_url: str, smtp: tuple[int, Inbox]) -> None:
    port, inbox = smtp
    async with running_app(redis_url, **_config(port)) as app:
        await app.api("PUT", "/api/automations/sales", 201, json=DOC)
        lead, contact = await _new_lead(app)
        await wait_for(lambda: inbox.messages, what="the rule's e-mail")
        msg = inbox.messages[0]
        html = _html(msg)
        pixel = re.search(rf'<img src="({re.escape(app.url)}/t/o/[A-Za-z0-9_.-]+\.gif)" width="1" height="1"', html)
        assert pixel is not None and html.index(pixel.group(0)) < html.index("</body>")
        clicks = re.findall(rf'href="({re.escape(app.url)}/t/c/[A-Za-z0-9_.-]+)"', html)
        assert len(clicks) == 1 and "shop.example/offer" not in html  # the link goes through the redirect
        unsubscribe = re.fullmatch(r"<(.+)>", str(msg["List-Unsubscribe"]))
        assert unsubscribe is not None and f'href="{unsubscribe.group(1)}"' in html  # left as it is
        for kept in ('href="mailto:sales@shop.example"', 'href="tel:+905551112233"', 'href="#top"'):
            assert kept in html
        text = msg.get_body(preferencelist=("plain",))
        assert text is not None and OFFER in str(text.get_content())  # text parts keep their links

        # the pixel: a no-cache 1x1 GIF; fetched twice (and by a HEAD), one email.opened
        for _ in range(2):
            r = await app.http.get(pixel.group(1))
            assert r.status == 200 and r.content_type == "image/gif"
            assert (await r.read()).startswith(b"GIF89a\x01\x00\x01\x00") and "no-store" in r.headers["Cache-Control"]
        assert (await app.http.head(pixel.group(1))).status == 200

        async def opened_once() -> list[dict[str, Any]]:
            found = await _events(app, lead, "email.opened")
            return found if len(found) == 1 else []
        (opened,) = await wait_for(opened_once, what="email.opened on the lead")
        assert opened["source"] == "email" and opened["data"] == {}

        async def score(value: int) -> bool:
            card = await app.api("GET", f"/api/crm/contacts/{contact}")
            return bool(card.get("score") == value)
        await wait_for(lambda: score(1), what="the open scored once")

        # the click: 302 to the original address, email.link_clicked with it, the trigger moves the lead
        r = await app.http.get(clicks[0], allow_redirects=False)
        assert r.status == 302 and r.headers["Location"] == OFFER
        assert r.headers["Referrer-Policy"] == "no-referrer"

        async def won() -> bool:
            return bool((await app.api("GET", f"/api/crm/leads/{lead}"))["stage"] == "Won")
        await wait_for(won, what="the trigger on email.link_clicked")
        assert (await app.http.get(clicks[0], allow_redirects=False)).status == 302
        (clicked,) = await _events(app, lead, "email.link_clicked")
        assert clicked["data"] == {"url": OFFER}
        assert len(await _events(app, lead, "email.opened")) == 1  # the open a click implies is the same one
        await wait_for(lambda: score(6), what="the click scored once")


async def test_forged_damaged_and_foreign_tokens_are_404_and_queue_nothing(
        redis: Any, redis_url: str, smtp: tuple[int, Inbox], caplog: pytest.LogCaptureFixture) -> None:
    port, inbox = smtp
    async with running_app(redis_url, **_config(port)) as app:
        lead, contact = await _new_lead(app)
        outward = app.services.outward
        assert outward is not None
        real = outward.tracking.click_url(lead, contact, "m1", OFFER)
        token = real.rsplit("/", 1)[1]
        body, _, signature = token.partition(".")
        evil = EmailTracking(SignedTokens(b"not the server's secret"), app.url)
        pixel = outward.tracking.pixel_url(lead, contact, "m1")
        bad = [
            real[:-2] + ("AA" if not real.endswith("AA") else "BB"),  # tampered signature
            real[:-10],  # truncated
            f"{app.url}/t/c/{body}",  # no signature
            f"{app.url}/t/c/{body[:-4]}.{signature}",  # payload cut
            evil.click_url(lead, contact, "m1", "https://evil.example/"),  # signed with another secret
            pixel.replace("/t/o/", "/t/c/").removesuffix(".gif"),  # an open token as a click
            real.replace("/t/c/", "/t/o/") + ".gif",  # a click token as an open
            f"{app.url}/t/o/{UnsubscribeTokens(outward.tokens.secret).make(contact, 'ann@example.com')}.gif",
            f"{app.url}/t/c/{'A' * 5000}.{signature}",  # far too long
            f"{app.url}/t/c/%C3%A9%00.x", f"{app.url}/t/o/..gif",
        ]
        caplog.set_level(logging.WARNING, logger="salesbot.server.tracking")
        for url in bad:
            r = await app.http.get(url, allow_redirects=False)
            assert r.status == 404, url
            assert (await r.json())["error"]["code"] == "not_found"
        assert [r.getMessage() for r in caplog.records].count("tracking.bad_token") == len(bad)
        assert not any(token in str(r.__dict__) or body in str(r.__dict__) for r in caplog.records)
        await app.services.leads.idle()
        history = await app.api("GET", f"/api/leads/{lead}/events")
        assert not [e for e in history["events"] if str(e.get("type", "")).startswith("email.")]
        # the genuine one still works, and an unsubscribe token stays an unsubscribe token
        r = await app.http.get(real, allow_redirects=False)
        assert r.status == 302 and r.headers["Location"] == OFFER
        assert outward.tokens.read(token) is None
        assert inbox.messages == []


async def test_tracking_can_be_switched_off(redis: Any, redis_url: str, smtp: tuple[int, Inbox]) -> None:
    port, inbox = smtp
    async with running_app(redis_url, **_config(port, email_tracking=False)) as app:
        await app.api("PUT", "/api/automations/sales", 201, json=DOC)
        await _new_lead(app)
        await wait_for(lambda: inbox.messages, what="the rule's e-mail")
        html = _html(inbox.messages[0])
        assert "/t/o/" not in html and "/t/c/" not in html and 'href="https://shop.example/offer?id=7&amp;x=1"' in html
        # the links of an e-mail sent while tracking was on still work, and queue nothing
        outward = app.services.outward
        assert outward is not None and not outward.tracking.enabled
        lead, contact = await _new_lead(app)
        r = await app.http.get(outward.tracking.click_url(lead, contact, "old", OFFER), allow_redirects=False)
        assert r.status == 302 and r.headers["Location"] == OFFER
        assert (await app.http.get(outward.tracking.pixel_url(lead, contact, "old"))).status == 200
        assert (await app.http.get(f"{app.url}/t/o/abc.def.gif")).status == 404
        assert await _events(app, lead, "email.opened") == [] and await _events(app, lead, "email.link_clicked") == []


async def _status(app: App, path: str) -> int:
    async with app.http.get(path) as r:
        return r.status


async def test_a_flood_of_forged_pixels_is_404_then_429_never_5xx(redis: Any, redis_url: str) -> None:
    """A bucket of ``BURST`` that refills once in ~17 hours: however slow the machine, the first
    ``BURST`` forged tokens are 404s and every one after them a 429 (counted, not timed)."""
    burst = 30
    async with running_app(redis_url, limits={"public_per_ip": {"per_minute": 0.001, "burst": burst}}) as app:
        first = await asyncio.gather(*(_status(app, f"/t/o/forged{i}.x.gif") for i in range(burst)))
        assert first == [404] * burst
        then = await asyncio.gather(*(_status(app, f"/t/o/forged-more{i}.x.gif") for i in range(burst)))
        assert then == [429] * burst
        r = await app.http.get("/t/c/forged.x")
        assert r.status == 429 and int(r.headers["Retry-After"]) >= 1


# ---------------------------------------------------------------------- the rewriting on its own
_TRACKER = EmailTracking(UnsubscribeTokens(b"unit-secret"), "https://bots.example")


def _rewritten(html: str) -> list[str]:
    """The addresses the links of ``html`` point to after rewriting (click tokens read back)."""
    out = _TRACKER.instrument(html, lead_id="1", contact_id="2", message="m", keep=("https://bots.example/unsubscribe/",))
    assert out.count('<img src="https://bots.example/t/o/') == 1
    found = []
    for token in re.findall(r"https://bots\.example/t/c/([A-Za-z0-9_.-]+)", out):
        hit = _TRACKER.read("c", token)
        assert hit is not None and (hit.lead_id, hit.contact_id, hit.message) == ("1", "2", "m")
        found.append(hit.url)
    return found


@pytest.mark.parametrize(("html", "urls"), [
    ('<a title="x href=https://y" href="https://z/">z</a>', ["https://z/"]),  # the attribute, not text inside another
    ("<a href=https://u/v>u</a>", ["https://u/v"]),
    ("<A\nHREF = 'https://q/?a=1&amp;b=2' >q</A>", ["https://q/?a=1&b=2"]),
    ('<a href="https://a/" href="https://b/">two</a>', ["https://a/"]),  # the first one counts, as in browsers
    ('<area shape="rect" href="https://map/">', ["https://map/"]),
    ('<a data-href="https://d/">d</a> <abbr href="https://n/">n</abbr> <a href>x</a> <a>y</a>', []),
    ('<a href="javascript:alert(1)">j</a> <a href="//cdn/x">p</a> <a href="/relative">r</a>', []),
    ('<a href="https://bots.example/unsubscribe/abc">u</a> <a href="https://bots.example/t/o/x.y.gif">t</a>', []),
    ('<a href="https://bots.example/forms/abc">form</a>', ["https://bots.example/forms/abc"]),
    (f'<a href="https://long/{"a" * 2100}">l</a> <a href="https://ctl/\x07">c</a>', []),
])
def test_which_links_are_rewritten(html: str, urls: list[str]) -> None:
    assert _rewritten(html) == urls


def test_the_pixel_goes_before_the_last_body_end_or_at_the_end() -> None:
    out = _TRACKER.instrument("<body><p>x</p></BODY >tail", lead_id="1", contact_id="2", message="m")
    assert out.index("<img") < out.index("</BODY >") and out.endswith("</BODY >tail")
    assert _TRACKER.instrument("<p>x</p>", lead_id="1", contact_id="2", message="m").startswith("<p>x</p><img")


_PIECES = st.sampled_from(['<a href="https://x.example/p?q=1&amp;r=2">', "<a href='http://y.example/'>", "<a href=",
                           "<area href=https://z.example/>", '<a title="<a href=https://t/>">', "</a>", "</body>",
                           "<a href=\"mailto:a@b\">", ">", "<", '"', "'", "&amp;", "é", "\x00", " "])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_PIECES, st.text(max_size=8)), max_size=30))
def test_any_html_is_instrumented_without_error_and_every_link_reads_back(pieces: list[str]) -> None:
    html = "".join(pieces)
    for url in _rewritten(html):
        assert url.startswith(("https://", "http://")) and len(url) <= 2048
