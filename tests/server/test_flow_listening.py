"""Lead events a flow listens to reach its conversation although their source is one the lead loop
keeps back (here the embedded CRM's own changes): a pause on a condition is re-checked when a
person tags the lead, over real HTTP and Redis; without a flow that listens, nothing is forwarded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from bot.runtime.interest import FlowInterest
from tests.engine.helpers import make_flow
from tests.live_app import App, running_app
from tests.waiting import wait_for

FLOW: dict[str, Any] = {
    "format": "salesbot.flow/1", "id": "demo", "start": "hello",
    "steps": {
        "hello": {"type": "message", "text": "hello", "next": "wait"},
        "wait": {"type": "pause", "until": [
            {"on": "condition", "if": {"field": "lead.tags", "op": "has", "value": "cart"}, "next": "tagged"},
            {"on": "timer", "after": "1d", "next": "late"}]},
        "tagged": {"type": "message", "text": "tagged"},
        "late": {"type": "message", "text": "late"},
    },
}


async def _texts(app: App, cid: str) -> list[str]:
    return [m["text"] for m in (await app.conversation(cid))["transcript"] if m["role"] == "bot"]


async def test_a_crm_change_reaches_a_conversation_whose_pause_waits_on_a_condition(
        redis: Redis, redis_url: str, tmp_path: Path) -> None:
    (tmp_path / "demo.json").write_text(json.dumps(FLOW))
    async with running_app(redis_url, flows_dir=tmp_path) as app:
        cid, texts = await app.say("listening-visitor-1", "hi")
        assert texts == ["hello"]
        lead = (await app.conversation(cid))["lead_id"]
        await app.api("PATCH", f"/api/crm/leads/{lead}", json={"tags": ["other"]})
        await app.services.leads.idle()
        assert (await app.conversation(cid))["run"]["step"] == "wait"
        await app.api("PATCH", f"/api/crm/leads/{lead}", json={"tags": ["other", "cart"]})

        async def tagged() -> bool:
            return (await _texts(app, cid))[-1] == "tagged"

        await wait_for(tagged, what="the condition re-checked at the CRM's lead.tag_added")


def test_only_the_types_flows_listen_to_are_wanted_and_never_the_chats_own() -> None:
    goal = make_flow({"a": {"type": "message", "text": "a"}, "b": {"type": "message", "text": "b"}})
    flows: list[Any] = []
    interest = FlowInterest(lambda: flows)
    assert not interest.wants("crm", "lead.tag_added")
    waits = make_flow({"w": {"type": "pause", "until": [{"on": "event", "event": "email.opened", "next": "x"}]},
                       "x": {"type": "message", "text": "x"}}, id="waits")
    flows += [goal, waits]
    assert interest.wants("email", "email.opened") and not interest.wants("email", "email.link_clicked")
    assert not interest.wants("chat", "email.opened")
    flows.append(make_flow({"w": {"type": "pause", "until": [
        {"on": "condition", "if": {"field": "lead.price", "op": "gt", "value": 1}, "next": "x"}]},
        "x": {"type": "message", "text": "x"}}, id="cond"))
    assert interest.wants("crm", "lead.tag_added") and interest.wants("email", "email.link_clicked")
    assert not interest.wants("site", "site.visit")


def test_whether_flows_hear_chat_events_is_worked_out_once_per_loaded_set() -> None:
    flows: list[Any] = [make_flow({"a": {"type": "message", "text": "a"}})]
    listed = 0

    def loaded() -> list[Any]:
        nonlocal listed
        listed += 1
        return flows

    interest = FlowInterest(loaded, lambda: len(flows))
    assert not interest.chat() and not interest.chat() and listed == 1  # asked per message, listed once
    flows.append(make_flow({"w": {"type": "pause", "until": [{"on": "event", "event": "chat.message", "next": "x"}]},
                            "x": {"type": "message", "text": "x"}}, id="reply"))
    assert interest.chat() and interest.hears("chat.message") and listed == 2
    assert not interest.wants("chat", "chat.message")  # never back to the conversation itself
