"""Which lead events reach the lead's conversation (a ``CrmEvent`` turn), over real HTTP and Redis:
a form sent does; the trackers' page views do not (a flow could only trace them, and a known
visitor's every page would cost the conversation a turn)."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest

from bot.store import dedupe
from bot.store import keys as k
from tests.live_app import App, running_app
from tests.waiting import wait_for

FLOW: dict[str, Any] = {
    "form": {"type": "action", "actions": [{"do": "create_form", "form": "individual", "fields": ["name"]}],
             "next": "link", "failed": "failed"},
    "link": {"type": "message", "text": "Please fill in {{ vars.form_url }}"},
    "failed": {"type": "message", "text": "failed"},
}


async def _lead_event(app: App, lead: str, kind: str) -> dict[str, Any] | None:
    await app.services.leads.idle()
    events = (await app.api("GET", f"/api/leads/{lead}/events"))["events"]
    return next((e for e in events if e.get("role") == "event" and e.get("type") == kind), None)


async def test_a_forms_event_reaches_the_conversation_and_a_page_view_does_not(
        redis: Any, redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with running_app(redis_url) as app:
        await app.put_flow(FLOW, "form")
        session = "forwarding-visitor-1"
        cid, texts = await app.say(session, "hi")
        found = re.search(r"https?://\S+/forms/[A-Za-z0-9_-]+", texts[0])
        assert found is not None
        lead = str((await app.conversation(cid))["lead_id"])
        before = dedupe.records(await redis.hgetall(k.ConversationKey(cid).meta))[0]

        r = await app.http.post("/chat/demo/visits", json={"session": session, "url": "https://shop.example/"})
        assert r.status == 202 and (await r.json())["events"] == ["site.visit"]
        visit = await wait_for(lambda: _lead_event(app, lead, "site.visit"), what="site.visit on the lead")
        assert await dedupe.seen_at(redis, cid, f"lead-event:{lead}:{visit['id']}") is None
        # no turn of the conversation
        assert dedupe.records(await redis.hgetall(k.ConversationKey(cid).meta))[0] == before

        r = await app.http.post(found.group(0), data={"name": "Ann Lee"})
        assert r.status == 200, await r.text()
        form = await wait_for(lambda: _lead_event(app, lead, "form.submitted"), what="form.submitted on the lead")
        assert form["source"] == "form"
        forwarded = f"lead-event:{lead}:{form['id']}"
        await wait_for(lambda: dedupe.seen_at(redis, cid, forwarded), what="the form's event forwarded")
    traced = [getattr(r, "d_type", None) for r in caplog.records if r.getMessage() == "crm.event"]
    assert traced == ["form.submitted"]  # the flow's turn saw the form, never the page view
